"""Prove each platform service answers a real request; the platform_smoke DAG calls these.

Run as a step: `python -m tasks.common.service_checks {pgvector,triton,mlflow} --url ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.common.versioned_data import LakeFSEndpoint


def check_pgvector(dsn: str) -> float:
    """A real pgvector query: the L2 distance of two known vectors (must be 1.0)."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        extension = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if extension is None:
            raise RuntimeError(f"pgvector is not installed in the database at {_safe(dsn)}: run CREATE EXTENSION vector")
        (distance,) = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone()
    if abs(distance - 1.0) > 1e-6:
        raise RuntimeError(f"pgvector returned L2 distance {distance} for [1,2,3]<->[1,2,4]; expected 1.0")
    return float(distance)


def check_triton(url: str) -> dict:
    """Triton is live and ready; returns its server metadata (name, version, extensions)."""
    base = url.rstrip("/")
    for probe in ("/v2/health/live", "/v2/health/ready"):
        with urllib.request.urlopen(base + probe, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"Triton at {base}{probe} answered {response.status}, expected 200")
    with urllib.request.urlopen(base + "/v2", timeout=10) as response:
        return json.load(response)


def log_mlflow_smoke_run(tracking_uri: str, experiment: str = "platform_smoke") -> str:
    """Log a run with a param and a metric, read it back from the server, return its run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="smoke") as run:
        mlflow.log_param("probe", "platform_smoke")
        mlflow.log_metric("answer", 42.0)
    stored = MlflowClient(tracking_uri).get_run(run.info.run_id)
    if stored.data.metrics.get("answer") != 42.0:
        raise RuntimeError(f"MLflow at {tracking_uri} did not return the logged metric for run {run.info.run_id}")
    return run.info.run_id


def check_lakefs(endpoint: LakeFSEndpoint, dag_id: str, run_id: str, repo: str = "platform-smoke") -> str:
    """Write-audit-publish one object through the lakefs SDK; returns the commit on main that holds it."""
    from tasks.common.versioned_data import Lineage, VersionedRepo

    versioned = VersionedRepo(endpoint, repo)
    versioned.ensure(storage_namespace=f"local://{repo}")
    branch = versioned.open_run_branch(dag_id, run_id)
    versioned.put_object(branch, "smoke/run.txt", f"{dag_id} {run_id}\n".encode())
    lineage = Lineage(dag_id=dag_id, run_id=run_id, task_id="lakefs_publish", counts={"objects": 1})
    versioned.commit(branch, f"smoke object for {run_id}", lineage)
    merged = versioned.publish(branch, validate=lambda commit_id: [], lineage=lineage)
    if versioned.get_object(merged, "smoke/run.txt") != f"{dag_id} {run_id}\n".encode():
        raise RuntimeError(f"lakeFS repository {repo!r}: smoke/run.txt at {merged} does not hold what was written")
    return merged


def _safe(dsn: str) -> str:
    """A DSN without its password, for error messages."""
    if "@" not in dsn:
        return dsn
    scheme, _, rest = dsn.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.common.service_checks", description=__doc__)
    parser.add_argument("service", choices=["pgvector", "triton", "mlflow"], help="which service to probe")
    parser.add_argument("--url", required=True, help="postgres DSN, Triton HTTP URL or MLflow tracking URI")
    args = parser.parse_args(argv)
    probe = {"pgvector": check_pgvector, "triton": check_triton, "mlflow": log_mlflow_smoke_run}[args.service]
    print(json.dumps({"service": args.service, "result": probe(args.url)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
