"""The repository stands alone: a clone with nothing beside it passes the fast suite, and no tracked file
reaches outside the repository (CI's own `.ci/` may point at what CI keeps next to the clone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack.lakefs_emulator.test_openapi_conformance import SPEC_ENV

REPO = Path(__file__).resolve().parents[1]
THIS_TEST = Path(__file__).resolve().relative_to(REPO)
# Settings that point outside a clone: the outer run's Airflow home and faked connections, the spec path
# CI provides, a real lakeFS, pytest's own. A user with only the clone has none of them.
OUTER_SETTINGS = ("AIRFLOW", "LLMOPS_", "LAKECTL_", "PYTEST_", "PYTHONPATH")


def test_no_tracked_file_refers_outside_the_repository() -> None:
    found = subprocess.run(["git", "grep", "-n", "-e", r"\.\./shared", "--", ".", ":!.ci"],
                           cwd=REPO, capture_output=True, text=True)
    assert found.returncode == 1, found.stdout or found.stderr  # 1: no match


@pytest.mark.slow  # ~3 min on 2 cores: the fast suite once more; as `slow` the inner run can never select it
def test_a_clone_with_nothing_beside_it_passes_the_fast_suite(tmp_path: Path) -> None:
    clone = tmp_path / "llmops-platform"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUTER_SETTINGS)} | {"PYTHONPATH": str(clone)}
    suite = subprocess.run(
        # the existing venv's interpreter (no reinstall); --ignore too, so this test never runs itself
        # its own --basetemp: a second pytest session numbering dirs under /tmp/pytest-of-<user> would prune the
        # outer session's, which hold the shared stack's live Postgres data directory
        [sys.executable, "-m", "pytest", "-m", "not slow", "-p", "no:cacheprovider", f"--ignore={THIS_TEST}",
         f"--basetemp={tmp_path / 'inner-pytest'}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert suite.returncode == 0, suite.stdout[-6000:] + suite.stderr[-3000:]
    said = [line for line in suite.stdout.splitlines() if line.startswith("SKIPPED") and f"{SPEC_ENV} not set" in line]
    assert said, "the clone's pytest summary must say that the full-spec lakeFS check did not run"
