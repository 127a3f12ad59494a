"""The Kubernetes launcher's manifests, checked without a cluster: what would be submitted is rendered here."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from plugins.launchers import kubernetes as launcher_module
from plugins.launchers.base import REPO_ROOT, StepFailed, platform_config
from plugins.launchers.kubernetes import (
    KubernetesLauncher,
    build_pod_operator,
    render_indexed_job,
    render_pod,
    resource_name,
    run_key,
)
from plugins.launchers.step import Resources, Step

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LOG = logging.getLogger("test")


@pytest.fixture(scope="module")
def config() -> dict:
    return platform_config()["kubernetes"]


def context(run_id: str = "manual__2025-01-01T00:00:00+00:00", task_id: str = "pretrain") -> dict:
    ti = SimpleNamespace(dag_id="pretrain", task_id=task_id, map_index=-1, try_number=1, run_id=run_id)
    return {"ti": ti, "run_id": run_id, "dag": SimpleNamespace(dag_id="pretrain")}


def serialise(obj) -> dict:
    return ApiClient().sanitize_for_serialization(obj)


def round_trip(obj, model: str):
    """What the API server would hand back, parsed into the client's model class again."""
    payload = SimpleNamespace(data=json.dumps(serialise(obj)))
    return ApiClient().deserialize(payload, model)


def without_empties(value):
    if isinstance(value, dict):
        return {k: without_empties(v) for k, v in value.items() if v not in ([], {})}
    if isinstance(value, list):
        return [without_empties(v) for v in value]
    return value


def cpu_step(**overrides) -> Step:
    fields = dict(
        name="curate",
        module="tasks.curation.run",
        args=("--branch", "run-1"),
        resources=Resources(cpu="4", memory="8Gi"),
        env={"LAKEFS_REPO": "corpus"},
        secrets={"LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": "s3cr3t-value"},
    )
    return Step(**{**fields, **overrides})


def gpu_step(nodes: int = 1) -> Step:
    return Step(
        name="Pretrain GPT-2 (small)",
        module="tasks.training.pretrain",
        args=("--iters", "100"),
        resources=Resources(cpu="32", memory="256Gi", gpus=8, nodes=nodes, processes_per_node=8),
        image="registry.example/llmops-trainer:1.2",
    )


def container(pod_dict: dict) -> dict:
    (base,) = pod_dict["spec"]["containers"]
    assert base["name"] == "base"
    return base


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step_name",
    ["curate", "Pretrain GPT-2 (small)", "123-numbers-first", "___", "x" * 200, "ünïcode step"],
)
def test_resource_names_are_dns_labels_with_room_for_the_pod_index(step_name):
    name = resource_name(step_name, "run-1")
    assert DNS_1123_LABEL.match(name)
    assert name[0].isalpha()  # Services need DNS-1035: a letter first
    assert len(f"{name}-999") <= 63


def test_resource_name_is_stable_per_run_and_distinct_across_runs():
    assert resource_name("Pretrain GPT-2", "run-1") == resource_name("Pretrain GPT-2", "run-1")
    assert resource_name("Pretrain GPT-2", "run-1") != resource_name("Pretrain GPT-2", "run-2")
    assert resource_name("Pretrain GPT-2", "run-1").startswith("pretrain-gpt-2-")


def test_run_key_separates_tasks_of_one_run_but_not_tries():
    first_try, retry = context(), context()
    retry["ti"].try_number = 2
    assert run_key(first_try) == run_key(retry)
    assert run_key(context(task_id="finetune")) != run_key(first_try)


# --- the pod template file --------------------------------------------------------------------


def test_pod_template_file_is_a_v1_pod_with_a_base_container(config):
    raw = yaml.safe_load((REPO_ROOT / config["pod_template"]).read_text())
    pod = round_trip(raw, "V1Pod")
    assert raw["kind"] == "Pod" and raw["apiVersion"] == "v1"
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.run_as_user == 10001
    assert [c.name for c in pod.spec.containers] == ["base"]


