"""Curated corpora for the RAG tests: real documentation records (the curation reference set), published on lakeFS
as curate_corpus publishes them (one curated/corpus.jsonl), version after version."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.common.versioned_data import LakeFSEndpoint, Lineage, VersionedRepo

REFERENCE = Path(__file__).resolve().parents[1] / "curation" / "data" / "reference_corpus.jsonl"
CORPUS_PATH = "curated/corpus.jsonl"


def sample_records(count: int) -> list[dict]:
    """The first `count` records of a few packages, each short enough to chunk into a handful of windows."""
    rows = [json.loads(line) for line in REFERENCE.read_text(encoding="utf-8").splitlines()]
    picked = [r for r in rows if 200 <= len(r["text"]) <= 1500]
    return [{"id": r["id"], "source": r["source"], "text": r["text"]} for r in picked[:count]]


def publish_corpus(endpoint: LakeFSEndpoint, repo: str, records: list[dict], message: str) -> str:
    """Commit these records as the curated corpus on `repo`'s main; returns the commit id."""
    versioned = VersionedRepo(endpoint, repo)
    versioned.ensure(storage_namespace=f"local://{repo}", protect_default=False)
    body = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode()
    versioned.put_object("main", CORPUS_PATH, body)
    return versioned.commit("main", message, Lineage("tests", "rag", message))


def index_records(dsn: str, index: str, records: list[dict], embedder) -> None:
    """A live index of these records (one chunk each, first 400 characters) built directly through the store."""
    from tasks.common import platform_db
    from tasks.rag import config as rag_config
    from tasks.rag import store
    from tasks.rag.chunking import Chunk

    cfg = rag_config.load()
    chunks = [Chunk(r["id"], r["source"], r["text"][:400]) for r in records]
    vectors = embedder.encode([c.text for c in chunks])
    with platform_db.connect(dsn) as conn:
        version = store.begin_build(conn, index, "repo", "c0ffee", cfg.embedding.model, "test",
                                    cfg.embedding.dimensions, cfg.index)
        with conn.transaction():
            store.insert_chunks(conn, version, chunks, vectors)
        store.build_hnsw(conn, version)
        store.swap(conn, version, len(chunks), cfg.index.keep_retired)


def index_name() -> str:
    """A fresh index name, so tests sharing one database never see each other's indexes."""
    import uuid

    return f"rag_{uuid.uuid4().hex[:8]}"
