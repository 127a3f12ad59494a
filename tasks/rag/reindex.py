"""Bring an index in step with the curated corpus at a lakeFS commit: incrementally when the live version was built
the same way (only the documents the diff names are chunked, only chunks not stored yet are embedded), else by a full
rebuild into a new version that is evaluated (row count, HNSW probe, the labelled set's retrieval gate) and swapped in
only if it passes.

Crash safety: an incremental update writes its inserts, deletes and the freshness row in one transaction, so a
retry either finds the commit already reflected or redoes the whole diff. A full rebuild commits each embedded batch
into a table no reader sees; a retry resumes the unfinished build of the same commit, embedding only what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import psycopg

from tasks.common.versioned_data import VersionedRepo
from tasks.rag import corpus, store
from tasks.rag.chunking import Chunk, Chunker
from tasks.rag.config import RagConfig
from tasks.rag.embedding import Embedder, throughput_logger
from tasks.rag.evaluate import evaluate

Log = Callable[[str], None]


class EvaluationFailedError(RuntimeError):
    """A rebuilt version failed its checks; the live version keeps serving."""


@dataclass(frozen=True)
class Outcome:
    index_name: str
    version: int
    mode: str  # full | incremental | unchanged
    reason: str
    base_commit: str | None
    commit_id: str
    rows: int
    docs_added: int = 0
    docs_changed: int = 0
    docs_removed: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    recall: float | None = None
    gate_recall_at_k: float | None = None  # the retrieval gate's scores on the labelled set (None: did not apply)
    gate_mrr: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def plan(serving: store.IndexVersion | None, repo: str, model: str, cfg: RagConfig, full_rebuild: bool
         ) -> tuple[str, str]:
    """(mode, why): incremental only onto a live version built from the same repo, model, chunker and layout."""
    if full_rebuild:
        return "full", "full_rebuild requested"
    if serving is None:
        return "full", "no live version yet"
    if not serving.built_like(repo, model, cfg.chunker.fingerprint, cfg.index):
        return "full", (f"live version {serving.version} was built from {serving.repo} with {serving.embedding_model}, "
                        f"{serving.chunker}, {serving.storage} {serving.hnsw}; this run wants {repo} with {model}, "
                        f"{cfg.chunker.fingerprint}, {cfg.index.storage} {cfg.index.hnsw}")
    return "incremental", f"live version {serving.version} reflects {serving.commit_id[:12]}"


def reindex(conn: psycopg.Connection, repo: VersionedRepo, commit_id: str, index_name: str, cfg: RagConfig,
            chunker: Chunker, embedder: Callable[[], Embedder], full_rebuild: bool = False, log: Log = print
            ) -> Outcome:
    """`embedder` is called only if something needs embedding (loading the model takes seconds)."""
    began = time.monotonic()
    serving = store.live(conn, index_name)
    if serving is not None and store.add_fulltext(conn, serving):
        log(f"added the full-text column and its GIN index to live version {serving.version} ({serving.table_name})")
    mode, reason = plan(serving, repo.repo_id, cfg.embedding.model, cfg, full_rebuild)
    log(f"reindex {index_name} to lakefs://{repo.repo_id}/{commit_id[:12]}: {mode} ({reason})")
    if mode == "incremental":
        assert serving is not None
        outcome = _incremental(conn, repo, commit_id, serving, cfg, chunker, embedder, reason, log)
    else:
        outcome = _full(conn, repo, commit_id, index_name, cfg, chunker, embedder, reason, log)
    outcome = Outcome(**{**outcome.to_dict(), "seconds": round(time.monotonic() - began, 3)})
    log(f"reindex {index_name}: {outcome.to_dict()}")
    return outcome


def _incremental(conn: psycopg.Connection, repo: VersionedRepo, commit_id: str, serving: store.IndexVersion,
                 cfg: RagConfig, chunker: Chunker, embedder: Callable[[], Embedder], reason: str, log: Log) -> Outcome:
    base = serving.commit_id
    if base == commit_id:
        return Outcome(serving.index_name, serving.version, "unchanged", reason, base, commit_id, serving.rows)
    began = time.monotonic()
    diff = corpus.diff_commits(repo, base, commit_id, cfg.corpus_path)
    log(f"diff {base[:12]}..{commit_id[:12]} of {cfg.corpus_path}: {diff.counts()}")
    wanted = chunker.chunk_all(diff.upserts)
    present = store.hashes(conn, serving.table_name, [doc.doc_id for doc in diff.upserts])
    todo = [chunk for chunk in wanted if chunk.content_hash not in present]
    stale = present - {chunk.content_hash for chunk in wanted}
    vectors = _embed(embedder, todo, log)
    with conn.transaction():
        locked = store.live(conn, serving.index_name, lock=True)
        if locked is None or (locked.version, locked.commit_id) != (serving.version, base):
            raise store.StaleIndexError(f"index {serving.index_name!r} moved while this run embedded (was version "
                                        f"{serving.version} at {base[:12]}); rerun to plan against the new state")
        store.insert_chunks(conn, serving, todo, vectors)
        deleted = (store.delete_chunks(conn, serving.table_name, stale)
                   + store.delete_documents(conn, serving.table_name, diff.removed))
        rows = store.row_count(conn, serving.table_name)
        counts = {**diff.counts(), "chunks_embedded": len(todo), "chunks_deleted": deleted}
        store.reflect(conn, serving, commit_id, rows)
        store.record_refresh(conn, serving, "incremental", base, commit_id, counts, rows, time.monotonic() - began)
    return Outcome(serving.index_name, serving.version, "incremental", reason, base, commit_id, rows, **counts)


def _full(conn: psycopg.Connection, repo: VersionedRepo, commit_id: str, index_name: str, cfg: RagConfig,
          chunker: Chunker, embedder: Callable[[], Embedder], reason: str, log: Log) -> Outcome:
    began = time.monotonic()
    docs = corpus.read(repo, commit_id, cfg.corpus_path)
    model, fingerprint = cfg.embedding.model, cfg.chunker.fingerprint
    building = store.unfinished_build(conn, index_name, commit_id)
    if building is not None and building.built_like(repo.repo_id, model, fingerprint, cfg.index):
        log(f"resuming the unfinished build of version {building.version} ({building.table_name})")
    else:
        building = store.begin_build(conn, index_name, repo.repo_id, commit_id, model, fingerprint,
                                     cfg.embedding.dimensions, cfg.index)
    wanted = chunker.chunk_all(docs.values())
    present = store.hashes(conn, building.table_name)
    todo = [chunk for chunk in wanted if chunk.content_hash not in present]
    log(f"version {building.version}: {len(docs)} documents -> {len(wanted)} chunks, {len(todo)} to embed")
    loaded = embedder() if todo else None
    progress = throughput_logger(log)
    step = cfg.embedding.batch_size * 8  # committed in slices, so a crash loses at most one slice's work
    for start in range(0, len(todo), step):
        part = todo[start:start + step]
        vectors = loaded.encode([chunk.text for chunk in part])
        with conn.transaction():
            store.insert_chunks(conn, building, part, vectors)
        progress(start + len(part), len(todo))
    store.build_hnsw(conn, building, cfg.index.build_memory)
    model = cache(lambda: loaded or embedder())  # the gate embeds its questions; load the model only if needed
    checked = evaluate(conn, building, len(wanted), cfg.evaluation, cfg.index, lambda texts: model().encode(texts))
    log(f"evaluation of version {building.version}: rows {checked.rows}/{checked.expected_rows}, recall "
        f"{checked.recall:.3f} over {checked.probes} probes; retrieval gate: {checked.retrieval.summary()}"
        + (f"; missed: {list(checked.retrieval.missed[:5])}" if checked.retrieval.missed else ""))
    if not checked.passed:
        store.mark_failed(conn, building)
        raise EvaluationFailedError(f"index {index_name!r} version {building.version} not swapped in: "
                                    f"{'; '.join(checked.problems)}; the live version keeps serving")
    counts = {"docs_added": len(docs), "docs_changed": 0, "docs_removed": 0, "chunks_embedded": len(todo),
              "chunks_deleted": 0}
    with conn.transaction():
        dropped = store.swap(conn, building, checked.rows, cfg.index.keep_retired)
        store.record_refresh(conn, building, "full", None, commit_id, counts, checked.rows, time.monotonic() - began)
    log(f"version {building.version} is live behind view {index_name}" + (f"; dropped {dropped}" if dropped else ""))
    return Outcome(index_name, building.version, "full", reason, None, commit_id, checked.rows, recall=checked.recall,
                   gate_recall_at_k=checked.retrieval.recall_at_k, gate_mrr=checked.retrieval.mrr, **counts)


def _embed(embedder: Callable[[], Embedder], chunks: Sequence[Chunk], log: Log) -> np.ndarray:
    if not chunks:
        return np.empty((0, 0), dtype=np.float32)
    return embedder().encode([chunk.text for chunk in chunks], throughput_logger(log))

