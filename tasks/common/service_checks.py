"""Prove each platform service answers a real request; used by the platform_smoke DAG and `stack status`-style checks.

Run as a step: `python -m tasks.common.service_checks {pgvector,triton,mlflow} --url ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request


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
