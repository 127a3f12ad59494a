"""Test-wide settings (Airflow never touches ~/airflow, connections faked through the environment) and the
real embedded stack, brought up at most once per session on free ports in a tmp home, and torn down."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator

import pytest

from stack.config import StackConfig
from stack.lakefs_emulator.service import start_emulator
from stack.process import free_port, pid_alive
from tasks.common.versioned_data import LakeFSEndpoint
from tests.stack.harness import RunningStack, our_pids, stack_env

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="llmops-test-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
for _name, _conn in {
    "LLMOPS_POSTGRES": {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "schema": "platform"},
    "LLMOPS_MLFLOW": {"conn_type": "http", "host": "127.0.0.1", "port": 1, "schema": "http"},
    "LLMOPS_TRITON": {"conn_type": "http", "host": "127.0.0.1", "port": 1, "schema": "http"},
    "LLMOPS_LAKEFS": {"conn_type": "http", "host": "127.0.0.1", "port": 1, "schema": "http"},
}.items():
    os.environ.setdefault(f"AIRFLOW_CONN_{_name}", json.dumps(_conn))


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = stack_env(tmp_path_factory.mktemp("stack-home"))
    saved = {k: os.environ.get(k) for k in env if k.startswith("LLMOPS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("LLMOPS_")})
    try:
        stack = RunningStack(StackConfig.from_env(), env)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    started = stack.cli("up")
    pids: set[int] = set()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = our_pids(stack)
        yield stack
    finally:
        stopped = stack.cli("down")
    assert stopped.returncode == 0, stopped.stderr
    assert [pid for pid in pids if pid_alive(pid)] == [], "`stack down` left processes of ours running"


@pytest.fixture(scope="session")
def lakefs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakeFSEndpoint]:
    """One lakeFS emulator subprocess for every test that only needs an endpoint (each uses its own repos)."""
    root = tmp_path_factory.mktemp("lakefs-emulator")
    process = start_emulator(root / "data", free_port(), "AKIATESTSESSION", "test-session-secret", run_dir=root / "run")
    yield LakeFSEndpoint(process.url, process.access_key_id, process.secret_access_key)
    process.stop()


@pytest.fixture(scope="session")
def platform_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector (the embedded stack's own server code) on a free port in a tmp home, for
    tests of the platform database (RAG store, request log, monitoring) without the whole stack."""
    from stack import postgres

    cfg = StackConfig(home=tmp_path_factory.mktemp("platform-postgres"), postgres_port=free_port(), lakefs_port=0,
                      mlflow_port=0, triton_http_port=0, triton_grpc_port=0, triton_metrics_port=0, airflow_port=0)
    postgres.initialise(cfg)
    postgres.start(cfg, cfg.home / "postgres.log")
    try:
        postgres.create_databases(cfg)
        yield postgres.dsn(cfg, "platform")
    finally:
        postgres.stop(cfg)
