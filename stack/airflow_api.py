"""A small client of Airflow's REST API v2: token, unpause, trigger with conf, poll to a final state.

It is what the README shows people doing with curl, used by the main job and the tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from stack import airflow
from stack.config import StackConfig

FINAL_STATES = {"success", "failed"}


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        token = httpx.post(f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30)
        token.raise_for_status()
        self._http = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )

    def answer(self, question: str, timeout: float = 120, **options: Any) -> httpx.Response:
        """POST the platform plugin's answer endpoint (/llmops/answer) as this signed-in user."""
        return httpx.post(f"{self.base_url}/llmops/answer", json={"question": question, **options},
                          headers=self._http.headers, timeout=timeout)

    @classmethod
    def for_stack(cls, cfg: StackConfig) -> AirflowClient:
        return cls(airflow.api_url(cfg), airflow.ADMIN_USER, airflow.admin_password(cfg))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """A new DAG file is visible to the API only after the dag-processor has parsed it."""
        deadline = time.monotonic() + timeout
        while self._http.get(f"/dags/{dag_id}").status_code == 404:
            errors = self._call("GET", "/importErrors")["import_errors"]
            broken = [e for e in errors if e["filename"].removesuffix(".py") == dag_id]
            if broken:
                raise RuntimeError(f"DAG {dag_id} failed to import:\n{broken[0]['stack_trace']}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG {dag_id} not parsed within {timeout:.0f}s; import errors: {errors}")
            time.sleep(2)

    def drop_queued_asset_events(self, dag_id: str) -> None:
        """A paused DAG still queues the Asset events it is scheduled on, and unpausing it starts a run from that
        stale queue: dropped first, so unpausing starts only what is asked for."""
        response = self._http.delete(f"/dags/{dag_id}/assets/queuedEvents")
        if response.status_code not in (204, 404):  # 404: nothing queued
            raise RuntimeError(f"DELETE queued asset events of {dag_id} -> {response.status_code}: {response.text}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Run the DAG now with `conf`, and only that run (stale queued Asset events are dropped first)."""
        self.drop_queued_asset_events(dag_id)
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self._call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def follow_assets(self, dag_id: str) -> None:
        """Unpause the DAG so that the next Asset event it is scheduled on starts it (and no stale one does)."""
        self.drop_queued_asset_events(dag_id)
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def asset_triggered_run(self, dag_id: str, after: str, timeout: float) -> str | None:
        """The run an Asset event started after `after` (ISO time), waiting up to timeout for the scheduler."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self._call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 5})
            for run in runs["dag_runs"]:
                if run["run_type"] == "asset_triggered" and run["run_after"] > after:
                    return run["dag_run_id"]
            if time.monotonic() > deadline:
                return None
            time.sleep(2)

    def latest_asset_extra(self, dag_id: str) -> dict[str, Any]:
        """The extra of the newest Asset event a DAG emitted: what it made, for people and for the next DAG."""
        events = self._call("GET", "/assets/events", params={"source_dag_id": dag_id, "order_by": "-timestamp",
                                                              "limit": 1})["asset_events"]
        return events[0]["extra"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """State per task; a mapped task's instances appear as `task_id[map_index]`."""
        instances = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {_instance_name(ti): ti["state"] for ti in instances}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task try's log as text, one line per event (what the UI's log tab shows)."""
        body = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                          params={"full_content": "true"}, headers={"Accept": "application/json"})
        content = body.get("content", [])
        if isinstance(content, str):
            return content
        return "\n".join(_log_line(line) for line in content)

    def wait(self, dag_id: str, run_id: str, timeout: float, progress: Callable[[str], None] | None = None) -> str:
        """Poll until the run is final; report each task's state change as it happens."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while True:
            states = self.task_states(dag_id, run_id)
            for task_id, state in sorted(states.items()):
                if progress and seen.get(task_id) != state and state is not None:
                    progress(f"  {dag_id}.{task_id}: {state}")
            seen = states
            state = self.run_state(dag_id, run_id)
            if state in FINAL_STATES:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f}s; task states: {states}")
            time.sleep(2)

    def run_dag(
        self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 900,
        progress: Callable[[str], None] | None = None,
    ) -> str:
        self.wait_for_dag(dag_id)
        run_id = self.trigger(dag_id, conf)
        if progress:
            progress(f"triggered {dag_id} run {run_id}")
        state = self.wait(dag_id, run_id, timeout, progress)
        if progress:
            progress(f"{dag_id} run {run_id}: {state}")
        return state


def _log_line(line: Any) -> str:
    """A structured log event as text; an exception's details (type, message, frames) follow its event."""
    if not isinstance(line, dict):
        return str(line)
    details = line.get("error_detail")
    return line.get("event", "") + (f" {json.dumps(details)}" if details else "")


def _instance_name(instance: dict[str, Any]) -> str:
    index = instance.get("map_index", -1)
    return instance["task_id"] if index is None or index < 0 else f"{instance['task_id']}[{index}]"
