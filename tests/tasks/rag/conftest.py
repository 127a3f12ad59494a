"""A real PostgreSQL 18 + pgvector (the embedded stack's own server code) for the RAG store tests, on a free port
in a tmp home, and the embedding model loaded once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack import postgres
from stack.config import StackConfig
from stack.process import free_port


@pytest.fixture(scope="session")
def platform_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = StackConfig(home=tmp_path_factory.mktemp("rag-postgres"), postgres_port=free_port(), lakefs_port=0,
                      mlflow_port=0, triton_http_port=0, triton_grpc_port=0, triton_metrics_port=0, airflow_port=0)
    postgres.initialise(cfg)
    postgres.start(cfg, cfg.home / "postgres.log")
    try:
        postgres.create_databases(cfg)
        yield postgres.dsn(cfg, "platform")
    finally:
        postgres.stop(cfg)
