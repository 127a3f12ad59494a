"""KubeRay manifests for curate_corpus's `ray` executor in production: a RayCluster the `ray_default` Connection
points at, or a RayJob per run that brings its own cluster. Pure rendering from include/ray/ templates and
include/platform.yaml (`kubernetes.ray`), so tests check exactly what would be applied; nothing here talks to a
cluster.

    python -m plugins.launchers.kuberay cluster                         # RayCluster YAML, for kubectl apply
    python -m plugins.launchers.kuberay job --run-id ID -- <curate-ray args>   # RayJob YAML for one run
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from plugins.launchers.base import REPO_ROOT, platform_config
from plugins.launchers.kubernetes import resource_name
from plugins.launchers.step import Resources, Step

API_VERSION = "ray.io/v1"
CLIENT_PORT = 10001
CURATION_STEPS = "tasks.curation.steps"
# the credentials a curation run needs on every Ray node (lakeFS is read and written by the workers)
LAKEFS_SECRETS = (
    "LAKECTL_SERVER_ENDPOINT_URL",
    "LAKECTL_CREDENTIALS_ACCESS_KEY_ID",
    "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY",
)


def client_address(name: str, namespace: str) -> str:
    """What the `ray_default` Connection holds for a RayCluster: its head Service's Ray client port."""
    return f"ray://{name}-head-svc.{namespace}.svc:{CLIENT_PORT}"


def render_ray_cluster(config: dict[str, Any], name: str, ray_version: str) -> dict[str, Any]:
    """The RayCluster: head (GCS and drivers, no work) and one autoscaled worker group, both on the step image."""
    ray = config["ray"]
    cluster = _template(ray["cluster_template"])
    cluster["metadata"] = {**cluster.get("metadata", {}), "name": name, "namespace": config["namespace"]}
    spec = cluster["spec"]
    spec["rayVersion"] = ray_version
    head = spec["headGroupSpec"]["template"]["spec"]
    head["serviceAccountName"] = config["service_account"]
    _fill(head["containers"][0], config, Resources(cpu=ray["head"]["cpu"], memory=ray["head"]["memory"]))
    workers = ray["workers"]
    for group in spec["workerGroupSpecs"]:
        group.update(
            replicas=workers["replicas"], minReplicas=workers["min_replicas"], maxReplicas=workers["max_replicas"]
        )
        pod = group["template"]["spec"]
        pod["serviceAccountName"] = config["service_account"]
        _fill(pod["containers"][0], config, Resources(cpu=workers["cpu"], memory=workers["memory"]))
    return cluster


def render_ray_job(step: Step, config: dict[str, Any], run_id: str, ray_version: str) -> dict[str, Any]:
    """A RayJob running the step's command as its entrypoint on a cluster of its own, deleted when it ends."""
    name = resource_name(step.name, run_id)
    job = _template(config["ray"]["job_template"])
    job["metadata"] = {**job.get("metadata", {}), "name": name, "namespace": config["namespace"]}
    cluster = render_ray_cluster(config, name, ray_version)
    job["spec"]["entrypoint"] = shlex.join(["python", *step.command()])
    job["spec"]["rayClusterSpec"] = cluster["spec"]
    job["spec"]["submitterPodTemplate"] = {
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": config["service_account"],
            "securityContext": copy.deepcopy(cluster["spec"]["headGroupSpec"]["template"]["spec"]["securityContext"]),
            "containers": [_fill({"name": "ray-job-submitter"}, config, Resources(cpu="500m", memory="512Mi"))],
        }
    }
    return job


def _template(path: str) -> dict[str, Any]:
    """The template as plain data; JSON round-trip so YAML anchors become copies, not shared objects."""
    file = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    return json.loads(json.dumps(yaml.safe_load(file.read_text(encoding="utf-8"))))


def _fill(container: dict[str, Any], config: dict[str, Any], resources: Resources) -> dict[str, Any]:
    """Image, requests = limits, and the step credentials as references into the platform Secret."""
    amounts = {"cpu": resources.cpu, "memory": resources.memory}
    container["image"] = config["default_image"]
    container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    container["env"] = [
        *container.get("env", []),
        *(
            {"name": key, "valueFrom": {"secretKeyRef": {"name": config["step_secret"], "key": key}}}
            for key in LAKEFS_SECRETS
        ),
    ]
    return container


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plugins.launchers.kuberay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=["cluster", "job"])
    parser.add_argument("--name", default="llmops-curation", help="the RayCluster's name")
    parser.add_argument("--run-id", default="manual", help="the run a RayJob is for (names it)")
    parser.add_argument("step_args", nargs="*", help="a RayJob's `curate-ray` arguments, after --")
    args = parser.parse_args(argv)
    import ray

    config = platform_config()["kubernetes"]
    if args.kind == "cluster":
        manifest = render_ray_cluster(config, args.name, ray.__version__)
    else:
        step = Step(name="curate_on_ray", module=CURATION_STEPS, args=("curate-ray", *args.step_args))
        manifest = render_ray_job(step, config, args.run_id, ray.__version__)
    yaml.safe_dump(manifest, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
