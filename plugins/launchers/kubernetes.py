"""Runs a Step on Kubernetes: one node as a pod (KubernetesPodOperator), several as an indexed Job.

The manifests come from pure functions (`render_pod`, `render_indexed_job`) so tests check exactly
what would be submitted; `KubernetesLauncher` only submits, watches and cleans up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from airflow.providers.common.compat.sdk import AirflowException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from plugins.launchers.base import REPO_ROOT, StepFailed
from plugins.launchers.step import Step

BASE_CONTAINER = "base"  # the container name KubernetesPodOperator follows
PLACEHOLDER_IMAGE = next(f.default for f in dataclasses.fields(Step) if f.name == "image")
JOB_NAME_LABEL = "llmops.io/job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# An indexed Job's pod hostname is "<job>-<index>" and must stay a DNS label (<= 63 chars):
# 40 chars of step name + "-" + 8 hex chars leaves room for the index and KPO's pod-name suffix.
_NAME_PREFIX_MAX = 40
_NAME_HASH_CHARS = 8
# DNS-1123 label that also starts with a letter, as Service names (DNS-1035) must.
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


# --- rendering: pure, no cluster needed -------------------------------------------------------


def resource_name(step_name: str, run_id: str) -> str:
    """A DNS-1123 (and DNS-1035) label: the same for retries of one run, distinct across runs."""
    slug = re.sub(r"[^a-z0-9]+", "-", step_name.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"step-{slug}".rstrip("-")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:_NAME_HASH_CHARS]
    name = f"{slug[:_NAME_PREFIX_MAX].rstrip('-')}-{digest}"
    if not _DNS_LABEL.match(name):
        raise ValueError(f"step {step_name!r}: derived name {name!r} is not a DNS-1123 label")
    return name


def step_image(step: Step, config: dict[str, Any]) -> str:
    """The step's own image, or the platform default when the step kept the placeholder."""
    return config["default_image"] if step.image == PLACEHOLDER_IMAGE else step.image


def pod_command(step: Step) -> list[str]:
    """`python -m ...` for one process, `torchrun --nproc-per-node=N -m ...` for several."""
    procs = step.resources.processes_per_node
    if procs == 1:
        return ["python", *step.command()]
    return ["torchrun", f"--nproc-per-node={procs}", *step.command()]


def job_command(step: Step, config: dict[str, Any], name: str) -> list[str]:
    """torchrun across nodes; node rank = the pod's completion index, rank 0 hosts the store.

    Static rendezvous because it is the backend where torchrun honours --node-rank and
    --master-addr (c10d ignores both), so node ranks follow the Job's completion indexes.
    Kubernetes expands $(JOB_COMPLETION_INDEX) from the container env.
    """
    resources = step.resources
    return [
        "torchrun",
        f"--nnodes={resources.nodes}",
        f"--nproc-per-node={resources.processes_per_node}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--rdzv-backend=static",
        f"--master-addr={master_host(name)}",
        f"--master-port={config['rendezvous_port']}",
        *step.command(),
    ]


def master_host(name: str) -> str:
    """Stable DNS name of the index-0 pod: hostname "<job>-0" under the headless Service "<job>"."""
    return f"{name}-0.{name}"


def render_pod(step: Step, config: dict[str, Any]) -> k8s.V1Pod:
    """The single-node pod: the pod template file with the step's image, command and resources."""
    pod = _load_template(step, config)
    pod.metadata.namespace = config["namespace"]
    spec = pod.spec
    spec.service_account_name = config["service_account"]
    spec.volumes = [*(spec.volumes or []), *_volumes(config)]
    container = _base_container(step, pod)
    container.image = step_image(step, config)
    container.command = pod_command(step)
    container.args = None
    container.env = [*(container.env or []), *_env(step, config), *_secret_env(step, config)]
    container.resources = _resources(step, config)
    container.volume_mounts = [*(container.volume_mounts or []), *_volume_mounts(config)]
    if step.resources.gpus > 0:
        spec.node_selector = {**(spec.node_selector or {}), **config["gpu_node_selector"]}
        spec.tolerations = [*(spec.tolerations or []), *_gpu_tolerations(config)]
    return pod


