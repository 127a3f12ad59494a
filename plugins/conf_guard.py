"""Reject DAG-run conf keys the DAG does not declare: Airflow accepts them silently, we do not.

Two guards, one rule: the API middleware answers a trigger with 400 before a run exists (UI and REST API),
and every DAG's first task, `check_conf`, fails a run that got in another way (e.g. `airflow dags trigger`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.sdk import task

DAG_RUNS_PATH = re.compile(r"^/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")


def unknown_conf_keys(conf: dict[str, Any] | None, declared: set[str]) -> list[str]:
    return sorted(set(conf or {}) - declared)


def unknown_conf_message(dag_id: str, unknown: list[str], declared: set[str]) -> str:
    return (
        f"dag run conf has unknown key(s) {', '.join(unknown)}; "
        f"{dag_id} accepts only: {', '.join(sorted(declared)) or '(none)'}"
    )


@task(task_id="check_conf", retries=0)
def check_conf(**context: Any) -> None:
    """First task of every DAG: a typo in `conf` fails the run at once, naming the key."""
    declared = set(context["dag"].params.keys())
    unknown = unknown_conf_keys(context["dag_run"].conf, declared)
    if unknown:
        raise ValueError(unknown_conf_message(context["dag"].dag_id, unknown, declared))


def trigger_problem(dag_id: str, body: bytes, declared: set[str] | None) -> str | None:
    """Why a POST .../dagRuns body must be refused, or None (malformed bodies and unknown DAGs are the API's)."""
    try:
        conf = json.loads(body or b"{}").get("conf")
    except (ValueError, AttributeError):
        return None
    if declared is None or not isinstance(conf, dict):
        return None
    unknown = unknown_conf_keys(conf, declared)
    return unknown_conf_message(dag_id, unknown, declared) if unknown else None


def declared_params(dag_id: str) -> set[str] | None:
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id)
    return None if dag is None else set(dag.params.keys())


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RejectUnknownConf:
    """ASGI middleware on the API server: a trigger whose conf has an undeclared key gets 400 and no run."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = scope["type"] == "http" and scope["method"] == "POST" and DAG_RUNS_PATH.match(scope["path"])
        if not match:
            await self.app(scope, receive, send)
            return
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        import anyio

        problem = trigger_problem(match["dag_id"], body, await anyio.to_thread.run_sync(declared_params, match["dag_id"]))
        if problem:
            payload = json.dumps({"detail": problem}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return

        async def replay() -> MutableMapping[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
