"""reindex_rag on the real stack through the REST API: a bad Param stops before embedding; a first run builds the
index; after records change, go and arrive only the diff is embedded and removed documents are gone; a re-run is a
no-op; a full rebuild with another chunker swaps in atomically while a reader watches; a rebuild killed with -9 and
retried by Airflow resumes and ends with exactly the rows of the incrementally maintained index."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest

from stack import lakefs, postgres
from stack.airflow_api import AirflowClient
from tests.stack.harness import RunningStack, step_pids
from tests.tasks.rag.corpus import publish_corpus, sample_records

pytestmark = pytest.mark.slow
DAG = "reindex_rag"
REPO_NAME = "rag-e2e"
INDEX = "rag_e2e"


@pytest.fixture(scope="module")
def client(running_stack: RunningStack):
    client = AirflowClient.for_stack(running_stack.cfg)
    client.wait_for_dag(DAG)
    yield client
    # paused again, so a curated-corpus event of another test does not start a reindex of its corpus
    client._call("PATCH", f"/dags/{DAG}", json={"is_paused": True})


def run(client: AirflowClient, conf: dict) -> tuple[str, str, dict]:
    run_id = client.trigger(DAG, {"repo": REPO_NAME, "index": INDEX, **conf})
    return run_id, client.wait(DAG, run_id, timeout=600), client.task_states(DAG, run_id)


def published(client: AirflowClient, run_id: str) -> dict:
    events = client._call("GET", "/assets/events", params={"source_dag_id": DAG, "source_run_id": run_id})
    assert len(events["asset_events"]) == 1
    return events["asset_events"][0]["extra"]


def test_incremental_reindex_then_atomic_full_rebuild(client: AirflowClient, running_stack: RunningStack):
    endpoint, dsn = lakefs.endpoint(running_stack.cfg), postgres.dsn(running_stack.cfg, "platform")
    records = sample_records(25)
    v1 = publish_corpus(endpoint, REPO_NAME, records[:24], "v1")

    run_id, state, tasks = run(client, {"data_commit": v1, "chunker": "pages"})
    assert state == "failed" and tasks["validate"] == "failed" and tasks["reindex"] == "upstream_failed", tasks
    assert "chunker 'pages' is not configured in rag.yaml; choose one of sections, tokens" in \
        client.task_log(DAG, run_id, "validate")

    run_id, state, tasks = run(client, {"data_commit": v1})
    assert state == "success", tasks
    first = published(client, run_id)
    assert (first["version"], first["commit_id"], first["last_refresh"]["mode"]) == (1, v1, "full")
    assert first["rows"] == first["last_refresh"]["chunks_embedded"] > 24

    changed = {**records[0], "text": records[0]["text"] + "\n\nZebra migration patterns are documented here."}
    removed, added = records[1], records[24]
    v2 = publish_corpus(endpoint, REPO_NAME, [changed, *records[2:24], added], "v2")
    run_id, state, tasks = run(client, {})  # no data_commit: the head of main
    assert state == "success", tasks
    second = published(client, run_id)
    assert (second["version"], second["commit_id"], second["last_refresh"]["mode"]) == (1, v2, "incremental")
    assert 1 <= second["last_refresh"]["chunks_embedded"] <= 4, "only the changed and added documents' new chunks"
    assert "{'docs_added': 1, 'docs_changed': 1, 'docs_removed': 1}" in client.task_log(DAG, run_id, "reindex")
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {INDEX} WHERE doc_id = %s", (removed["id"],)).fetchone()[0] == 0
        assert conn.execute(f"SELECT count(*) FROM {INDEX} WHERE doc_id = %s", (added["id"],)).fetchone()[0] >= 1

    run_id, state, tasks = run(client, {"data_commit": v2})  # a retry of the same commit changes nothing
    assert state == "success", tasks
    assert published(client, run_id)["rows"] == second["rows"]
    assert "'mode': 'unchanged'" in client.task_log(DAG, run_id, "reindex")

    counts: list[int] = []
    done = threading.Event()

    def reader() -> None:
        with psycopg.connect(dsn, autocommit=True) as watcher:
            while not done.is_set():
                counts.append(watcher.execute(f"SELECT count(*) FROM {INDEX}").fetchone()[0])
                done.wait(0.05)

    watching = threading.Thread(target=reader)
    watching.start()
    try:
        run_id, state, tasks = run(client, {"full_rebuild": True, "chunker": "sections"})
    finally:
        done.set()
        watching.join()
    assert state == "success", tasks
    rebuilt = published(client, run_id)
    assert (rebuilt["version"], rebuilt["commit_id"], rebuilt["chunker"]) == (2, v2, "sections(max_tokens=200)")
    assert set(counts) == {second["rows"], rebuilt["rows"]}, "readers saw the old version, then the new, nothing else"
    with psycopg.connect(dsn) as conn:
        states = dict(conn.execute("SELECT version, state FROM rag_indexes WHERE index_name = %s", (INDEX,)))
    assert states == {1: "retired", 2: "live"}

    # kill -9 a full rebuild mid-way (slices of 16 chunks at batch size 2); Airflow's retry resumes it
    with psycopg.connect(dsn) as conn:
        incremental = {h for (h,) in conn.execute(f"SELECT chunk_hash FROM {INDEX}_v1")}
    run_id = client.trigger(DAG, {"repo": REPO_NAME, "index": INDEX, "full_rebuild": True, "batch_size": 2})
    deadline = time.monotonic() + 300
    while building_rows(dsn, version=3) < 16:
        assert time.monotonic() < deadline and client.run_state(DAG, run_id) not in ("success", "failed")
        time.sleep(0.2)
    victims = step_pids("tasks.rag.steps", INDEX)
    assert victims, "no reindex process to kill"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert client.wait(DAG, run_id, timeout=600) == "success", client.task_states(DAG, run_id)
    assert "killed by signal 9" in client.task_log(DAG, run_id, "reindex", 1)
    assert "resuming the unfinished build of version 3" in client.task_log(DAG, run_id, "reindex", 2)
    assert published(client, run_id)["version"] == 3
    with psycopg.connect(dsn) as conn:
        assert {h for (h,) in conn.execute(f"SELECT chunk_hash FROM {INDEX}")} == incremental


def building_rows(dsn: str, version: int) -> int:
    """Rows in a version's table while it is being built (0 until the table exists)."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{INDEX}_v{version}",)).fetchone()[0]
        return conn.execute(f"SELECT count(*) FROM {INDEX}_v{version}").fetchone()[0] if exists else 0
