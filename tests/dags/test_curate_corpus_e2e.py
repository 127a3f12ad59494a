"""curate_corpus on the real stack, triggered through the REST API: publish, idempotent re-run, failed gate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stack import lakefs
from stack.airflow_api import AirflowClient
from tasks.common.versioned_data import VersionedRepo, run_branch_name
from tasks.curation.stages.pii import PLACEHOLDERS
from tests.stack.harness import REPO, RunningStack

pytestmark = pytest.mark.slow
CORPUS = "corpus-e2e"


@pytest.fixture(scope="module")
def landed(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample corpus generated and landed on lakeFS main, as the main job does it."""
    out = tmp_path_factory.mktemp("sample-corpus")
    env = {**running_stack.env, **lakefs.endpoint(running_stack.cfg).to_env(), "PYTHONPATH": str(REPO)}
    for argv in (["tasks.curation.sample_corpus", "--out", str(out)],
                 ["tasks.curation.steps", "land", "--repo", CORPUS, "--source-dir", str(out)]):
        subprocess.run([sys.executable, "-W", "ignore", "-m", *argv], env=env, cwd=REPO, check=True,
                       capture_output=True, timeout=300)
    return json.loads((out / "manifest.json").read_text())


def run_curation(stack: RunningStack, conf: dict) -> tuple[str, str, dict[str, str | None]]:
    client = AirflowClient.for_stack(stack.cfg)
    client.wait_for_dag("curate_corpus")
    run_id = client.trigger("curate_corpus", {"repo": CORPUS, **conf})
    state = client.wait("curate_corpus", run_id, timeout=900)
    return run_id, state, client.task_states("curate_corpus", run_id)


def rows(repo: VersionedRepo, ref: str, path: str) -> list[dict]:
    return [json.loads(line) for line in repo.get_object(ref, path).splitlines() if line.strip()]


def test_publish_then_rerun_then_failed_gate(running_stack: RunningStack, landed: dict):
    repo = VersionedRepo(lakefs.endpoint(running_stack.cfg), CORPUS)

    run_id, state, tasks = run_curation(running_stack, {})
    assert state == "success", tasks
    first = repo.head("main")
    published = repo.log("main", limit=1)[0].metadata
    assert published["run_id"] == run_id and published["dag_id"] == "curate_corpus"
    assert int(published["count.curated"]) > 1000 and int(published["count.read"]) == 1500 + len(landed["records"])

    # every planted dirty record: quarantined by the expected stage for the expected reason, or redacted
    quarantined = {}
    for path in repo.list_objects("main", "curated/quarantine/"):
        for entry in rows(repo, "main", path):
            quarantined[entry["id"]] = entry
    curated = {doc["id"]: doc for doc in rows(repo, "main", "curated/corpus.jsonl")}
    for record_id, expected in landed["records"].items():
        if expected["expect"] == "drop":
            entry = next((e for i, e in quarantined.items() if i == record_id or i.endswith("/" + record_id)), None)
            assert entry is not None, f"{record_id} was not quarantined"
            assert (entry["stage"], entry["reason"]) == (expected["stage"], expected["reason"]), record_id
        else:
            text = curated[record_id]["text"]
            for kind, count in expected["redact"].items():
                assert text.count(PLACEHOLDERS[kind]) == count, (record_id, kind)
            assert all(kept in text for kept in expected["must_keep"]), record_id
            assert not any(gone in text for gone in expected["must_not_contain"]), record_id
    assert repo.list_objects("main", "tokenized/train_text_document.bin")
    assert not repo.list_objects("main", "work/"), "run intermediates leaked onto main"

    # the Asset event carries the published commit
    client = AirflowClient.for_stack(running_stack.cfg)
    events = client._call("GET", "/assets/events", params={"source_dag_id": "curate_corpus", "source_run_id": run_id})
    assert [e["extra"]["commit_id"] for e in events["asset_events"]] == [first]

    # a re-triggered run over the same input publishes byte-identical data
    _, state, tasks = run_curation(running_stack, {})
    assert state == "success", tasks
    assert repo.diff(first, repo.head("main"), three_dot=False) == []

    # a gate failure (no German left after the quality filters) leaves main as it was, the branch to inspect
    head_before = repo.head("main")
    run_id, state, tasks = run_curation(running_stack, {"languages": ["de"]})
    assert state == "failed" and tasks["quality_gate"] == "failed", tasks
    assert tasks["publish"] == "upstream_failed"
    assert repo.head("main") == head_before
    branch = run_branch_name("curate_corpus", run_id)
    assert repo.branch_exists(branch)
    report = json.loads(repo.get_object(branch, "curated/gate.json"))
    assert report["success"] is False and "expect_table_row_count_to_be_between" in report["summary"]


def test_the_ray_executor_publishes_what_the_local_one_does(running_stack: RunningStack, landed: dict):
    """executor=ray on the stack (local Ray inside the step): every stage as one Ray Data pipeline, the same
    published corpus, quarantine and statistics as the local executor's run on the same input."""
    repo = VersionedRepo(lakefs.endpoint(running_stack.cfg), CORPUS)
    if not repo.list_objects("main", "curated/corpus.jsonl"):  # this test alone: publish a local run first
        _, state, tasks = run_curation(running_stack, {"executor": "local"})
        assert state == "success", tasks
    local_head = repo.head("main")

    run_id, state, tasks = run_curation(running_stack, {"executor": "ray"})
    assert state == "success", tasks
    assert tasks["curate_on_ray"] == "success" and tasks["dedupe"] == "skipped", tasks
    # corpus, quarantine, stats.json and the tokenised datasets: not one byte differs
    assert repo.diff(local_head, repo.head("main"), three_dot=False) == [], "ray published other data than local"
