"""The data layer: run branches, lineage commits, write-audit-publish, idempotent retries, clear errors."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from tasks.common.versioned_data import (
    BRANCH_RULE,
    InvalidNameError,
    LakeFSEndpoint,
    Lineage,
    MergeConflictError,
    ProtectedBranchError,
    RefNotFoundError,
    ValidationFailedError,
    VersionedDataError,
    VersionedRepo,
    run_branch_name,
)

LINEAGE = Lineage(dag_id="curate", run_id="manual__2026-11-25T10:00:00+00:00", task_id="dedupe",
                  input_commit="abc123", counts={"kept": 2, "dropped": 1})


def test_run_branch_names_are_valid_short_deterministic_and_distinct() -> None:
    name = run_branch_name("curate", "manual__2026-11-25T10:00:00+00:00")
    assert BRANCH_RULE.match(name) and len(name) <= 70
    assert name == run_branch_name("curate", "manual__2026-11-25T10:00:00+00:00")
    assert run_branch_name("curate", "a/b") != run_branch_name("curate", "a.b")  # same slug, other run
    assert BRANCH_RULE.match(run_branch_name("ünïcode dag", "---"))


def test_endpoint_from_env_names_what_is_missing() -> None:
    with pytest.raises(VersionedDataError, match="LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"):
        LakeFSEndpoint.from_env({"LAKECTL_SERVER_ENDPOINT_URL": "http://x",
                                 "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": "k"})
    endpoint = LakeFSEndpoint.from_env({"LAKECTL_SERVER_ENDPOINT_URL": "http://x/",
                                        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": "k",
                                        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": "hunter2"})
    assert endpoint.url == "http://x" and "hunter2" not in repr(endpoint)


def test_write_audit_publish_merges_on_success_and_deletes_branch(vrepo: VersionedRepo) -> None:
    branch = vrepo.open_run_branch(LINEAGE.dag_id, LINEAGE.run_id)
    vrepo.put_object(branch, "curated/part-0.jsonl", b'{"text": "a"}\n')
    commit_id = vrepo.commit(branch, "dedupe", LINEAGE)
    assert vrepo.log(commit_id, limit=1)[0].metadata["count.kept"] == "2"
    merged = vrepo.publish(branch, validate=lambda commit: [], lineage=LINEAGE)
    assert vrepo.get_object("main", "curated/part-0.jsonl") == b'{"text": "a"}\n'
    assert not vrepo.branch_exists(branch)
    assert vrepo.log(merged, limit=1)[0].metadata["source_commit"] == commit_id
    assert vrepo.publish(branch, validate=lambda commit: ["not called"], lineage=LINEAGE) == merged  # retry


def test_failed_validation_leaves_main_untouched_and_branch_inspectable(vrepo: VersionedRepo) -> None:
    main_before = vrepo.head("main")
    branch = vrepo.open_run_branch("curate", "run-bad")
    vrepo.put_object(branch, "curated/bad.jsonl", b"not json")
    vrepo.commit(branch, "bad data", LINEAGE)
    with pytest.raises(ValidationFailedError, match=f"{branch}.*line 1 is not JSON") as failure:
        vrepo.publish(branch, validate=lambda commit: ["curated/bad.jsonl line 1 is not JSON"], lineage=LINEAGE)
    assert vrepo.head("main") == main_before
    assert vrepo.get_object(failure.value.commit_id, "curated/bad.jsonl") == b"not json"


def test_retried_task_reuses_branch_keeps_staged_data_and_does_not_duplicate_commits(vrepo: VersionedRepo) -> None:
    branch = vrepo.open_run_branch("curate", "retry-run")
    vrepo.put_object(branch, "a.txt", b"a")  # first attempt crashes after staging
    assert vrepo.open_run_branch("curate", "retry-run") == branch
    assert vrepo.list_objects(branch) == ["a.txt"]
    vrepo.put_object(branch, "a.txt", b"a")
    first = vrepo.commit(branch, "attempt 2", LINEAGE)  # crashes after commit
    vrepo.put_object(branch, "a.txt", b"a")
    assert vrepo.commit(branch, "attempt 3", LINEAGE) == first
    assert [c.message for c in vrepo.log(branch)][:2] == ["attempt 2", "Repository created"]


def test_parquet_at_a_commit_id_reads_with_pandas_through_lakefs_spec(vrepo: VersionedRepo) -> None:
    branch = vrepo.open_run_branch("curate", "parquet")
    buffer = io.BytesIO()
    pd.DataFrame({"doc": ["a", "b"], "tokens": [3, 5]}).to_parquet(buffer)
    vrepo.put_object(branch, "tables/docs.parquet", buffer.getvalue())
    commit_id = vrepo.commit(branch, "table", LINEAGE)
    vrepo.put_object(branch, "tables/docs.parquet", b"overwritten later")
    frame = pd.read_parquet(f"lakefs://{vrepo.repo_id}/{commit_id}/tables/docs.parquet",
                            storage_options=vrepo.endpoint.storage_options())
    assert frame["tokens"].tolist() == [3, 5]


def test_errors_name_repo_ref_and_path(vrepo: VersionedRepo) -> None:
    with pytest.raises(RefNotFoundError, match=rf"{vrepo.repo_id}.*'main'.*'missing.txt'"):
        vrepo.get_object("main", "missing.txt")
    with pytest.raises(RefNotFoundError, match="no-such-ref"):
        vrepo.head("no-such-ref")
    with pytest.raises(InvalidNameError, match="'bad/name'"):
        vrepo.create_branch("bad/name", "main")
    with pytest.raises(InvalidNameError, match="'Bad_Repo'"):
        VersionedRepo(vrepo.endpoint, "Bad_Repo").ensure("local://x")
    with pytest.raises(ProtectedBranchError, match="main"):
        vrepo.put_object("main", "direct.txt", b"x")


def test_conflicting_merge_names_paths_and_strategies_resolve(vrepo: VersionedRepo) -> None:
    one, two = vrepo.open_run_branch("d", "one"), vrepo.open_run_branch("d", "two")
    for branch, content in ((one, b"1"), (two, b"2")):
        vrepo.put_object(branch, "shared.txt", content)
        vrepo.commit(branch, "write", LINEAGE)
    vrepo.merge(one, "main")
    with pytest.raises(MergeConflictError, match="shared.txt") as conflict:
        vrepo.merge(two, "main")
    assert conflict.value.paths == ["shared.txt"]
    vrepo.merge(two, "main", strategy="source-wins")
    assert vrepo.get_object("main", "shared.txt") == b"2"
    assert [c.path for c in vrepo.diff(one, "main", three_dot=False)] == ["shared.txt"]


def test_tags_are_idempotent_and_revert_undoes_a_publish(vrepo: VersionedRepo) -> None:
    branch = vrepo.open_run_branch("d", "tagged")
    vrepo.put_object(branch, "x.txt", b"x")
    vrepo.commit(branch, "x", LINEAGE)
    merged = vrepo.publish(branch, validate=lambda commit: [], lineage=LINEAGE)
    assert vrepo.tag("dataset-v1", merged) == vrepo.tag("dataset-v1", "main") == merged
    fix = vrepo.create_branch("fix-revert", "main")
    vrepo.revert(fix, merged, parent_number=1)
    vrepo.merge(fix, "main")
    assert vrepo.list_objects("main") == [] and vrepo.get_object("dataset-v1", "x.txt") == b"x"
