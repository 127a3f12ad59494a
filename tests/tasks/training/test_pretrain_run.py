"""The trainer for real on CPU (megatron-core, gloo, the lakeFS emulator): resume after kill -9 is exact, a
half-written checkpoint is ignored, TP=2 and DP=2 follow TP=1's loss curve, bad checkpoints are refused loudly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.common.versioned_data import LakeFSEndpoint
from tests.stack.harness import REPO
from tests.tasks.training.corpus import publish_tokenized

pytestmark = pytest.mark.slow
REPO_NAME = "pretrain-run"
STEP_LINE = re.compile(r"^step\s+(\d+)\s+loss\s+([0-9.]+)", re.MULTILINE)


@pytest.fixture(scope="module")
def corpus(lakefs_endpoint: LakeFSEndpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    return publish_tokenized(lakefs_endpoint, REPO_NAME, tmp_path_factory.mktemp("tokenized"))


def command(checkpoints: Path, cache: Path, *extra: str, ranks: int = 1) -> list[str]:
    launcher = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return [*launcher, "-m", "tasks.training.pretrain", "run", "--repo", REPO_NAME, "--preset", "tiny",
            "--steps", "24", "--micro-batch-size", "4", "--global-batch-size", "8", "--checkpoint-interval", "8",
            "--eval-interval", "8", "--eval-batches", "2", "--checkpoint-dir", str(checkpoints),
            "--cache-dir", str(cache), *extra]


def env(endpoint: LakeFSEndpoint) -> dict[str, str]:
    return {**os.environ, **endpoint.to_env(), "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore",
            "MLFLOW_TRACKING_URI": ""}


def train(endpoint: LakeFSEndpoint, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=env(endpoint), cwd=REPO, capture_output=True, text=True, timeout=600)


def losses(output: str) -> dict[int, float]:
    return {int(step): float(loss) for step, loss in STEP_LINE.findall(output)}


def test_kill_9_then_rerun_ends_at_the_uninterrupted_loss_and_ignores_a_half_written_checkpoint(
        lakefs_endpoint, corpus, tmp_path):
    cache = tmp_path / "cache"
    whole = train(lakefs_endpoint, *command(tmp_path / "whole", cache))
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    reference = losses(whole.stdout)
    assert sorted(reference) == list(range(1, 25)) and reference[24] < reference[1] - 1.0, "it did not learn"

    checkpoints = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        victim = subprocess.Popen(command(checkpoints, cache), env=env(lakefs_endpoint), cwd=REPO, stdout=out,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        while "step 8 committed" not in log.read_text():
            assert victim.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # the process and its workers, as a lost node would go
        victim.wait()
    last = max(int(p.parent.name.removeprefix("step-")) for p in checkpoints.glob("step-*/manifest.json"))
    assert last < 24, "the run finished before it could be killed"
    # a later save that died before its manifest: shards on disk, no commit marker
    crashed = checkpoints / f"step-{last + 4:08d}"
    crashed.mkdir()
    (crashed / "__0_0.distcp").write_bytes(b"torn")

    resumed = train(lakefs_endpoint, *command(checkpoints, cache))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"ignoring {crashed.name}, a save that never committed" in resumed.stdout
    assert f"step-{last:08d} at step {last}, {last * 8} samples consumed" in resumed.stdout
    after = losses(resumed.stdout)
    assert sorted(after) == list(range(last + 1, 25)), "steps were repeated or skipped"
    for step, loss in after.items():
        assert loss == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000016", "step-00000024"]  # keep=2, swept


@pytest.mark.parametrize("layout", [["--tensor-parallel", "2"], ["--data-parallel", "2"]], ids=["tp2", "dp2"])
def test_two_ranks_follow_the_single_rank_loss_curve(lakefs_endpoint, corpus, tmp_path, layout):
    cache = tmp_path / "cache"
    single = train(lakefs_endpoint, *command(tmp_path / "one", cache, "--steps", "12"))
    double = train(lakefs_endpoint, *command(tmp_path / "two", cache, "--steps", "12", *layout, ranks=2))
    assert single.returncode == 0 and double.returncode == 0, double.stdout[-3000:] + double.stderr[-3000:]
    one, two = losses(single.stdout), losses(double.stdout)
    assert sorted(two) == sorted(one) == list(range(1, 13))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step


def test_an_incompatible_checkpoint_is_refused_unless_restart_archives_it(lakefs_endpoint, corpus, tmp_path):
    cache, checkpoints = tmp_path / "cache", tmp_path / "ck"
    first = train(lakefs_endpoint, *command(checkpoints, cache, "--steps", "8"))
    assert first.returncode == 0, first.stderr[-3000:]
    other_batch = ("--steps", "8", "--global-batch-size", "16")
    refused = train(lakefs_endpoint, *command(checkpoints, cache, *other_batch))
    assert refused.returncode == 2
    assert "error: resume_policy: the latest checkpoint" in refused.stdout and "resume_policy=restart" in refused.stdout
    restarted = train(lakefs_endpoint, *command(checkpoints, cache, *other_batch, "--resume-policy", "restart"))
    assert restarted.returncode == 0, restarted.stdout[-3000:]
    assert "no committed checkpoint, starting at step 0" in restarted.stdout
    archived = list((checkpoints / "archive").glob("*/step-00000008/manifest.json"))
    assert len(archived) == 1, "the old checkpoint must be set aside, not deleted"


def test_committed_checkpoints_that_do_not_load_fail_loudly_instead_of_starting_over(lakefs_endpoint, corpus,
                                                                                      tmp_path):
    cache, checkpoints = tmp_path / "cache", tmp_path / "ck"
    assert train(lakefs_endpoint, *command(checkpoints, cache, "--steps", "8")).returncode == 0
    for shard in checkpoints.glob("step-*/*.distcp"):
        shard.write_bytes(b"bit rot")
    broken = train(lakefs_endpoint, *command(checkpoints, cache, "--steps", "16"))
    assert broken.returncode == 3
    assert "none loads" in broken.stdout and "refusing to start from step 0" in broken.stdout
    assert "step      1 " not in broken.stdout
