"""A fresh protected repository per data-layer test, on the session's lakeFS emulator."""

from __future__ import annotations

import uuid

import pytest

from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo


@pytest.fixture()
def vrepo(lakefs_endpoint: LakeFSEndpoint) -> VersionedRepo:
    repo = VersionedRepo(lakefs_endpoint, f"data-{uuid.uuid4().hex[:10]}")
    repo.ensure(storage_namespace=f"local://{repo.repo_id}")
    return repo
