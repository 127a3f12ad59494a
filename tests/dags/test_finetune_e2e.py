"""finetune on the real stack through the REST API: a LoRA fine-tune of a pre-trained tiny checkpoint exports and
registers the adapter and the merged model in MLflow with their lineage; bad Params and bases are refused first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stack import lakefs
from stack.airflow_api import AirflowClient
from stack.components import mlflow_url
from tasks.common.versioned_data import Lineage, VersionedRepo
from tests.stack.harness import REPO, RunningStack
from tests.tasks.training.corpus import publish_tokenized

pytestmark = pytest.mark.slow
REPO_NAME = "finetune-e2e"
SMALL = {"steps": 6, "micro_batch_size": 4, "global_batch_size": 8, "checkpoint_interval": 6, "eval_interval": 6}


@pytest.fixture(scope="module")
def base(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory):
    """A pre-trained tiny checkpoint (through the pretrain DAG) and the sample SFT set on the same repository."""
    work = tmp_path_factory.mktemp("finetune-e2e")
    endpoint = lakefs.endpoint(running_stack.cfg)
    publish_tokenized(endpoint, REPO_NAME, work / "tokenized")
    subprocess.run([sys.executable, "-m", "tasks.training.sft", "sample", "--out", str(work / "sft"), "--count", "120"],
                   cwd=REPO, check=True, capture_output=True)
    versioned = VersionedRepo(endpoint, REPO_NAME)
    versioned.put_object("main", "sft/sample.jsonl", (work / "sft" / "sample.jsonl").read_bytes())
    versioned.commit("main", "sample SFT set", Lineage("tests", "finetune-e2e", "land_sft"))
    client = AirflowClient.for_stack(running_stack.cfg)
    for dag_id in ("pretrain", "finetune"):
        client.wait_for_dag(dag_id)
    run_id = client.trigger("pretrain", {"repo": REPO_NAME, "experiment": "ft-e2e-base", **SMALL})
    assert client.wait("pretrain", run_id, timeout=900) == "success", client.task_states("pretrain", run_id)
    events = client._call("GET", "/assets/events", params={"source_dag_id": "pretrain", "source_run_id": run_id})
    yield client, events["asset_events"][0]["extra"]["checkpoint_uri"]
    for dag_id in ("pretrain", "finetune"):  # paused again: no Asset event of another test starts a default run
        client._call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})


def test_lora_adapter_and_merged_model_are_registered_with_lineage(base, running_stack: RunningStack):
    client, checkpoint = base
    run_id = client.trigger("finetune", {"base": checkpoint, "repo": REPO_NAME, "lora_rank": 4,
                                         "experiment": "ft-e2e", **SMALL})
    assert client.wait("finetune", run_id, timeout=900) == "success", client.task_states("finetune", run_id)
    events = client._call("GET", "/assets/events", params={"source_dag_id": "finetune", "source_run_id": run_id})
    extra = events["asset_events"][0]["extra"]
    registered = extra["registered"]
    assert {"base", "adapter", "merged"} <= set(registered)

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(mlflow_url(running_stack.cfg))
    adapter = mlflow.get_model_version(registered["adapter"]["name"], registered["adapter"]["version"])
    merged = mlflow.get_model_version(registered["merged"]["name"], registered["merged"]["version"])
    for version in (adapter, merged):
        assert version.tags["base_version"] == registered["base"]["version"]
        assert version.tags["pretrain_commit"] == extra["pretrain_commit"]
        assert version.tags["sft_commit"] == extra["sft_commit"]
        assert float(version.tags["valid_loss"]) > 0
        assert version.run_id == extra["mlflow_run_id"]
    assert adapter.tags["method"] == "lora" and merged.tags["method"] == "lora-merged"
    assert mlflow.get_model_version_by_alias(merged.name, "candidate").version == merged.version
    assert mlflow.get_model_version_by_alias(adapter.name, "candidate").version == adapter.version
    base_version = mlflow.get_model_version(registered["base"]["name"], registered["base"]["version"])
    assert base_version.tags["checkpoint_uri"] == checkpoint
    files = {f.path for f in mlflow.list_artifacts(extra["mlflow_run_id"], "adapter-peft")}
    assert files == {"adapter-peft/adapter_config.json", "adapter-peft/adapter_model.safetensors"}
    run = mlflow.get_run(extra["mlflow_run_id"])
    assert {"valid_loss_before", "valid_loss_after"} <= set(run.data.metrics)


def test_bad_params_are_refused_at_trigger_and_a_bad_base_before_training(base):
    client, _ = base
    for conf in ({"lora_rank": 0}, {"lora_targets": ["q_proj"]}, {"method": "qlora"}):
        with pytest.raises(RuntimeError, match="-> 400"):
            client.trigger("finetune", {"repo": REPO_NAME, **conf})
    run_id = client.trigger("finetune", {"base": "/nonexistent/checkpoints", "repo": REPO_NAME, **SMALL})
    assert client.wait("finetune", run_id, timeout=600) == "failed"
    states = client.task_states("finetune", run_id)
    assert states["validate"] == "failed" and states["train"] == "upstream_failed", states
    assert "base: /nonexistent/checkpoints is neither a committed checkpoint" in \
        client.task_log("finetune", run_id, "validate")
