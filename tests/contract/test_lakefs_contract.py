"""lakeFS behaviour the platform relies on; the same tests run against the emulator and a real lakeFS."""

from __future__ import annotations

import hashlib

import lakefs
import lakefs_sdk
import pytest
from lakefs import exceptions as errs

from tests.contract.branches import committed_branch


def test_checksums_are_hex_md5_and_reads_at_a_commit_are_stable(repo: lakefs.Repository) -> None:
    branch = committed_branch(repo, "w", {"a.txt": b"version 1"})
    commit_id = branch.get_commit().id
    assert branch.object("a.txt").stat().checksum == hashlib.md5(b"version 1").hexdigest()
    branch.object("a.txt").upload(b"version 2")
    branch.commit("v2")
    assert repo.ref(commit_id).object("a.txt").reader().read() == b"version 1"


def test_empty_commit_and_empty_merge_say_no_changes(repo: lakefs.Repository) -> None:
    branch = repo.branch("e").create("main")
    with pytest.raises(errs.BadRequestException):
        branch.commit("nothing staged")
    assert branch.commit("allowed", allow_empty=True).get_commit().message == "allowed"
    merged = committed_branch(repo, "m", {"x": b"x"})
    merged.merge_into(repo.branch("main"))
    with pytest.raises(errs.BadRequestException):
        merged.merge_into(repo.branch("main"))


def test_conflicting_merge_is_409_and_strategies_pick_a_side(repo: lakefs.Repository) -> None:
    left = committed_branch(repo, "left", {"f": b"left"})
    right = committed_branch(repo, "right", {"f": b"right", "g": b"g"})
    left.merge_into(repo.branch("main"))
    with pytest.raises(errs.ConflictException):
        right.merge_into(repo.branch("main"))
    keep = repo.branch("keep").create("main")
    right.merge_into(keep, strategy="dest-wins")
    assert keep.object("f").reader().read() == b"left"
    right.merge_into(repo.branch("main"), strategy="source-wins")
    assert repo.ref("main").object("f").reader().read() == b"right"


def test_if_none_match_star_is_412(repo: lakefs.Repository) -> None:
    branch = repo.branch("x").create("main")
    branch.object("once").upload(b"1", mode="xb")
    with pytest.raises(errs.ObjectExistsException):
        branch.object("once").upload(b"2", mode="xb")


def test_missing_refs_and_objects_are_404(repo: lakefs.Repository) -> None:
    with pytest.raises(errs.NotFoundException):
        repo.ref("no-such-branch").get_commit()
    with pytest.raises(errs.ObjectNotFoundException):
        repo.ref("main").object("missing").reader().read()
    with pytest.raises(errs.NotFoundException):
        repo.branch("new").create("no-such-source")


def test_three_dot_diff_shows_only_the_sources_changes(repo: lakefs.Repository) -> None:
    feature = repo.branch("feature").create("main")
    committed_branch(repo, "other", {"o": b"o"}).merge_into(repo.branch("main"))
    feature.object("f").upload(b"f")
    feature.commit("f")
    assert [(c.type, c.path) for c in repo.ref("main").diff(feature)] == [("added", "f")]
    assert {c.path for c in repo.ref("main").diff(feature, type="two_dot")} == {"f", "o"}


def test_revert_tags_and_protection(repo: lakefs.Repository) -> None:
    branch = committed_branch(repo, "r", {"a": b"a"})
    first = branch.get_commit().id
    repo.tag("release-1").create(first)
    with pytest.raises(errs.ConflictException):
        repo.tag("release-1").create("main")
    branch.object("a").delete()
    branch.commit("remove a")
    branch.revert("r")
    assert branch.object("a").reader().read() == b"a"
    api = repo._client.sdk_client.repositories_api  # noqa: SLF001 - the SDK has no wrapper for this call
    api.set_branch_protection_rules(repo.id, [lakefs_sdk.BranchProtectionRule(pattern="main")])
    with pytest.raises((errs.ForbiddenException, errs.PermissionException)):
        repo.branch("main").object("direct").upload(b"x")
    branch.merge_into(repo.branch("main"))
    api.set_branch_protection_rules(repo.id, [])


def test_listing_paginates(repo: lakefs.Repository) -> None:
    branch = repo.branch("many").create("main")
    for i in range(7):
        branch.object(f"p/{i:02d}").upload(b".")
    client = repo._client.sdk_client  # noqa: SLF001
    page = client.objects_api.list_objects(repo.id, "many", amount=3, prefix="p/")
    assert [o.path for o in page.results] == ["p/00", "p/01", "p/02"] and page.pagination.has_more
    assert len(list(branch.objects(prefix="p/"))) == 7
