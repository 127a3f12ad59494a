"""Benchmark the embedded stack: time to `up` (cold state dir), memory per component when idle, time to `down`.

Usage: .venv/bin/python bench/stack.py   (uses a fresh temporary LLMOPS_STACK_HOME and free ports)
Memory is PSS (proportional set size), so Postgres' shared buffers are not counted once per backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.components import COMPONENTS  # noqa: E402
from stack.config import DEFAULT_PORTS, StackConfig  # noqa: E402
from stack.process import _group_members, free_port  # noqa: E402


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().split(")")[-1].split()[1]) == pid:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def main() -> None:
    home = tempfile.mkdtemp(prefix="llmops-bench-stack-")
    env = {**os.environ, "LLMOPS_STACK_HOME": home, **{k: str(free_port()) for k in DEFAULT_PORTS}}
    os.environ.update({k: v for k, v in env.items() if k.startswith("LLMOPS_")})
    cfg = StackConfig.from_env()
    stack = [sys.executable, "-W", "ignore", "-m", "stack"]
    repo = Path(__file__).resolve().parents[1]
    began = time.monotonic()
    subprocess.run([*stack, "up"], env=env, cwd=repo, check=True, capture_output=True)
    up_seconds = time.monotonic() - began
    time.sleep(20)  # let the scheduler and api-server settle to their idle footprint
    rows = []
    for component in COMPONENTS:
        pid = component.pid(cfg)
        pids = {pid, *_group_members(os.getpgid(pid)), *children_of(pid)}
        rows.append((component.name, len(pids), sum(pss_kib(p) for p in pids) / 1024))
    began = time.monotonic()
    subprocess.run([*stack, "down"], env=env, cwd=repo, check=True, capture_output=True)
    down_seconds = time.monotonic() - began
    print("| component | processes | PSS MiB (idle) |\n|---|---|---|")
    for name, count, mib in rows:
        print(f"| {name} | {count} | {mib:.0f} |")
    print(f"| **total** | {sum(r[1] for r in rows)} | **{sum(r[2] for r in rows):.0f}** |")
    print(f"\nstack up (cold state dir): {up_seconds:.1f} s; stack down: {down_seconds:.1f} s")


if __name__ == "__main__":
    main()
