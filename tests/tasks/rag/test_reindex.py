"""Reindexing on a real PostgreSQL + pgvector and a real lakeFS emulator with the real embedding model: only the
diff is embedded, removed documents are never returned, retries do not duplicate, a full rebuild swaps atomically
and a failed or crashed one leaves the old version serving."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import replace

import psycopg
import pytest

from tasks.common import platform_db
from tasks.rag import config as rag_config
from tasks.rag import steps, store
from tasks.rag.chunking import Document
from tasks.rag.embedding import Embedder
from tasks.rag.reindex import EvaluationFailedError, reindex
from tasks.rag.retrieve import retrieve
from tasks.rag.steps import chunker_for
from tests.tasks.rag.corpus import index_name, publish_corpus, sample_records

CFG = rag_config.load()


@pytest.fixture(scope="module")
def model() -> Embedder:
    return Embedder(CFG.embedding.model, CFG.embedding.dimensions, CFG.embedding.batch_size)


class FailingAfter:
    """The real model, failing on its n-th encode call: a crash in the middle of embedding."""

    def __init__(self, model: Embedder, calls: int) -> None:
        self.model, self.calls = model, calls

    def encode(self, texts, progress=None):
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError("simulated crash while embedding")
        return self.model.encode(texts, progress)


def doc_hashes(conn: psycopg.Connection, table: str, doc_id: str) -> set[str]:
    return store.hashes(conn, table, [doc_id])


def test_incremental_embeds_only_the_diff_removes_deleted_and_retries_are_idempotent(conn, repo, model):
    name, chunker = index_name(), chunker_for(CFG)
    records = sample_records(25)
    v1 = publish_corpus(repo.endpoint, repo.repo_id, records[:24], "v1")
    first = reindex(conn, repo, v1, name, CFG, chunker, lambda: model)
    every_chunk = chunker.chunk_all(Document(r["id"], r["text"], r["source"]) for r in records[:24])
    assert (first.mode, first.version, first.rows, first.chunks_embedded) == ("full", 1, len(every_chunk),
                                                                              len(every_chunk))
    serving = store.live(conn, name)
    assert (serving.commit_id, serving.embedding_model, serving.chunker) == (v1, "all-MiniLM-L6-v2",
                                                                              "token_window(size=128,overlap=32)")

    changed = {**records[0], "text": records[0]["text"] + "\n\nZebra migration patterns are documented here."}
    removed, added = records[1], records[24]
    v2 = publish_corpus(repo.endpoint, repo.repo_id, [changed, *records[2:24], added], "v2")
    kept_of_changed = doc_hashes(conn, serving.table_name, changed["id"])
    second = reindex(conn, repo, v2, name, CFG, chunker, lambda: model)
    new_chunks = chunker.chunk(Document(changed["id"], changed["text"], changed["source"])) + chunker.chunk(
        Document(added["id"], added["text"], added["source"]))
    expected_embedded = [c for c in new_chunks if c.content_hash not in kept_of_changed]
    assert (second.mode, second.version, second.base_commit) == ("incremental", 1, v1)
    assert (second.docs_added, second.docs_changed, second.docs_removed) == (1, 1, 1)
    assert second.chunks_embedded == len(expected_embedded) < len(every_chunk) // 4, "only the diff is embedded"
    assert doc_hashes(conn, serving.table_name, removed["id"]) == set(), "deletes really remove"
    assert store.live(conn, name).commit_id == v2

    query = model.encode([removed["text"]])[0]
    assert removed["id"] not in {hit.doc_id for hit in retrieve(conn, name, query, 20, CFG.index)}
    top = retrieve(conn, name, model.encode(["Zebra migration patterns"])[0], 3, CFG.index)
    assert top[0].doc_id == changed["id"] and top[0].score >= top[-1].score

    rows_before = store.hashes(conn, serving.table_name)
    again = reindex(conn, repo, v2, name, CFG, chunker, lambda: model)
    assert (again.mode, again.rows, again.chunks_embedded) == ("unchanged", second.rows, 0)

    # a crash mid-way changes nothing; the retry ends with the rows an uninterrupted run makes
    edited = {**records[3], "text": records[3]["text"] + "\n\nOwls are documented here too."}
    v3_records = [changed, edited, *records[4:24], added]
    v3 = publish_corpus(repo.endpoint, repo.repo_id, v3_records, "v3")
    with pytest.raises(RuntimeError, match="simulated crash"):
        reindex(conn, repo, v3, name, CFG, chunker, lambda: FailingAfter(model, 0))
    assert store.hashes(conn, serving.table_name) == rows_before and store.live(conn, name).commit_id == v2
    third = reindex(conn, repo, v3, name, CFG, chunker, lambda: model)
    assert (third.docs_changed, third.docs_removed) == (1, 1) and 1 <= third.chunks_embedded <= 2
    uninterrupted = {c.content_hash for r in v3_records
                     for c in chunker.chunk(Document(r["id"], r["text"], r["source"]))}
    assert store.hashes(conn, serving.table_name) == uninterrupted
    refreshes = conn.execute("SELECT mode, commit_id FROM rag_index_refreshes WHERE index_name = %s ORDER BY id",
                             (name,)).fetchall()
    assert refreshes == [("full", v1), ("incremental", v2), ("incremental", v3)]


def test_full_rebuild_swaps_atomically_and_failures_leave_the_old_version_serving(conn, repo, model, platform_dsn):
    name = index_name()
    v1 = publish_corpus(repo.endpoint, repo.repo_id, sample_records(20), "v1")
    old = reindex(conn, repo, v1, name, CFG, chunker_for(CFG), lambda: model)

    strict = replace(CFG, evaluation=replace(CFG.evaluation, min_recall=1.01))
    with pytest.raises(EvaluationFailedError, match=r"version 2 not swapped in: recall probe 1.000 .* below "
                                                    r"evaluation.min_recall 1.01; the live version keeps serving"):
        reindex(conn, repo, v1, name, strict, chunker_for(strict), lambda: model, full_rebuild=True)
    assert store.live(conn, name).version == 1
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == old.rows

    sections = replace(rag_config.load("sections"), embedding=replace(CFG.embedding, batch_size=2))  # 16 a slice
    with pytest.raises(RuntimeError, match="simulated crash"):
        reindex(conn, repo, v1, name, sections, chunker_for(sections), lambda: FailingAfter(model, 1))
    assert store.live(conn, name).version == 1, "a crash mid-rebuild leaves the old version serving"
    crashed = store.unfinished_build(conn, name, v1)
    assert crashed.version == 3 and len(store.hashes(conn, crashed.table_name)) == 16

    counts: list[int] = []
    done = threading.Event()

    def reader() -> None:
        with psycopg.connect(platform_dsn, autocommit=True) as watcher:
            while not done.is_set():
                counts.append(watcher.execute(f"SELECT count(*) FROM {name}").fetchone()[0])

    watching = threading.Thread(target=reader)
    watching.start()
    try:
        rebuilt = reindex(conn, repo, v1, name, sections, chunker_for(sections), lambda: model)
    finally:
        done.set()
        watching.join()
    assert (rebuilt.mode, rebuilt.version) == ("full", 3)
    assert rebuilt.chunks_embedded == rebuilt.rows - 16, "the retry resumed the crashed build"
    assert rebuilt.reason.startswith("live version 1 was built from") and "sections(max_tokens=200)" in rebuilt.reason
    assert counts and set(counts) <= {old.rows, rebuilt.rows}, "readers saw only the old or the new version"
    states = dict(conn.execute("SELECT version, state FROM rag_indexes WHERE index_name = %s", (name,)).fetchall())
    assert states == {1: "retired", 2: "dropped", 3: "live"}, "the failed build is dropped, the old one kept"
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == rebuilt.rows


def test_halfvec_retrieval_with_a_source_filter_logs_short_results(conn, repo, model, caplog):
    name = index_name()
    records = sample_records(20)
    halfvec = replace(CFG, index=replace(CFG.index, storage="halfvec"))
    commit = publish_corpus(repo.endpoint, repo.repo_id, records, "v1")
    built = reindex(conn, repo, commit, name, halfvec, chunker_for(halfvec), lambda: model)
    assert store.live(conn, name).storage == "halfvec" and built.recall >= 0.95

    source = records[0]["source"]
    in_source = conn.execute(f"SELECT count(*) FROM {name} WHERE source = %s", (source,)).fetchone()[0]
    query = model.encode([records[-1]["text"]])[0]  # a document of another source is the nearest overall
    with caplog.at_level(logging.WARNING, logger="tasks.rag.retrieve"):
        hits = retrieve(conn, name, query, in_source + 5, halfvec.index, source=source)
    assert len(hits) == in_source and {hit.source for hit in hits} == {source}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert f"returned {in_source} of k={in_source + 5} rows for source={source!r}" in caplog.text
    assert len(retrieve(conn, name, query, 5, halfvec.index)) == 5


def test_the_cli_reports_status_and_answers_queries(conn, repo, model, platform_dsn, monkeypatch, capsys):
    name, records = index_name(), sample_records(20)
    commit = publish_corpus(repo.endpoint, repo.repo_id, records, "v1")
    reindex(conn, repo, commit, name, CFG, chunker_for(CFG), lambda: model)
    monkeypatch.setenv(platform_db.ENV_DSN, platform_dsn)
    capsys.readouterr()
    assert steps.main(["status", "--index", name]) == 0
    [version] = json.loads(capsys.readouterr().out)
    assert (version["state"], version["commit_id"], version["storage"]) == ("live", commit, "vector")
    # empty option values (what a null DAG Param renders as) mean "as configured"
    assert steps.main(["query", records[5]["text"][:200], "--index", name, "--k", "2", "--chunker", "",
                       "--batch-size", "", "--storage", ""]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 2 and hits[0]["doc_id"] == records[5]["id"]


def test_migrations_apply_once_in_order_and_an_edited_one_is_refused(platform_dsn: str, tmp_path):
    database = f"migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(platform_dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    dsn = platform_dsn.rsplit("/", 1)[0] + "/" + database
    (tmp_path / "001_a.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "002_b.sql").write_text("INSERT INTO a VALUES (1);")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert platform_db.migrate(conn, tmp_path) == ["001_a.sql", "002_b.sql"]
        assert platform_db.migrate(conn, tmp_path) == []
        assert conn.execute("SELECT count(*) FROM a").fetchone()[0] == 1, "each migration ran once"
        (tmp_path / "002_b.sql").write_text("INSERT INTO a VALUES (2);")
        with pytest.raises(platform_db.MigrationError, match="migration 002_b.sql was changed after it was applied"):
            platform_db.migrate(conn, tmp_path)
