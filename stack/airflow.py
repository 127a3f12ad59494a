"""Airflow 3.3 as separate components on the embedded Postgres, LocalExecutor, sized for 2 cores."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from stack import lakefs, postgres, triton
from stack.config import HOST, REPO_ROOT, StackConfig

ADMIN_USER = "admin"
# component name -> airflow CLI arguments; log servers off, everything on 127.0.0.1
COMPONENTS = {
    "airflow-api-server": ["api-server", "--host", HOST],
    "airflow-scheduler": ["scheduler", "--skip-serve-logs"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer", "--skip-serve-logs"],
}


def home(cfg: StackConfig) -> Path:
    return cfg.home / "airflow"


def api_url(cfg: StackConfig) -> str:
    return f"http://{HOST}:{cfg.airflow_port}"


def _secret(cfg: StackConfig, name: str, make) -> str:
    path = home(cfg) / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def admin_password(cfg: StackConfig) -> str:
    """Generated once; SimpleAuthManager reads it from the passwords file we point it at."""
    password = _secret(cfg, "admin_password", lambda: secrets.token_urlsafe(12))
    passwords_file = home(cfg) / "passwords.json"
    passwords_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")
    passwords_file.chmod(0o600)
    return password


def connections(cfg: StackConfig) -> dict[str, str]:
    """The stack's endpoints as AIRFLOW_CONN_* (JSON form), the only way the DAGs learn them."""
    lakefs_key, lakefs_secret = lakefs.credentials(cfg)
    http = lambda port: {"conn_type": "http", "host": HOST, "port": port, "schema": "http"}  # noqa: E731
    conns = {
        "LLMOPS_POSTGRES": {
            "conn_type": "postgres", "host": HOST, "port": cfg.postgres_port, "schema": "platform",
            "login": postgres.SUPERUSER, "password": postgres.password(cfg),
        },
        "LLMOPS_MLFLOW": http(cfg.mlflow_port),
        "LLMOPS_TRITON": {**http(cfg.triton_http_port), "extra": {"grpc_port": cfg.triton_grpc_port,
                                                                 "metrics_port": cfg.triton_metrics_port}},
        "LLMOPS_LAKEFS": {**http(cfg.lakefs_port), "login": lakefs_key, "password": lakefs_secret},
    }
    return {f"AIRFLOW_CONN_{name}": json.dumps(value) for name, value in conns.items()}


def env(cfg: StackConfig) -> dict[str, str]:
    fernet = _secret(cfg, "fernet_key", lambda: Fernet.generate_key().decode())
    secret_key = _secret(cfg, "secret_key", lambda: secrets.token_hex(32))
    settings = {
        "AIRFLOW_HOME": str(home(cfg)),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__CORE__FERNET_KEY": fernet,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home(cfg) / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url(cfg)}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.dsn(cfg, "airflow", driver="postgresql+psycopg2"),
        "AIRFLOW__API__BASE_URL": api_url(cfg),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(cfg.airflow_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secret_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_key,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home(cfg) / "logs"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "LLMOPS_TRITON_MODEL_REPOSITORY": str(triton.model_repository(cfg)),
        "LLMOPS_ARTIFACT_ROOT": str(cfg.home / "artifacts"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **connections(cfg),
    }
    return {**os.environ, **settings}


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def argv(component: str) -> list[str]:
    return [airflow_bin(), *COMPONENTS[component]]


def prepare(cfg: StackConfig) -> None:
    """Write the admin password file, then `airflow db migrate` once per Airflow version (~20 s)."""
    import airflow

    admin_password(cfg)
    stamp = home(cfg) / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return
    home(cfg).mkdir(parents=True, exist_ok=True)
    result = subprocess.run([airflow_bin(), "db", "migrate"], env=env(cfg), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    stamp.touch()
