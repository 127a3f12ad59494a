"""The whole embedded stack, brought up once per test session on free ports in a tmp home, and torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stack.config import StackConfig
from tests.stack.harness import RunningStack, stack_env


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = stack_env(tmp_path_factory.mktemp("stack-home"))
    saved = {k: os.environ.get(k) for k in env if k.startswith("LLMOPS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("LLMOPS_")})
    try:
        stack = RunningStack(StackConfig.from_env(), env)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    started = stack.cli("up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        stack.cli("down")
