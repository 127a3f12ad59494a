"""The `lakefs` SDK's own features, used as a task would use them, behave the same on the emulator and on a real
lakeFS: transactions (hidden branch, commit, merge back, tag), cherry-pick, the merge "no changes" rule,
uncommitted changes and repository properties."""

from __future__ import annotations

import uuid

import lakefs
import pytest
from lakefs import exceptions as errs
from lakefs.models import RepositoryProperties

from tasks.common.versioned_data import LakeFSEndpoint
from tests.contract.branches import committed_branch


def branch_gone(repo: lakefs.Repository, name: str) -> bool:
    try:
        repo.branch(name).get_commit()
    except errs.NotFoundException:
        return True
    return False


def test_transaction_works_on_a_hidden_branch_and_merges_back(repo: lakefs.Repository) -> None:
    main = repo.branch("main")
    with main.transact(commit_message="load batch", commit_metadata={"run_id": "r1"}) as tx:
        assert tx.get_commit().id == main.head.id
        assert [b.id for b in repo.branches()] == ["main"]
        assert tx.id in [b.id for b in repo.branches(show_hidden=True)]
        tx.object("data/a").upload(b"a")
        tx.object("scratch/tmp").upload(b"tmp")
        tx.reset_changes("common_prefix", "scratch/")
    merge, work = list(main.log(max_amount=2))
    assert merge.message == f"Merge transaction {tx.id} to branch" and len(merge.parents) == 2
    assert work.message == "load batch" and work.metadata["run_id"] == "r1"
    assert main.object("data/a").reader().read() == b"a" and not main.object("scratch/tmp").exists()
    assert branch_gone(repo, tx.id) and not list(repo.tags())


def test_transaction_that_changes_nothing_fails_with_no_changes(repo: lakefs.Repository) -> None:
    main = repo.branch("main")
    head = main.get_commit().id
    with pytest.raises(errs.TransactionException, match="no changes"):
        with main.transact(commit_message="nothing") as tx:
            tx.object("x").upload(b"x")
            tx.reset_changes()
    assert main.get_commit().id == head and branch_gone(repo, tx.id)


def test_transaction_fails_on_error_dirty_or_conflicting_destination(repo: lakefs.Repository) -> None:
    main = repo.branch("main")
    head = main.get_commit().id
    with pytest.raises(ValueError, match="task failed"):
        with main.transact(commit_message="t") as tx:
            tx.object("a").upload(b"tx")
            raise ValueError("task failed")
    assert main.get_commit().id == head and branch_gone(repo, tx.id)
    with pytest.raises(errs.TransactionException, match="dirty branch"):
        with main.transact(commit_message="t") as tx:
            tx.object("a").upload(b"tx")
            main.object("a").upload(b"main")
    assert main.get_commit().id == head and branch_gone(repo, tx.id)
    with pytest.raises(errs.TransactionException, match="Conflict"):
        with main.transact(commit_message="t") as tx:
            tx.object("a").upload(b"tx")
            committed = main.commit("main wrote a").get_commit().id
    assert main.get_commit().id == committed and branch_gone(repo, tx.id)


def test_transaction_tags_its_merge_and_refuses_an_existing_tag(repo: lakefs.Repository) -> None:
    main = repo.branch("main")
    with main.transact(commit_message="release", tag="v1") as tx:
        tx.object("a").upload(b"a")
    assert repo.tag("v1").get_commit().id == main.get_commit().id
    with pytest.raises(errs.ConflictException, match="tag already exists"):
        with main.transact(commit_message="again", tag="v1") as tx:
            tx.object("b").upload(b"b")
    # The SDK merges before it tags: the data landed, the tag still names the first release.
    assert main.object("b").exists() and repo.tag("v1").get_commit().id != main.get_commit().id
    assert branch_gone(repo, tx.id)


@pytest.mark.parametrize("hidden", [False, True])
def test_cherry_pick_keeps_message_and_metadata_and_records_its_origin(repo: lakefs.Repository,
                                                                        hidden: bool) -> None:
    main = repo.branch("main")
    before = main.get_commit().id
    feature = repo.branch("feature").create("main", hidden=hidden)
    feature.object("f").upload(b"f")
    origin = feature.commit("add f", metadata={"dag_id": "d"}).get_commit()
    picked = main.cherry_pick(feature.head)
    assert picked.message == "add f" and picked.parents == [before] and picked.id != origin.id
    assert picked.metadata == {"dag_id": "d", "cherry-pick-origin": origin.id,
                               "cherry-pick-committer": origin.committer}
    assert main.object("f").reader().read() == b"f"
    # lakeFS refuses only a commit that changed nothing; a change the branch already has is picked again.
    assert main.cherry_pick(origin.id).parents == [picked.id]
    empty = feature.commit("empty", allow_empty=True).get_commit()
    with pytest.raises(errs.BadRequestException, match="no changes"):
        main.cherry_pick(empty.id)


def test_merge_no_changes_is_decided_by_the_commit_graph(repo: lakefs.Repository) -> None:
    a = repo.branch("a").create("main")
    b = repo.branch("b").create("main")
    with pytest.raises(errs.BadRequestException, match="no changes"):
        a.merge_into(b, message="nothing to bring")
    forced = repo.commit(a.merge_into(b, message="recorded anyway", allow_empty=True)).get_commit()
    assert forced.parents == [a.get_commit().id, a.get_commit().id] and forced.message == "recorded anyway"
    # Same bytes committed on two branches: equal trees, yet the source is not in the destination's history.
    left = committed_branch(repo, "left", {"same": b"same bytes"})
    right = committed_branch(repo, "right", {"same": b"same bytes"})
    left_head, right_head = left.get_commit().id, right.get_commit().id
    merged = repo.commit(right.merge_into(left)).get_commit()
    assert merged.parents == [left_head, right_head] and list(repo.ref(left_head).diff(merged.id)) == []
    assert merged.metadata == {".lakefs.merge.strategy": "default"}  # graveler records the strategy used
    with pytest.raises(errs.BadRequestException, match="no changes"):
        right.merge_into(left)
    assert len(repo.commit(right.merge_into(left, allow_empty=True)).get_commit().parents) == 2


def test_uncommitted_removal_has_size_zero_and_committed_removal_its_size(repo: lakefs.Repository) -> None:
    branch = committed_branch(repo, "u", {"gone": b"12345", "kept": b"k"})
    before = branch.get_commit().id
    branch.object("gone").delete()
    branch.object("new").upload(b"abc")
    assert [(c.type, c.path, c.size_bytes) for c in branch.uncommitted()] == [
        ("removed", "gone", 0), ("added", "new", 3)]
    branch.commit("swap")
    assert [(c.type, c.path, c.size_bytes) for c in repo.ref(before).diff(branch, type="two_dot")] == [
        ("removed", "gone", 5), ("added", "new", 3)]


def test_repository_properties_match_what_the_sdk_builds(repo: lakefs.Repository,
                                                         target: tuple[LakeFSEndpoint, str]) -> None:
    endpoint, namespace = target
    created = repo.properties
    expected = RepositoryProperties(id=repo.id, creation_date=created.creation_date, default_branch="main",
                                    storage_namespace=created.storage_namespace, storage_id="")
    assert created == expected
    assert lakefs.Repository(repo.id, client=endpoint.client()).properties == expected
    name = f"contract-{uuid.uuid4().hex[:10]}"
    with pytest.raises(errs.BadRequestException):
        lakefs.Repository(name, client=endpoint.client()).create(
            storage_namespace=f"{namespace.rstrip('/')}/{name}", storage_id="no-such-store")
