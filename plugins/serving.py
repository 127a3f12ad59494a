"""What the deploy DAG needs from the platform: the Triton target, the approval gate, and the one way a deploy
ends without promotion (candidate unloaded, challenger alias dropped, the event recorded with its reason)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from plugins.connections import MLFLOW, TRITON, http_url, postgres_dsn, triton_grpc


def model_repository_root() -> Path:
    """The root of Triton's model repository (it holds models/), as this Airflow deployment mounts it."""
    models = os.environ.get("LLMOPS_TRITON_MODEL_REPOSITORY")
    if not models:
        raise RuntimeError("LLMOPS_TRITON_MODEL_REPOSITORY is not set: the deploy and monitoring tasks read Triton's "
                           "model repository (the stack sets it; in production, the repository volume's mount path)")
    return Path(models).parent


def triton_target(served_name: str):
    """The Triton the platform deploys to: its HTTP/gRPC endpoints and its model repository."""
    from tasks.serving.client import TritonControl
    from tasks.serving.deploy import Target
    from tasks.serving.repository import ModelRepository

    return Target(ModelRepository(model_repository_root()), TritonControl(http_url(TRITON)), triton_grpc(), served_name)


def record(plan: dict[str, Any], action: str, reason: str, dag_run: Any, from_version: int | None = None,
           gates: dict | None = None, actor: str | None = None) -> None:
    from tasks.common import platform_db
    from tasks.serving import history

    with platform_db.connect(postgres_dsn()) as conn:
        history.record(conn, served_name=plan["served_name"], action=action, from_version=from_version,
                       to_version=plan["version"], registered_model=plan["registered_model"],
                       registered_version=plan["registered_version"], adapters=plan["adapters"],
                       actor=actor or deploy_actor(dag_run), reason=reason, gates=gates or {},
                       dag_run=f"{dag_run.dag_id}/{dag_run.run_id}")


def deploy_actor(dag_run: Any) -> str:
    return getattr(dag_run, "triggering_user_name", None) or f"airflow:{dag_run.run_type}"


def roll_back(plan: dict[str, Any], reason: str, dag_run: Any, action: str = "rolled_back",
              actor: str | None = None) -> None:
    """The candidate leaves Triton; the serving version, its config and the champion alias stay as they were."""
    from tasks.common import registry
    from tasks.serving.deploy import unload_candidate

    unload_candidate(triton_target(plan["served_name"]))
    registry.move_alias(http_url(MLFLOW), plan["registered_model"], "challenger", None)
    record(plan, action, reason, dag_run, actor=actor)
    print(f"{action}: {plan['served_name']} version {plan['version']} ({reason}); the serving version is untouched")


class ApprovalGate(ApprovalOperator):
    """A human approves the promotion in the Airflow UI when the `approval` Param is on; a rejection rolls the
    candidate back and fails the run (it never quietly skips). With the Param off it passes at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fail_on_reject=True, **kwargs)

    def execute(self, context: Any) -> Any:
        if not context["params"]["approval"]:
            self.log.info("approval Param is off: promotion needs no human decision")
            return None
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        try:
            return super().execute_complete(context, event)
        except Exception as error:
            plan = context["ti"].xcom_pull(task_ids="validate")
            responder = (event or {}).get("responded_by_user") or {}
            roll_back(plan | context["ti"].xcom_pull(task_ids="stage"), f"approval: {error}", context["dag_run"],
                      action="rejected", actor=str(responder.get("name") or responder or "") or None)
            raise
