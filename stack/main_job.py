"""The main job: bring the stack up, run the platform's DAGs in a model's-life order, say where to look."""

from __future__ import annotations

import time

from stack import airflow
from stack.airflow_api import AirflowClient
from stack.components import mlflow_url
from stack.config import StackConfig

# Grows with every pipeline: curate -> pretrain -> fine-tune -> build & deploy -> reindex -> answer -> monitor.
PIPELINE: tuple[tuple[str, dict], ...] = (("platform_smoke", {}),)


def run(cfg: StackConfig, up) -> int:
    began = time.monotonic()
    print("==> bringing the embedded stack up", flush=True)
    up(cfg)
    client = AirflowClient.for_stack(cfg)
    results = []
    for dag_id, conf in PIPELINE:
        print(f"==> running {dag_id}", flush=True)
        state = client.run_dag(dag_id, conf, progress=lambda line: print(line, flush=True))
        results.append((dag_id, state))
        if state != "success":
            break
    print()
    print(f"main job finished in {time.monotonic() - began:.0f}s")
    for dag_id, state in results:
        print(f"  {dag_id:<24} {state}")
    print(f"Airflow UI   {airflow.api_url(cfg)}  (login: {airflow.ADMIN_USER} / {airflow.admin_password(cfg)})")
    print(f"MLflow       {mlflow_url(cfg)}")
    print(f"stack state  {cfg.home}   (python -m stack status | logs <component> | down)")
    return 0 if all(state == "success" for _, state in results) else 1
