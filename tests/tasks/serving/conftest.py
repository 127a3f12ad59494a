"""A real Triton (the server bundled in nvidia-pytriton, started the way the stack starts it) on free ports in a
tmp home, with an empty model repository, and a small exported Llama to serve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack import triton
from tasks.serving.client import TritonControl
from tasks.serving.repository import ModelRepository
from tests.tasks.serving import models


@dataclass(frozen=True)
class TritonServer:
    http: str
    grpc: str
    metrics: str
    repository: ModelRepository
    control: TritonControl
    log: Path


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with triton.standalone(tmp_path_factory.mktemp("triton")) as server:
        yield TritonServer(server.http, server.grpc, server.metrics, ModelRepository(server.repository_root),
                           TritonControl(server.http), server.log)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