def render_indexed_job(step: Step, config: dict[str, Any], run_id: str) -> tuple[k8s.V1Job, k8s.V1Service]:
    """An indexed Job (one pod per node) and the headless Service that gives pods stable DNS names.

    run_id: any string unique to one run of the step; retries of that run map to the same names.
    """
    name = resource_name(step.name, run_id)
    namespace = config["namespace"]
    pod = render_pod(step, config)
    labels = {**(pod.metadata.labels or {}), JOB_NAME_LABEL: name}
    pod.spec.subdomain = name
    container = _base_container(step, pod)
    container.command = job_command(step, config, name)
    container.env = [*container.env, _completion_index_env()]
    job = k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1JobSpec(
            completion_mode="Indexed",
            completions=step.resources.nodes,
            parallelism=step.resources.nodes,
            # One rank failing breaks the whole torchrun world; Airflow's retry restarts it whole.
            backoff_limit=0,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels, annotations=pod.metadata.annotations),
                spec=pod.spec,
            ),
        ),
    )
    service = k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1ServiceSpec(
            cluster_ip="None",
            selector={JOB_NAME_LABEL: name},
            # Ranks resolve rank 0 while it starts, before any readiness.
            publish_not_ready_addresses=True,
            ports=[k8s.V1ServicePort(name="rendezvous", port=config["rendezvous_port"], protocol="TCP")],
        ),
    )
    return job, service


def _load_template(step: Step, config: dict[str, Any]) -> k8s.V1Pod:
    path = Path(config["pod_template"])
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(
            f"step {step.name!r}: pod template {path} does not exist (kubernetes.pod_template in include/platform.yaml)"
        )
    pod = PodGenerator.deserialize_model_file(str(path))
    pod.metadata = pod.metadata or k8s.V1ObjectMeta()
    return pod


def _base_container(step: Step, pod: k8s.V1Pod) -> k8s.V1Container:
    for container in pod.spec.containers or []:
        if container.name == BASE_CONTAINER:
            return container
    raise ValueError(f"step {step.name!r}: the pod template has no container named {BASE_CONTAINER!r}")


def _env(step: Step, config: dict[str, Any]) -> list[k8s.V1EnvVar]:
    """The step's env, over the platform's GPU env (NCCL settings) when the step asks for GPUs."""
    values = {**(config.get("gpu_env") or {} if step.resources.gpus > 0 else {}), **step.env}
    return [k8s.V1EnvVar(name=key, value=str(value)) for key, value in values.items()]


def _secret_env(step: Step, config: dict[str, Any]) -> list[k8s.V1EnvVar]:
    """Each secret as a reference to the same-named key of the platform's Secret; its value stays out of the spec."""
    return [
        k8s.V1EnvVar(
            name=key,
            value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(name=config["step_secret"], key=key)),
        )
        for key in sorted(step.secrets)
    ]


def _completion_index_env() -> k8s.V1EnvVar:
    field_path = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    return k8s.V1EnvVar(
        name="JOB_COMPLETION_INDEX",
        value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=field_path)),
    )


def _resources(step: Step, config: dict[str, Any]) -> k8s.V1ResourceRequirements:
    """Requests equal limits: a training pod should be Guaranteed QoS, never evicted first."""
    amounts = {"cpu": step.resources.cpu, "memory": step.resources.memory}
    if step.resources.gpus > 0:
        amounts[config["gpu_resource"]] = str(step.resources.gpus)
    return k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _volumes(config: dict[str, Any]) -> list[k8s.V1Volume]:
    return [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=config["shm_size"])),
        k8s.V1Volume(
            name="data",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=config["data_pvc"]),
        ),
    ]


