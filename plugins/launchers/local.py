"""Run a step as a subprocess of the project venv (torchrun for several ranks), output into the task log."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from plugins.launchers.base import REPO_ROOT, StepFailed
from plugins.launchers.step import Step

KILL_GRACE_SECONDS = 10


def local_argv(step: Step, python: str = sys.executable) -> list[str]:
    """All nodes' ranks run on this machine: torchrun standalone when the world is larger than one."""
    world = step.resources.world_size
    if world == 1:
        return [python, *step.command()]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", *step.command()]


def local_env(step: Step) -> dict[str, str]:
    """This process's env plus the step's env and secrets; our code importable from the repo root."""
    return {
        **os.environ,
        **step.env,
        **step.secrets,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }


class LocalLauncher:
    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self._proc: subprocess.Popen[str] | None = None

    def run(self, step: Step, context: Any, log: logging.Logger) -> None:
        argv = local_argv(step, self.python)
        env = local_env(step)
        log.info("step %s: starting %s", step.name, " ".join(argv))
        self._proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own group, so kill() reaches torchrun's ranks too
        )
        reader = threading.Thread(target=_stream, args=(self._proc.stdout, log), daemon=True)
        reader.start()
        code = self._proc.wait()
        # Children the step left behind (e.g. a multiprocessing manager orphaned by a kill -9) share its process
        # group and would hold the output pipe open forever: the step is over, so its group goes too.
        _stop_group(self._proc.pid)
        reader.join()
        if code != 0:
            reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise StepFailed(f"step {step.name} (python -m {step.module}) {reason}; its output is above")
        log.info("step %s: finished", step.name)

    def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _stream(output: IO[str], log: logging.Logger) -> None:
    for line in output:
        log.info("%s", line.rstrip("\n"))


def _stop_group(pgid: int) -> None:
    """SIGTERM what is left of the group, SIGKILL after the grace period."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
