"""The KubeRay manifests of curate_corpus's `ray` executor, rendered and checked without a cluster: CRD shape
(ray.io/v1, the fields the operator requires), pods the Kubernetes API accepts, resources, image, credentials by
reference only, and a YAML round trip."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from types import SimpleNamespace

import pytest
import ray
import yaml
from kubernetes.client import ApiClient

from plugins.launchers.base import REPO_ROOT, platform_config
from plugins.launchers.kuberay import LAKEFS_SECRETS, client_address, render_ray_cluster, render_ray_job
from plugins.launchers.step import Step

QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def config() -> dict:
    return platform_config()["kubernetes"]


def pod_template_round_trip(template: dict) -> dict:
    """What the Kubernetes API's own model makes of a pod template: unknown or mistyped fields would not survive."""
    model = ApiClient().deserialize(SimpleNamespace(data=json.dumps(template)), "V1PodTemplateSpec")
    return ApiClient().sanitize_for_serialization(model)


def check_pod(template: dict, config: dict, cpu: str, memory: str) -> None:
    assert pod_template_round_trip(template) == template
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["serviceAccountName"] == config["service_account"]
    [container] = spec["containers"]
    assert container["image"] == config["default_image"]
    resources = container["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": cpu, "memory": memory}
    assert all(QUANTITY.match(str(value)) for value in resources["requests"].values())
    secrets = {e["name"]: e for e in container["env"] if "valueFrom" in e}
    assert set(secrets) == set(LAKEFS_SECRETS)
    assert all(
        "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == config["step_secret"] for e in secrets.values()
    )


def test_the_ray_cluster_is_a_valid_kuberay_manifest(config: dict) -> None:
    cluster = render_ray_cluster(config, "llmops-curation", ray.__version__)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["metadata"]["name"] == "llmops-curation" and cluster["metadata"]["namespace"] == config["namespace"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__  # the cluster runs the Ray the driver has
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    check_pod(head["template"], config, **config["ray"]["head"])
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["client"] == 10001 and client_address("llmops-curation", "llmops").endswith(":10001")
    workers = config["ray"]["workers"]
    [group] = spec["workerGroupSpecs"]
    assert DNS_LABEL.match(group["groupName"]) and isinstance(group["rayStartParams"], dict)
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    check_pod(group["template"], config, workers["cpu"], workers["memory"])
    assert yaml.safe_load(yaml.safe_dump(cluster)) == cluster


def test_a_ray_job_runs_the_curation_step_on_a_cluster_of_its_own(config: dict) -> None:
    args = (
        "curate-ray",
        "--repo",
        "corpus",
        "--branch",
        "run-curate-corpus-x",
        "--input-commit",
        "abc",
        "--source-prefix",
        "raw/",
    )
    step = Step(name="curate_on_ray", module="tasks.curation.steps", args=args)
    job = render_ray_job(step, config, "manual__2026-11-26", ray.__version__)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert DNS_LABEL.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 63
    spec = job["spec"]
    assert shlex.split(spec["entrypoint"]) == ["python", "-m", "tasks.curation.steps", *args]
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
    assert spec["rayClusterSpec"] == render_ray_cluster(config, job["metadata"]["name"], ray.__version__)["spec"]
    submitter = spec["submitterPodTemplate"]
    check_pod(submitter, config, "500m", "512Mi")
    assert yaml.safe_load(yaml.safe_dump(job)) == job


def test_the_cli_prints_what_kubectl_would_apply() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "plugins.launchers.kuberay", "cluster"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    ).stdout
    out = out[out.index("apiVersion:") :]  # Airflow's unit-test mode logs a line to stdout on import
    assert yaml.safe_load(out)["kind"] == "RayCluster" and "&id" not in out and "*id" not in out