def _volume_mounts(config: dict[str, Any]) -> list[k8s.V1VolumeMount]:
    return [
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
        k8s.V1VolumeMount(name="data", mount_path=config["data_mount_path"]),
    ]


def _gpu_tolerations(config: dict[str, Any]) -> list[k8s.V1Toleration]:
    return [
        k8s.V1Toleration(
            key=toleration.get("key"),
            operator=toleration.get("operator"),
            value=toleration.get("value"),
            effect=toleration.get("effect"),
        )
        for toleration in config["gpu_tolerations"]
    ]


# --- submitting -------------------------------------------------------------------------------


def run_key(context: Any) -> str:
    """What identifies one run of one task: retries share it, other runs/tasks/map indexes don't."""
    ti = context["ti"]
    return f"{ti.dag_id}/{context['run_id']}/{ti.task_id}/{ti.map_index}"


def build_pod_operator(step: Step, config: dict[str, Any], run_id: str) -> KubernetesPodOperator:
    """The KubernetesPodOperator run() executes: the rendered pod, logs streamed, deleted at the end."""
    name = resource_name(step.name, run_id)
    return KubernetesPodOperator(
        task_id=name,
        name=name,
        namespace=config["namespace"],
        full_pod_spec=render_pod(step, config),
        get_logs=True,
        on_finish_action="delete_pod",
        startup_timeout_seconds=config["startup_timeout_seconds"],
    )


