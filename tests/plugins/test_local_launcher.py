"""The local launcher runs a real step subprocess (torchrun for several ranks), streams it, fails and kills."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from plugins.launchers.base import StepFailed, launcher_name, make_launcher
from plugins.launchers.local import LocalLauncher, local_argv, local_env
from plugins.launchers.step import Resources, Step
from stack.process import pid_alive


class LineLog(logging.Logger):
    """A logger that keeps every formatted line, as the Airflow task log would show it."""

    def __init__(self) -> None:
        super().__init__("step-test")
        self.lines: list[str] = []

    def handle(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def probe(*args: str, processes: int = 1) -> Step:
    return Step(
        name="probe", module="tasks.common.distributed_probe", args=args,
        resources=Resources(processes_per_node=processes),
    )


def test_single_process_step_streams_its_output():
    log = LineLog()
    LocalLauncher().run(probe(), None, log)
    assert "rank 0/1: all-reduce of ranks = 0 (expected 0)" in log.lines
    assert log.lines[-1] == "step probe: finished"


def test_two_ranks_run_under_torchrun_and_all_reduce():
    log = LineLog()
    LocalLauncher().run(probe(processes=2), None, log)
    reduced = sorted(line for line in log.lines if "all-reduce" in line)
    assert reduced == ["rank 0/2: all-reduce of ranks = 1 (expected 1)", "rank 1/2: all-reduce of ranks = 1 (expected 1)"]


def test_argv_uses_torchrun_only_for_several_ranks():
    assert local_argv(probe(), "py") == ["py", "-m", "tasks.common.distributed_probe"]
    assert local_argv(probe(processes=3), "py")[:5] == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"
    ]


def test_non_zero_exit_fails_with_step_and_code():
    log = LineLog()
    with pytest.raises(StepFailed, match=r"step probe \(python -m tasks.common.distributed_probe\) exited with code 3"):
        LocalLauncher().run(probe("--fail"), None, log)
    assert any("all-reduce" in line for line in log.lines), "output before the failure must still reach the log"


def test_kill_stops_every_rank():
    launcher, log, outcome = LocalLauncher(), LineLog(), {}

    def run() -> None:
        try:
            launcher.run(probe("--sleep", "120", processes=2), None, log)
        except StepFailed as failure:
            outcome["error"] = str(failure)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while sum("started" in line for line in log.lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    rank_pids = [int(m.group(1)) for line in log.lines if (m := re.match(r"probe pid=(\d+) started", line))]
    assert len(rank_pids) == 2, log.lines
    launcher.kill()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert "killed by signal" in outcome["error"] or "exited with code" in outcome["error"]
    time.sleep(0.5)
    assert not [pid for pid in rank_pids if pid_alive(pid)], "a rank survived kill()"


def test_step_rejects_modules_outside_tasks():
    with pytest.raises(ValueError, match="must be a dotted module under tasks/"):
        Step(name="bad", module="os.system")


def test_resources_reject_bad_quantities():
    with pytest.raises(ValueError, match=r"Resources.memory='lots' is not a Kubernetes quantity"):
        Resources(memory="lots")
    with pytest.raises(ValueError, match=r"Resources.nodes=0 must be an integer >= 1"):
        Resources(nodes=0)


def test_unknown_launcher_is_named(monkeypatch):
    monkeypatch.setenv("LLMOPS_LAUNCHER", "slurm")
    with pytest.raises(ValueError, match="launcher 'slurm' is not one of local, kubernetes"):
        launcher_name()


def test_config_picks_local_by_default(monkeypatch):
    monkeypatch.delenv("LLMOPS_LAUNCHER", raising=False)
    assert isinstance(make_launcher(), LocalLauncher)


def test_secrets_reach_the_local_subprocess_env_but_not_the_step_repr():
    step = Step(name="probe", module="tasks.common.distributed_probe", secrets={"LLMOPS_TEST_SECRET": "v4lue"})
    assert "v4lue" not in repr(step)
    assert local_env(step)["LLMOPS_TEST_SECRET"] == "v4lue"


def test_a_child_left_holding_the_output_neither_hangs_the_step_nor_outlives_it():
    log = LineLog()
    started = time.monotonic()
    LocalLauncher().run(probe("--leave-child", "300"), None, log)
    assert time.monotonic() - started < 60, "the launcher waited for the orphan's end of the pipe"
    child = int(next(line for line in log.lines if line.startswith("probe left child")).split("pid=")[1])
    deadline = time.monotonic() + 15
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child), "the step's leftover child is still running"
