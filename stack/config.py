"""Where the embedded stack keeps its state and which 127.0.0.1 ports it uses (env-overridable)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

# setting name -> default port; each is read from the environment variable of the same name.
DEFAULT_PORTS = {
    "LLMOPS_POSTGRES_PORT": 15432,
    "LLMOPS_LAKEFS_PORT": 18000,
    "LLMOPS_MLFLOW_PORT": 15000,
    "LLMOPS_TRITON_HTTP_PORT": 18001,
    "LLMOPS_TRITON_GRPC_PORT": 18002,
    "LLMOPS_TRITON_METRICS_PORT": 18003,
    "LLMOPS_AIRFLOW_PORT": 18080,
}


@dataclass(frozen=True)
class StackConfig:
    home: Path
    postgres_port: int
    lakefs_port: int
    mlflow_port: int
    triton_http_port: int
    triton_grpc_port: int
    triton_metrics_port: int
    airflow_port: int

    @classmethod
    def from_env(cls) -> StackConfig:
        home = Path(os.environ.get("LLMOPS_STACK_HOME", REPO_ROOT / ".stack")).resolve()
        ports = {}
        for setting, default in DEFAULT_PORTS.items():
            raw = os.environ.get(setting, str(default))
            if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
                raise ValueError(f"{setting}={raw!r}: a port must be an integer in 1024..65535")
            ports[_field_for(setting)] = int(raw)
        return cls(home=home, **ports)

    @classmethod
    def load(cls) -> StackConfig:
        """The config `up` last used (so status/down/logs see the ports it chose), else from env."""
        fresh = cls.from_env()
        saved = fresh.home / "stack.json"
        if not saved.exists():
            return fresh
        data = json.loads(saved.read_text())
        return cls(home=fresh.home, **{k: v for k, v in data.items() if k != "home"})

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.home / "stack.json").write_text(json.dumps(data, indent=2))

    def port_settings(self) -> dict[str, int]:
        return {setting: getattr(self, _field_for(setting)) for setting in DEFAULT_PORTS}

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


def _field_for(setting: str) -> str:
    name = setting.removeprefix("LLMOPS_").lower()
    assert name in {f.name for f in fields(StackConfig)}, setting
    return name
