"""A real Triton (the server bundled in nvidia-pytriton, started the way the stack starts it) on free ports in a
tmp home, with an empty model repository, and a small exported Llama to serve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack import triton
from stack.config import StackConfig
from stack.process import free_port, start_detached, stop_pid
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
    cfg = StackConfig(home=tmp_path_factory.mktemp("triton"), postgres_port=0, lakefs_port=0, mlflow_port=0,
                      triton_http_port=free_port(), triton_grpc_port=free_port(), triton_metrics_port=free_port(),
                      airflow_port=0)
    log = cfg.home / "triton.log"
    pid = start_detached(triton.argv(cfg), pid_file=cfg.home / "triton.pid", log_file=log, env=triton.env(cfg))
    control = TritonControl(triton.url(cfg))
    try:
        import time

        deadline = time.monotonic() + 120
        while not control.server_ready():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield TritonServer(triton.url(cfg), f"127.0.0.1:{cfg.triton_grpc_port}",
                           f"http://127.0.0.1:{cfg.triton_metrics_port}/metrics",
                           ModelRepository(triton.model_repository(cfg).parent), control, log)
    finally:
        stop_pid(pid)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
