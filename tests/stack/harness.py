"""A handle on a stack the tests started: its config, its environment, its CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stack.components import COMPONENTS
from stack.config import DEFAULT_PORTS, StackConfig
from stack.process import _group_members, free_port

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


def our_pids(stack: RunningStack) -> set[int]:
    pids: set[int] = set()
    for component in COMPONENTS:
        pid = component.pid(stack.cfg)
        assert pid is not None, f"{component.name} has no live PID"
        pids |= {pid, *_group_members(os.getpgid(pid))}
    postmaster = next(c for c in COMPONENTS if c.name == "postgres").pid(stack.cfg)
    pids |= {int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == postmaster}
    return pids


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().split(")")[-1].split()[1])
    except OSError:
        return None


def step_pids(module: str, marker: str) -> list[int]:
    """A launcher's step processes: those running `python -m <module>` with `marker` somewhere in their command line
    (the only way to reach the process a task started, to kill it as a crash would)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if module.encode() in cmdline and marker.encode() in b" ".join(cmdline):
            pids.append(int(entry))
    return pids
