"""A lakeFS emulator subprocess for the data-layer tests, and a fresh protected repository per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from stack.lakefs_emulator.service import start_emulator
from stack.process import free_port
from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakeFSEndpoint]:
    root = tmp_path_factory.mktemp("lakefs-data-layer")
    process = start_emulator(root / "data", free_port(), "AKIADATALAYER", "data-layer-secret", run_dir=root / "run")
    yield LakeFSEndpoint(process.url, process.access_key_id, process.secret_access_key)
    process.stop()


@pytest.fixture()
def vrepo(endpoint: LakeFSEndpoint) -> VersionedRepo:
    repo = VersionedRepo(endpoint, f"data-{uuid.uuid4().hex[:10]}")
    repo.ensure(storage_namespace=f"local://{repo.repo_id}")
    return repo
