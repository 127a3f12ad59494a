"""A handle on a stack the tests started: its config, its environment, its CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stack.config import DEFAULT_PORTS, StackConfig
from stack.process import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningStack:
    cfg: StackConfig
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-W", "ignore", "-m", "stack", *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )


def stack_env(home: Path) -> dict[str, str]:
    ports = {setting: str(free_port()) for setting in DEFAULT_PORTS}
    return {**os.environ, "LLMOPS_STACK_HOME": str(home), **ports}


