"""Contract targets: the emulator always; a real lakeFS too when LAKECTL_SERVER_ENDPOINT_URL is set
(LAKECTL_CREDENTIALS_* for its keys, LAKEFS_CONTRACT_STORAGE_NAMESPACE for where test repos may live)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import lakefs
import pytest

from tasks.common.versioned_data import ENV_URL, LakeFSEndpoint


@pytest.fixture(params=["emulator", "real-lakefs"])
def target(request: pytest.FixtureRequest) -> tuple[LakeFSEndpoint, str]:
    if request.param == "real-lakefs":
        if not os.environ.get(ENV_URL):
            pytest.skip(f"{ENV_URL} not set: no real lakeFS to check the contract against")
        return LakeFSEndpoint.from_env(), os.environ.get("LAKEFS_CONTRACT_STORAGE_NAMESPACE", "local://contract")
    return request.getfixturevalue("lakefs_endpoint"), "local://contract"


@pytest.fixture()
def repo(target: tuple[LakeFSEndpoint, str]) -> Iterator[lakefs.Repository]:
    endpoint, namespace = target
    name = f"contract-{uuid.uuid4().hex[:10]}"
    created = lakefs.Repository(name, client=endpoint.client()).create(
        storage_namespace=f"{namespace.rstrip('/')}/{name}")
    yield created
    created.delete()
