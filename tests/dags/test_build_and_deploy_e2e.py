"""build_and_deploy on the real stack through the REST API: a registered base and its LoRA adapter are built into
Triton's repository, gated and promoted, and answer streamed prompts; a candidate failing its gate is rolled back
while the served version keeps answering; versions that do not belong together are refused before any build."""

from __future__ import annotations

import pytest

from stack.airflow_api import AirflowClient
from stack.components import mlflow_url
from tasks.common import platform_db, registry
from tasks.serving import build
from tasks.serving.client import generate
from tasks.serving.history import recent
from tests.stack.harness import RunningStack
from tests.tasks.serving import models

pytestmark = pytest.mark.slow
SERVED = "e2e-llm"


@pytest.fixture(scope="module")
def deployable(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory):
    """A base and an adapter registered in the stack's MLflow, as fine-tuning registers them."""
    from mlflow.tracking import MlflowClient

    work = tmp_path_factory.mktemp("deploy-e2e")
    base_dir = models.tiny_llama(work / "base")
    adapter_dir = models.lora_adapter(base_dir, work / "adapter")
    uri = mlflow_url(running_stack.cfg)
    mlflow = MlflowClient(uri)
    experiment = mlflow.get_experiment_by_name("deploy-e2e") or mlflow.get_experiment(
        mlflow.create_experiment("deploy-e2e"))
    run = mlflow.create_run(experiment.experiment_id)
    base = registry.register(uri, "deploy-e2e", run.info.run_id, base_dir, "base-hf", {})
    adapter = registry.register(uri, "deploy-e2e-lora", run.info.run_id, adapter_dir, "adapter-peft",
                                {"base_version": base.version})
    mlflow.set_terminated(run.info.run_id)
    client = AirflowClient.for_stack(running_stack.cfg)
    client.wait_for_dag("build_and_deploy")
    conf = {"model": f"models:/deploy-e2e/{base.version}", "adapters": [f"models:/deploy-e2e-lora/{adapter.version}"],
            "served_name": SERVED}
    yield client, conf, base_dir, adapter_dir
    client._call("PATCH", "/dags/build_and_deploy", json={"is_paused": True})


def history(running_stack: RunningStack) -> list[dict]:
    from stack import postgres

    with platform_db.connect(postgres.dsn(running_stack.cfg, "platform")) as conn:
        return recent(conn, SERVED)


def test_a_registered_model_and_adapter_are_deployed_and_answer_streamed_prompts(deployable, running_stack):
    client, conf, base_dir, adapter_dir = deployable
    run_id = client.trigger("build_and_deploy", conf)
    assert client.wait("build_and_deploy", run_id, timeout=900) == "success", client.task_states("build_and_deploy",
                                                                                                 run_id)
    grpc = f"127.0.0.1:{running_stack.cfg.triton_grpc_port}"
    reference = build.reference_generation(base_dir, {"deploy-e2e-lora": adapter_dir})
    answer = generate(grpc, SERVED, reference["prompt"], max_tokens=reference["max_tokens"])
    assert answer.text == reference["base"] and len(answer.token_times) > 1
    tuned = generate(grpc, SERVED, reference["prompt"], max_tokens=reference["max_tokens"], lora_name="deploy-e2e-lora")
    assert tuned.text == reference["adapters"]["deploy-e2e-lora"] != reference["base"]
    latest = history(running_stack)[0]
    assert latest["action"] == "promoted" and latest["registered_version"] == conf["model"].rsplit("/", 1)[1]
    assert set(latest["gates"]["latency"]) == {"1", "4", "8"} and latest["gates"]["smoke"] == "passed"
    from mlflow.tracking import MlflowClient

    champion = MlflowClient(mlflow_url(running_stack.cfg)).get_model_version_by_alias("deploy-e2e", "champion")
    assert champion.version == latest["registered_version"]
    assert "build: e2e-llm version" in client.task_log("build_and_deploy", run_id, "build")


def test_a_candidate_failing_its_gate_is_rolled_back_and_the_served_version_keeps_answering(deployable,
                                                                                             running_stack):
    client, conf, base_dir, _ = deployable
    grpc = f"127.0.0.1:{running_stack.cfg.triton_grpc_port}"
    before = generate(grpc, SERVED, "def ", max_tokens=8).text
    served_before = history(running_stack)[0]["to_version"]
    run_id = client.trigger("build_and_deploy", {**conf, "min_tokens_per_s": 1e9})
    assert client.wait("build_and_deploy", run_id, timeout=900) == "failed"
    states = client.task_states("build_and_deploy", run_id)
    assert states["gates"] == "failed" and states["promote"] == "upstream_failed"
    latest = history(running_stack)[0]
    assert latest["action"] == "rolled_back" and "min_tokens_per_s" in latest["reason"]
    assert generate(grpc, SERVED, "def ", max_tokens=8).text == before
    assert f"versions: [{served_before}]" in (running_stack.cfg.home / "triton" / "models" / SERVED /
                                              "config.pbtxt").read_text()


@pytest.mark.parametrize(("change", "message"), [
    ({"model": "models:/no-such-model/1"}, "no registered model version no-such-model/1"),
    ({"adapters": ["models:/deploy-e2e-lora/99"]}, "deploy-e2e-lora/99"),
])
def test_versions_that_do_not_exist_are_refused_before_any_build(deployable, change, message):
    client, conf, _, _ = deployable
    run_id = client.trigger("build_and_deploy", {**conf, **change})
    assert client.wait("build_and_deploy", run_id, timeout=300) == "failed"
    states = client.task_states("build_and_deploy", run_id)
    assert states["validate"] == "failed" and states["build"] == "upstream_failed"
    assert message in client.task_log("build_and_deploy", run_id, "validate")
