"""What the RAG tests share: a connection to the platform database (tests/conftest.py starts it) and a fresh
lakeFS repository per test."""

from __future__ import annotations

import uuid

import pytest

from tasks.common import platform_db
from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo


@pytest.fixture()
def conn(platform_dsn: str):
    with platform_db.connect(platform_dsn) as connection:
        yield connection


@pytest.fixture()
def repo(lakefs_endpoint: LakeFSEndpoint) -> VersionedRepo:
    return VersionedRepo(lakefs_endpoint, f"rag-{uuid.uuid4().hex[:10]}")