class KubernetesLauncher:
    """Runs steps on the cluster named by the `kubernetes_default` Airflow connection."""

    def __init__(
        self,
        config: dict[str, Any],
        batch_api: Any = None,
        core_api: Any = None,
        poll_interval_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._batch_api = batch_api
        self._core_api = core_api
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._pod_operator: KubernetesPodOperator | None = None
        self._job_name: str | None = None

    def run(self, step: Step, context: Any, log: logging.Logger) -> None:
        if step.resources.nodes == 1:
            self._run_pod(step, context, log)
        else:
            self._run_job(step, context, log)

    def kill(self) -> None:
        """Delete what run() started; the pod through the operator, the Job with its pods."""
        if self._pod_operator is not None:
            self._pod_operator.on_kill()
        if self._job_name is not None:
            self._delete_job(self._job_name)

    # single node

    def _run_pod(self, step: Step, context: Any, log: logging.Logger) -> None:
        operator = build_pod_operator(step, self.config, run_key(context))
        self._pod_operator = operator
        log.info("step %r: running pod %s in namespace %s", step.name, operator.name, self.config["namespace"])
        try:
            operator.execute(context)
        except (AirflowException, ApiException) as error:
            raise StepFailed(f"step {step.name!r}: pod {operator.name} failed: {error}") from error
        finally:
            self._pod_operator = None

    # several nodes

    @property
    def batch_api(self) -> Any:
        if self._batch_api is None:
            self._batch_api = self._hook().batch_v1_client
        return self._batch_api

    @property
    def core_api(self) -> Any:
        if self._core_api is None:
            self._core_api = self._hook().core_v1_client
        return self._core_api

    @staticmethod
    def _hook() -> KubernetesHook:
        """The same `kubernetes_default` connection KubernetesPodOperator uses."""
        return KubernetesHook()

    def _run_job(self, step: Step, context: Any, log: logging.Logger) -> None:
        job, service = render_indexed_job(step, self.config, run_key(context))
        name = job.metadata.name
        self._job_name = name
        self._create_or_attach(step, job, service, log)
        try:
            self._await_job(step, name, log)
        finally:
            self._delete_job(name)
            self._job_name = None

    def _create_or_attach(self, step: Step, job: k8s.V1Job, service: k8s.V1Service, log: logging.Logger) -> None:
        """Idempotent submit: a retry attaches to the Job still running from an earlier try.

        A Job that already failed is replaced, or every retry would fail on the old result.
        """
        name, namespace = job.metadata.name, self.config["namespace"]
        existing = self._read_job(name)
        if existing is not None and _job_condition(existing, "Failed"):
            log.info("step %r: job %s failed in an earlier try; replacing it", step.name, name)
            self._delete_job(name)
            self._await_job_gone(step, name)
            existing = None
        if existing is None:
            _create_unless_exists(lambda: self.batch_api.create_namespaced_job(namespace=namespace, body=job))
            log.info("step %r: created indexed job %s/%s with %d nodes", step.name, namespace, name, step.resources.nodes)
        else:
            log.info("step %r: attaching to existing job %s/%s", step.name, namespace, name)
        _create_unless_exists(lambda: self.core_api.create_namespaced_service(namespace=namespace, body=service))

    def _await_job(self, step: Step, name: str, log: logging.Logger) -> None:
        """Poll until the Job completes; fail if it fails, disappears or no pod starts in time."""
        startup_timeout = self.config["startup_timeout_seconds"]
        started_at = time.monotonic()
        pods_started = False
        last_progress = None
        while True:
            job = self._read_job(name, retry_transient=True)
            if job is None:
                raise StepFailed(f"step {step.name!r}: job {name} was deleted before it finished (killed?)")
            status = job.status or k8s.V1JobStatus()
            ready, succeeded, failed_pods = status.ready, status.succeeded or 0, status.failed or 0
            progress = (status.active or 0, ready, succeeded, failed_pods)
            if progress != last_progress:
                log.info("step %r: job %s active=%d ready=%s succeeded=%d failed=%d", step.name, name, *progress)
                last_progress = progress
            if _job_condition(job, "Complete"):
                return
            failed = _job_condition(job, "Failed")
            if failed:
                raise StepFailed(f"step {step.name!r}: job {name} failed: {failed.reason}: {failed.message}")
            # `ready` is None on clusters without the JobReadyPods feature: no startup check there.
            pods_started = pods_started or ready is None or ready + succeeded + failed_pods > 0
            if not pods_started and time.monotonic() - started_at > startup_timeout:
                raise StepFailed(
                    f"step {step.name!r}: no pod of job {name} became ready within {startup_timeout}s "
                    "(kubernetes.startup_timeout_seconds); check image pulls, GPU capacity and the data PVC"
                )
            self._sleep(self._poll_interval_s)

    def _read_job(self, name: str, retry_transient: bool = False) -> k8s.V1Job | None:
        namespace = self.config["namespace"]
        while True:
            try:
                return self.batch_api.read_namespaced_job_status(name=name, namespace=namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                if not (retry_transient and error.status in _RETRYABLE_STATUS):
                    raise
            self._sleep(self._poll_interval_s)

    def _await_job_gone(self, step: Step, name: str) -> None:
        deadline = time.monotonic() + self.config["startup_timeout_seconds"]
        while self._read_job(name) is not None:
            if time.monotonic() > deadline:
                raise StepFailed(f"step {step.name!r}: job {name} from an earlier try is still being deleted")
            self._sleep(self._poll_interval_s)

    def _delete_job(self, name: str) -> None:
        """Foreground propagation: the Job object goes only after its pods are gone."""
        namespace = self.config["namespace"]
        _ignore_not_found(
            lambda: self.batch_api.delete_namespaced_job(
                name=name, namespace=namespace, propagation_policy="Foreground"
            )
        )
        _ignore_not_found(lambda: self.core_api.delete_namespaced_service(name=name, namespace=namespace))


def _job_condition(job: k8s.V1Job, condition_type: str) -> k8s.V1JobCondition | None:
    for condition in (job.status and job.status.conditions) or []:
        if condition.type == condition_type and condition.status == "True":
            return condition
    return None


def _create_unless_exists(create: Callable[[], Any]) -> None:
    try:
        create()
    except ApiException as error:
        if error.status != 409:
            raise


def _ignore_not_found(call: Callable[[], Any]) -> None:
    try:
        call()
    except ApiException as error:
        if error.status != 404:
            raise