# --- single-node pod --------------------------------------------------------------------------


def test_cpu_pod_runs_python_module_with_default_image_and_no_gpu_scheduling(config):
    pod = render_pod(cpu_step(), config)
    data = serialise(pod)
    base = container(data)

    assert isinstance(round_trip(pod, "V1Pod"), k8s.V1Pod)
    assert data["metadata"]["namespace"] == "llmops"
    assert data["spec"]["restartPolicy"] == "Never"
    assert data["spec"]["serviceAccountName"] == "llmops-step"
    assert base["image"] == "ghcr.io/llmops-platform/step:latest"
    assert base["command"] == ["python", "-m", "tasks.curation.run", "--branch", "run-1"]
    assert "args" not in base
    assert {"name": "LAKEFS_REPO", "value": "corpus"} in base["env"]
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in base["env"]  # kept from the template
    assert {
        "name": "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llmops-step-credentials", "key": "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"}},
    } in base["env"]
    assert "s3cr3t-value" not in json.dumps(data), "a secret value leaked into the pod spec"
    assert base["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert "nodeSelector" not in data["spec"]
    assert "tolerations" not in data["spec"]


def test_pod_mounts_memory_backed_shm_and_the_data_pvc(config):
    data = serialise(render_pod(cpu_step(), config))
    volumes = {v["name"]: v for v in data["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(data)["volumeMounts"]}

    assert mounts == {"/dev/shm": "dshm", "/data": "data"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "llmops-data"}


def test_gpu_pod_asks_for_gpus_and_lands_on_gpu_nodes(config):
    data = serialise(render_pod(gpu_step(), config))
    base = container(data)

    assert base["image"] == "registry.example/llmops-trainer:1.2"
    assert base["command"] == [
        "torchrun", "--nproc-per-node=8", "-m", "tasks.training.pretrain", "--iters", "100",
    ]
    for kind in ("requests", "limits"):
        assert base["resources"][kind] == {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"}
    assert data["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert data["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_rendering_does_not_leak_between_steps(config):
    render_pod(gpu_step(), config)
    data = serialise(render_pod(cpu_step(), config))
    assert len(data["spec"]["volumes"]) == 2
    assert "nvidia.com/gpu" not in container(data)["resources"]["limits"]


def test_pod_operator_builds_the_rendered_pod(config):
    step = cpu_step()
    ctx = context()
    operator = build_pod_operator(step, config, run_key(ctx))
    request = serialise(operator.build_pod_request_obj(ctx, dry_run=True))
    expected = serialise(render_pod(step, config))
    name = resource_name(step.name, run_key(ctx))

    assert operator.get_logs is True
    assert operator.on_finish_action.value == "delete_pod"
    assert operator.startup_timeout_seconds == 600
    assert request["metadata"]["name"].startswith(f"{name}-")
    assert len(request["metadata"]["name"]) <= 63
    assert request["metadata"]["namespace"] == "llmops"
    assert request["metadata"]["labels"]["dag_id"] == "pretrain"
    assert request["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llmops"
    # KPO spells out API defaults and empty lists; apart from those the pod is exactly ours.
    assert container(request).pop("terminationMessagePolicy") == "File"
    assert request["spec"].pop("hostNetwork") is False
    assert without_empties(request["spec"]) == expected["spec"]


def test_pod_failure_raises_step_failed_naming_the_step(config, monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.common.compat.sdk import AirflowException

    def fail(self, context):
        raise AirflowException("Pod curate-abc returned a failure")

    monkeypatch.setattr(KubernetesPodOperator, "execute", fail)
    with pytest.raises(StepFailed, match=r"step 'curate': pod curate-[0-9a-f]{8} failed: Pod curate-abc"):
        KubernetesLauncher(config).run(cpu_step(), context(), LOG)


# --- multi-node indexed Job -------------------------------------------------------------------


def test_indexed_job_runs_one_pod_per_node_with_torchrun_rendezvous(config):
    job, service = render_indexed_job(gpu_step(nodes=4), config, "run-1")
    name = resource_name("Pretrain GPT-2 (small)", "run-1")
    data = serialise(job)
    spec = data["spec"]
    base = container(spec["template"])

    assert isinstance(round_trip(job, "V1Job"), k8s.V1Job)
    assert data["apiVersion"] == "batch/v1" and data["kind"] == "Job"
    assert data["metadata"]["name"] == name
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (
        "Indexed", 4, 4, 0,
    )
    assert spec["template"]["spec"]["subdomain"] == service.metadata.name == name
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert len(f"{name}-3") <= 63
    assert base["command"] == [
        "torchrun",
        "--nnodes=4",
        "--nproc-per-node=8",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--rdzv-backend=static",
        f"--master-addr={name}-0.{name}",
        "--master-port=29500",
        "-m", "tasks.training.pretrain", "--iters", "100",
    ]
    assert {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
    } in base["env"]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert spec["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {v["name"] for v in spec["template"]["spec"]["volumes"]} == {"dshm", "data"}


def test_headless_service_selects_the_job_pods(config):
    job, service = render_indexed_job(gpu_step(nodes=2), config, "run-1")
    data = serialise(service)

    assert isinstance(round_trip(service, "V1Service"), k8s.V1Service)
    assert data["spec"]["clusterIP"] == "None"
    assert data["spec"]["publishNotReadyAddresses"] is True
    assert data["spec"]["ports"] == [{"name": "rendezvous", "port": 29500, "protocol": "TCP"}]
    pod_labels = job.spec.template.metadata.labels
    assert data["spec"]["selector"].items() <= pod_labels.items()
    assert data["metadata"]["namespace"] == job.metadata.namespace == "llmops"


def test_cpu_only_multi_node_job_has_no_gpu_scheduling(config):
    step = cpu_step(resources=Resources(cpu="8", memory="16Gi", nodes=2, processes_per_node=2))
    job, _ = render_indexed_job(step, config, "run-1")
    data = serialise(job)["spec"]["template"]
    assert "nvidia.com/gpu" not in container(data)["resources"]["limits"]
    assert "nodeSelector" not in data["spec"] and "tolerations" not in data["spec"]


def test_job_names_are_stable_per_run_and_distinct_across_runs(config):
    first, _ = render_indexed_job(gpu_step(nodes=2), config, "run-1")
    again, _ = render_indexed_job(gpu_step(nodes=2), config, "run-1")
    other, _ = render_indexed_job(gpu_step(nodes=2), config, "run-2")
    assert first.metadata.name == again.metadata.name != other.metadata.name


# --- submitting against a fake Kubernetes API client ------------------------------------------


class FakeApi:
    """BatchV1Api + CoreV1Api, just the calls the launcher makes; job status follows a script."""

    def __init__(self, statuses: list[k8s.V1JobStatus], existing: k8s.V1Job | None = None):
        self.statuses = list(statuses)
        self.jobs: dict[str, k8s.V1Job] = {}
        self.services: dict[str, k8s.V1Service] = {}
        self.calls: list[tuple] = []
        self.on_poll = None
        if existing is not None:
            self.jobs[existing.metadata.name] = existing

    def create_namespaced_job(self, namespace, body):
        self.calls.append(("create_job", namespace, body.metadata.name))
        self.jobs[body.metadata.name] = body

    def create_namespaced_service(self, namespace, body):
        self.calls.append(("create_service", namespace, body.metadata.name))
        if body.metadata.name in self.services:
            raise ApiException(status=409)
        self.services[body.metadata.name] = body

    def read_namespaced_job_status(self, name, namespace):
        if name not in self.jobs:
            raise ApiException(status=404)
        if self.on_poll is not None:
            self.on_poll()
        if name not in self.jobs:
            raise ApiException(status=404)
        job = self.jobs[name]
        if self.statuses:
            job.status = self.statuses.pop(0)
        return job

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.calls.append(("delete_job", namespace, name, propagation_policy))
        if self.jobs.pop(name, None) is None:
            raise ApiException(status=404)

    def delete_namespaced_service(self, name, namespace):
        self.calls.append(("delete_service", namespace, name))
        if self.services.pop(name, None) is None:
            raise ApiException(status=404)


def status(condition: str | None = None, **counts) -> k8s.V1JobStatus:
    conditions = [k8s.V1JobCondition(type=condition, status="True", reason="Why", message="what")] if condition else None
    return k8s.V1JobStatus(conditions=conditions, **counts)


def launcher_on(api: FakeApi, config: dict) -> KubernetesLauncher:
    return KubernetesLauncher(config, batch_api=api, core_api=api, sleep=lambda _: None)


def test_multi_node_run_creates_job_and_service_then_cleans_up(config):
    api = FakeApi([status(active=2, ready=0), status(active=2, ready=2), status("Complete", succeeded=2, ready=0)])
    step = gpu_step(nodes=2)
    launcher_on(api, config).run(step, context(), LOG)

    name = resource_name(step.name, run_key(context()))
    assert api.calls == [
        ("create_job", "llmops", name),
        ("create_service", "llmops", name),
        ("delete_job", "llmops", name, "Foreground"),
        ("delete_service", "llmops", name),
    ]
    assert api.jobs == {} and api.services == {}


def test_retry_attaches_to_the_running_job_instead_of_creating_another(config):
    step = gpu_step(nodes=2)
    existing, _ = render_indexed_job(step, config, run_key(context()))
    api = FakeApi([status(active=2, ready=2), status("Complete", succeeded=2, ready=0)], existing=existing)
    launcher_on(api, config).run(step, context(), LOG)
    assert [call[0] for call in api.calls] == ["create_service", "delete_job", "delete_service"]


def test_job_failed_in_an_earlier_try_is_replaced(config):
    step = gpu_step(nodes=2)
    existing, _ = render_indexed_job(step, config, run_key(context()))
    api = FakeApi([status("Failed", failed=1), status("Complete", succeeded=2, ready=0)], existing=existing)
    launcher_on(api, config).run(step, context(), LOG)
    assert [call[0] for call in api.calls] == [
        "delete_job", "delete_service", "create_job", "create_service", "delete_job", "delete_service",
    ]


def test_failed_job_raises_step_failed_naming_step_and_reason(config):
    api = FakeApi([status(active=2, ready=2), status("Failed", failed=1, ready=1)])
    with pytest.raises(StepFailed, match=r"step 'Pretrain GPT-2 \(small\)': job pretrain-gpt-2-small-[0-9a-f]{8} failed: Why: what"):
        launcher_on(api, config).run(gpu_step(nodes=2), context(), LOG)
    assert api.jobs == {}


def test_job_whose_pods_never_start_fails_after_the_startup_timeout(config, monkeypatch):
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(launcher_module.time, "monotonic", lambda: next(clock))
    api = FakeApi([status(active=2, ready=0)] * 20)
    with pytest.raises(StepFailed, match=r"no pod of job .* became ready within 600s"):
        launcher_on(api, config).run(gpu_step(nodes=2), context(), LOG)


def test_kill_during_run_deletes_the_job_with_foreground_propagation(config):
    api = FakeApi([status(active=2, ready=2)] * 5)
    launcher = launcher_on(api, config)
    api.on_poll = launcher.kill  # the operator's on_kill arrives while run() polls
    step = gpu_step(nodes=2)

    with pytest.raises(StepFailed, match="was deleted before it finished"):
        launcher.run(step, context(), LOG)

    name = resource_name(step.name, run_key(context()))
    assert ("delete_job", "llmops", name, "Foreground") in api.calls
    assert ("delete_service", "llmops", name) in api.calls
    assert api.jobs == {} and api.services == {}


# --- step images ------------------------------------------------------------------------------

IMAGES = ("trainer", "curator", "evaluator", "engine-builder")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("image", IMAGES)
def test_step_image_dockerfile_copies_the_code_and_runs_unprivileged(image):
    dockerfile = REPO_ROOT / "containers" / image / "Dockerfile"
    steps = instructions(dockerfile)
    kinds = [kind for kind, _ in steps]
    copies = [arg.split()[-2] for kind, arg in steps if kind == "COPY"]

    assert dockerfile.read_text().startswith("# "), "a comment at the top says what the image is for"
    assert kinds[0] == "FROM"
    assert {"tasks/", "include/", "requirements.txt"} <= set(copies)
    assert "WORKDIR" in kinds
    assert "ENTRYPOINT" not in kinds and "CMD" not in kinds
    users = [arg for kind, arg in steps if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert kinds.index("USER") > max(i for i, (kind, arg) in enumerate(steps) if kind == "COPY")


@pytest.mark.parametrize(
    ("image", "base"),
    [
        ("trainer", "nvcr.io/nvidia/pytorch:"),
        ("engine-builder", "nvcr.io/nvidia/tritonserver:"),
        ("curator", "python:3.11-slim"),
        ("evaluator", "python:3.11-slim"),
    ],
)
def test_step_image_base_fits_the_step(image, base):
    (from_,) = [arg for kind, arg in instructions(REPO_ROOT / "containers" / image / "Dockerfile") if kind == "FROM"]
    assert from_.startswith(base)


@pytest.mark.parametrize("image", IMAGES)
def test_every_package_a_step_image_installs_is_pinned_in_requirements(image):
    """The images grep their pins out of requirements.txt; a missed name would install silently nothing."""
    text = (REPO_ROOT / "containers" / image / "Dockerfile").read_text()
    (pattern,) = re.findall(r"grep -E '\^\(([^)]*)\)", text)
    requirements = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    for package in pattern.split("|"):
        pins = [line for line in requirements if re.match(rf"^{re.escape(package)}(\[|==)", line)]
        assert len(pins) == 1, f"{image}: {package!r} has {len(pins)} pins in requirements.txt"


def test_multi_node_pretrain_job_gets_nccl_env_and_checkpoints_on_the_shared_volume(config):
    """The pretrain DAG's own command line, as its validate task builds it for the kubernetes launcher."""
    from plugins.launchers.base import artifact_root
    from tasks.training.pretrain import cli_args
    from tasks.training.session import PASSED_SETTINGS

    settings = {name: 1 for name in PASSED_SETTINGS} | {"preset": "1b", "resume_policy": "auto",
                                                          "experiment": "llama-1b", "data_parallel": 16}
    args = cli_args(settings, repo="corpus", data_commit="c0ffee", artifact_root=artifact_root("kubernetes"),
                    run_key="pretrain/run-1")
    step = Step(name="train", module="tasks.training.pretrain", args=tuple(args),
                resources=Resources(cpu="8", memory="64Gi", gpus=8, nodes=2, processes_per_node=8),
                env={"NCCL_DEBUG": "INFO"})
    job, _ = render_indexed_job(step, config, "run-1")
    base = container(serialise(job)["spec"]["template"])
    env = {e["name"]: e.get("value") for e in base["env"]}

    assert base["command"][:3] == ["torchrun", "--nnodes=2", "--nproc-per-node=8"]
    command = base["command"]
    assert command[command.index("--checkpoint-dir") + 1] == f"{config['data_mount_path']}/checkpoints/llama-1b/c0ffee"
    assert {"name": "data", "mountPath": config["data_mount_path"]} in base["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in base["volumeMounts"]
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == config["gpu_env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"]
    assert env["NCCL_DEBUG"] == "INFO", "the step's own env wins over the platform's GPU env"
    cpu_env = {e["name"] for e in container(serialise(render_pod(cpu_step(), config)))["env"]}
    assert not cpu_env & set(config["gpu_env"]), "NCCL settings are for GPU steps only"
