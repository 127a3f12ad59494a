"""Test-wide settings: Airflow never touches ~/airflow, connections are faked through the environment."""

from __future__ import annotations

import json
import os
import tempfile

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
