"""The real stack: up on free ports, healthy, loopback only, idempotent, REST-triggered DAG runs.

(`stack down` leaving no process behind is asserted where the session fixture tears the stack down.)"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import httpx
import pytest

from stack import airflow
from stack.airflow_api import AirflowClient
from stack.components import COMPONENTS
from tests.stack.harness import RunningStack, our_pids, stack_env

pytestmark = pytest.mark.slow
LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "127.0.0.1%")


def test_status_reports_every_component_healthy(running_stack: RunningStack):
    result = running_stack.cli("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert [row["component"] for row in rows] == [c.name for c in COMPONENTS]
    assert {row["state"] for row in rows} == {"healthy"}


def test_everything_listens_on_loopback_only(running_stack: RunningStack):
    pids = our_pids(running_stack)
    listeners = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line for line in listeners if any(f"pid={pid}," in line for pid in pids)]
    expected_ports = set(running_stack.cfg.port_settings().values())
    seen_ports = {int(re.split(r"\s+", line)[3].rsplit(":", 1)[1]) for line in ours}
    assert expected_ports <= seen_ports, f"not listening: {expected_ports - seen_ports}"
    exposed = [line for line in ours if not re.split(r"\s+", line)[3].startswith(LOOPBACK)]
    assert exposed == [], "listening beyond 127.0.0.1:\n" + "\n".join(exposed)


def test_up_again_is_idempotent(running_stack: RunningStack):
    before = {c.name: c.pid(running_stack.cfg) for c in COMPONENTS}
    again = running_stack.cli("up")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already up") == len(COMPONENTS)
    assert {c.name: c.pid(running_stack.cfg) for c in COMPONENTS} == before


def test_api_refuses_missing_and_wrong_credentials(running_stack: RunningStack):
    base = airflow.api_url(running_stack.cfg)
    assert httpx.get(f"{base}/api/v2/dags").status_code == 401
    bad = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": "wrong"})
    assert bad.status_code == 401


def test_platform_smoke_triggered_through_rest_api_succeeds(running_stack: RunningStack):
    client = AirflowClient.for_stack(running_stack.cfg)
    client.wait_for_dag("platform_smoke")
    run_id = client.trigger("platform_smoke", {"mlflow_experiment": "rest-api-test"})
    assert client.wait("platform_smoke", run_id, timeout=600) == "success"
    states = client.task_states("platform_smoke", run_id)
    assert set(states) == {"check_conf", "pgvector_query", "lakefs_publish", "triton_ready", "mlflow_run",
                           "launcher_step"}
    assert set(states.values()) == {"success"}


def test_unknown_conf_key_is_refused_at_trigger_time(running_stack: RunningStack):
    client = AirflowClient.for_stack(running_stack.cfg)
    client.wait_for_dag("platform_smoke")
    runs_before = client._call("GET", "/dags/platform_smoke/dagRuns")["total_entries"]
    refused = client._http.post("/dags/platform_smoke/dagRuns", json={"logical_date": None, "conf": {"vocab_sise": 1}})
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        "dag run conf has unknown key(s) vocab_sise; platform_smoke accepts only: mlflow_experiment"
    )
    assert client._call("GET", "/dags/platform_smoke/dagRuns")["total_entries"] == runs_before


def test_taken_port_is_refused_with_the_setting_to_change(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**stack_env(tmp_path), "LLMOPS_POSTGRES_PORT": str(port)}
        result = subprocess.run(
            [sys.executable, "-W", "ignore", "-m", "stack", "up"], env=env, capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2
    assert f"postgres: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "LLMOPS_POSTGRES_PORT" in result.stderr


def test_a_failed_up_stops_what_it_started(tmp_path):
    """postgres comes up first; lakeFS's port is taken, so `up` fails there and must stop postgres again."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {**stack_env(tmp_path), "LLMOPS_LAKEFS_PORT": str(holder.getsockname()[1])}
        result = subprocess.run(
            [sys.executable, "-W", "ignore", "-m", "stack", "up"], env=env, capture_output=True, text=True, timeout=300,
        )
    assert result.returncode == 2, result.stderr
    assert "stopping what it started: postgres, lakefs" in result.stderr
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(tmp_path).encode() in _cmdline(int(pid))]
    assert left == [], f"processes of the failed stack still running: {left}"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""
