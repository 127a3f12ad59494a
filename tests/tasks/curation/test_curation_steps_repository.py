"""curate_corpus's first curation task refuses a repository that does not exist instead of creating it;
the land step is what creates one."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tasks.common.versioned_data import LakeFSEndpoint, RefNotFoundError, VersionedRepo
from tasks.curation.steps import RepositoryNotFoundError, land, open_run


def test_a_missing_repository_is_refused_by_name_and_not_created(lakefs_endpoint: LakeFSEndpoint) -> None:
    repo = f"typo-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RepositoryNotFoundError, match=rf"lakeFS repository '{repo}' does not exist .* land --repo {repo}"):
        open_run(lakefs_endpoint, repo, "curate_corpus", "manual__1")
    with pytest.raises(RefNotFoundError):
        assert VersionedRepo(lakefs_endpoint, repo).default_branch


def test_land_creates_the_repository_and_a_run_opens_on_it(lakefs_endpoint: LakeFSEndpoint, tmp_path: Path) -> None:
    repo = f"landed-{uuid.uuid4().hex[:8]}"
    (tmp_path / "a.txt").write_text("some raw text")
    landed = land(lakefs_endpoint, repo, tmp_path, "raw/")
    run = open_run(lakefs_endpoint, repo, "curate_corpus", "manual__1")
    assert run["repo"] == repo and run["input_commit"] == landed
