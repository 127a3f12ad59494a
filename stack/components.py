"""The stack's components in start order: how each starts, proves it is healthy, and stops by PID."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stack import airflow, lakefs, postgres, triton
from stack.config import HOST, StackConfig
from stack.process import pid_alive, read_pid, require_free_port, start_detached, stop_pid, wait_until


@dataclass(frozen=True)
class Component:
    """A service we start detached and track by the PID file we write."""

    name: str
    port_settings: tuple[str, ...]  # LLMOPS_*_PORT settings this component listens on
    url: Callable[[StackConfig], str]
    healthy: Callable[[StackConfig], bool]
    argv: Callable[[StackConfig], list[str]] | None = None
    env: Callable[[StackConfig], dict[str, str]] | None = None
    prepare: Callable[[StackConfig], None] = lambda cfg: None
    startup_timeout: float = 90.0

    def pid_file(self, cfg: StackConfig) -> Path:
        return cfg.run_dir / f"{self.name}.pid"

    def log_file(self, cfg: StackConfig) -> Path:
        return cfg.log_dir / f"{self.name}.log"

    def pid(self, cfg: StackConfig) -> int | None:
        found = read_pid(self.pid_file(cfg))
        return found if found is not None and pid_alive(found) else None

    def start(self, cfg: StackConfig) -> None:
        for setting in self.port_settings:
            require_free_port(cfg.port_settings()[setting], self.name, setting)
        self.prepare(cfg)
        self.launch(cfg)
        wait_until(lambda: self.healthy(cfg), timeout=self.startup_timeout, what=self.name, log_file=self.log_file(cfg))

    def launch(self, cfg: StackConfig) -> None:
        env = self.env(cfg) if self.env else None
        start_detached(self.argv(cfg), pid_file=self.pid_file(cfg), log_file=self.log_file(cfg), env=env)

    def stop(self, cfg: StackConfig) -> None:
        pid = read_pid(self.pid_file(cfg))
        if pid is not None:
            stop_pid(pid, timeout=30)
        self.pid_file(cfg).unlink(missing_ok=True)


@dataclass(frozen=True)
class PostgresComponent(Component):
    """pg_ctl daemonises the postmaster, which records its own PID in postmaster.pid."""

    def pid(self, cfg: StackConfig) -> int | None:
        return postgres.pid(cfg)

    def launch(self, cfg: StackConfig) -> None:
        postgres.start(cfg, self.log_file(cfg))
        postgres.create_databases(cfg)

    def stop(self, cfg: StackConfig) -> None:
        postgres.stop(cfg)


def _http_ok(url: str, expect: int = 200) -> bool:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status == expect


def _airflow_health(cfg: StackConfig) -> dict:
    with urllib.request.urlopen(f"{airflow.api_url(cfg)}/api/v2/monitor/health", timeout=3) as response:
        return json.load(response)


def _airflow_part_healthy(part: str) -> Callable[[StackConfig], bool]:
    return lambda cfg: (_airflow_health(cfg).get(part) or {}).get("status") == "healthy"


def _mlflow_argv(cfg: StackConfig) -> list[str]:
    artifacts = cfg.home / "mlflow" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", postgres.dsn(cfg, "mlflow", driver="postgresql+psycopg2"),
        "--artifacts-destination", artifacts.as_uri(), "--serve-artifacts",
        "--host", HOST, "--port", str(cfg.mlflow_port), "--workers", "1",
    ]


def mlflow_url(cfg: StackConfig) -> str:
    return f"http://{HOST}:{cfg.mlflow_port}"


def _airflow_component(name: str, health_part: str, **kwargs) -> Component:
    return Component(
        name=name,
        port_settings=kwargs.pop("port_settings", ()),
        url=airflow.api_url,
        healthy=_airflow_part_healthy(health_part),
        argv=lambda cfg: airflow.argv(name),
        env=airflow.env,
        **kwargs,
    )


COMPONENTS: tuple[Component, ...] = (
    PostgresComponent(
        name="postgres",
        port_settings=("LLMOPS_POSTGRES_PORT",),
        url=lambda cfg: f"postgresql://{HOST}:{cfg.postgres_port} (databases: {', '.join(postgres.DATABASES)})",
        healthy=postgres.healthy,
        prepare=postgres.initialise,
        startup_timeout=60,
    ),
    Component(
        name="lakefs",
        port_settings=("LLMOPS_LAKEFS_PORT",),
        url=lakefs.url,
        healthy=lambda cfg: _http_ok(lakefs.url(cfg) + "/api/v1/healthcheck", expect=204),
        argv=lakefs.argv,
        startup_timeout=60,
    ),
    Component(
        name="mlflow",
        port_settings=("LLMOPS_MLFLOW_PORT",),
        url=mlflow_url,
        healthy=lambda cfg: _http_ok(mlflow_url(cfg) + "/health"),
        argv=_mlflow_argv,
        # MLflow's GenAI job runner forks seven huey consumers (~1.7 GB) we have no use for
        env=lambda cfg: {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        startup_timeout=120,
    ),
    Component(
        name="triton",
        port_settings=("LLMOPS_TRITON_HTTP_PORT", "LLMOPS_TRITON_GRPC_PORT", "LLMOPS_TRITON_METRICS_PORT"),
        url=triton.url,
        healthy=lambda cfg: _http_ok(triton.url(cfg) + "/v2/health/ready"),
        argv=triton.argv,
        env=triton.env,
    ),
    _airflow_component(
        "airflow-api-server", "metadatabase", port_settings=("LLMOPS_AIRFLOW_PORT",), prepare=airflow.prepare,
        startup_timeout=180,
    ),
    _airflow_component("airflow-scheduler", "scheduler"),
    _airflow_component("airflow-dag-processor", "dag_processor"),
    _airflow_component("airflow-triggerer", "triggerer"),
)


def by_name(name: str) -> Component:
    for component in COMPONENTS:
        if component.name == name:
            return component
    raise KeyError(f"no stack component {name!r}; components: {', '.join(c.name for c in COMPONENTS)}")
