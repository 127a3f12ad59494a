"""pretrain on the real stack through the REST API: bad Params stop before training; kill -9 of the training
process, then Airflow's own retry, ends at the same loss as an uninterrupted run; the Asset and MLflow carry lineage."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from stack import lakefs
from stack.airflow_api import AirflowClient
from stack.components import mlflow_url
from tests.stack.harness import RunningStack, step_pids
from tests.tasks.training.corpus import publish_tokenized

pytestmark = pytest.mark.slow
DAG = "pretrain"
REPO_NAME = "pretrain-e2e"
SMALL = {"repo": REPO_NAME, "steps": 24, "micro_batch_size": 4, "global_batch_size": 8, "checkpoint_interval": 8,
         "eval_interval": 12, "warmup_steps": 4}


@pytest.fixture(scope="module")
def client(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory):
    publish_tokenized(lakefs.endpoint(running_stack.cfg), REPO_NAME, tmp_path_factory.mktemp("tokenized"))
    client = AirflowClient.for_stack(running_stack.cfg)
    client.wait_for_dag(DAG)
    yield client
    # paused again, so a curated-corpus event of another test does not start a default-sized training
    client._call("PATCH", f"/dags/{DAG}", json={"is_paused": True})


def run(client: AirflowClient, conf: dict) -> tuple[str, str, dict]:
    run_id = client.trigger(DAG, conf)
    return run_id, client.wait(DAG, run_id, timeout=900), client.task_states(DAG, run_id)


def published(client: AirflowClient, run_id: str) -> dict:
    events = client._call("GET", "/assets/events", params={"source_dag_id": DAG, "source_run_id": run_id})
    assert len(events["asset_events"]) == 1
    return events["asset_events"][0]["extra"]


def test_bad_params_fail_the_first_task_naming_the_param(client: AirflowClient):
    run_id, state, tasks = run(client, {**SMALL, "tensor_parallel": 3, "experiment": "e2e-bad"})
    assert state == "failed" and tasks["validate"] == "failed" and tasks["train"] == "upstream_failed", tasks
    assert "tensor_parallel: 4 attention heads of preset tiny are not divisible by 3" in \
        client.task_log(DAG, run_id, "validate")


def test_kill_9_then_airflow_retry_matches_an_uninterrupted_run(client: AirflowClient, running_stack: RunningStack):
    whole_id, state, tasks = run(client, {**SMALL, "experiment": "e2e-whole"})
    assert state == "success", tasks
    whole = published(client, whole_id)

    killed_id = client.trigger(DAG, {**SMALL, "experiment": "e2e-killed"})
    experiment = running_stack.cfg.home / "artifacts" / "checkpoints" / "e2e-killed"  # /<data commit>/step-...
    deadline = time.monotonic() + 600
    while not list(experiment.glob("*/step-00000008/manifest.json")):
        assert time.monotonic() < deadline and client.run_state(DAG, killed_id) not in ("success", "failed")
        time.sleep(0.2)
    victims = step_pids("tasks.training.pretrain", "checkpoints/e2e-killed")
    assert victims, "no training process to kill"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    state = client.wait(DAG, killed_id, timeout=900)
    assert state == "success", client.task_states(DAG, killed_id)
    first_try = client.task_log(DAG, killed_id, "train", 1)
    assert "killed by signal 9" in first_try
    second_try = client.task_log(DAG, killed_id, "train", 2)
    assert "pretrain: resumed from" in second_try
    killed = published(client, killed_id)

    assert killed["step"] == whole["step"] == 24
    assert killed["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert killed["data_commit"] == whole["data_commit"]
    assert Path(killed["checkpoint_uri"], "manifest.json").is_file()

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(mlflow_url(running_stack.cfg))
    tracked = mlflow.get_run(killed["mlflow_run_id"])
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["lakefs.commit"] == killed["data_commit"]
    assert tracked.data.tags["llmops.run_key"] == f"{DAG}/{killed_id}"
    steps = {m.step for m in mlflow.get_metric_history(tracked.info.run_id, "loss")}
    assert steps == set(range(1, 25)), "one MLflow run holds both tries' steps"
    assert "valid_perplexity" in tracked.data.metrics
