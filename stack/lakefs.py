"""The lakeFS emulator as a stack component: its data dir, its generated key pair, its URL."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from stack.config import HOST, StackConfig
from stack.lakefs_emulator.service import emulator_argv

if TYPE_CHECKING:
    from tasks.common.versioned_data import LakeFSEndpoint


def data_dir(cfg: StackConfig) -> Path:
    return cfg.home / "lakefs" / "data"


def credentials(cfg: StackConfig) -> tuple[str, str]:
    """Generated once per stack home, in lakeFS's key format; the DAGs get them through AIRFLOW_CONN_LLMOPS_LAKEFS."""
    path = cfg.home / "lakefs" / "credentials.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {"access_key_id": "AKIAJ" + secrets.token_hex(7).upper(), "secret_access_key": secrets.token_urlsafe(30)}
        path.write_text(json.dumps(keys))
        path.chmod(0o600)
    keys = json.loads(path.read_text())
    return keys["access_key_id"], keys["secret_access_key"]


def url(cfg: StackConfig) -> str:
    return f"http://{HOST}:{cfg.lakefs_port}"


def endpoint(cfg: StackConfig) -> LakeFSEndpoint:
    """The emulator as the platform's data layer addresses any lakeFS (the SDK loads only when asked)."""
    from tasks.common.versioned_data import LakeFSEndpoint

    return LakeFSEndpoint(url(cfg), *credentials(cfg))


def argv(cfg: StackConfig) -> list[str]:
    return emulator_argv(data_dir(cfg), cfg.lakefs_port, *credentials(cfg), host=HOST)
