"""Top-k chunks by cosine similarity from an index's live view, optionally only from one source.

A filtered query uses pgvector's iterative index scans (`hnsw.iterative_scan = relaxed_order`): HNSW keeps scanning
until k rows pass the filter or `hnsw.max_scan_tuples` is reached, instead of filtering one ef_search-sized candidate
list down to too few. relaxed_order can return rows slightly out of order, so they are re-sorted by distance.
Fewer than k rows is logged, naming the index, the filter and the count, never returned silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from tasks.rag.config import IndexConfig, require_index_name
from tasks.rag.store import live

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    chunk_hash: str
    doc_id: str
    source: str
    text: str
    score: float  # cosine similarity, 1 = same direction


def retrieve(conn: psycopg.Connection, index_name: str, query: np.ndarray, k: int, index: IndexConfig,
             source: str | None = None) -> list[Hit]:
    view = sql.Identifier(require_index_name(index_name))
    with conn.transaction():
        serving = live(conn, index_name)
        if serving is None:
            raise LookupError(f"index {index_name!r} has no live version yet: run reindex_rag first")
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {ef}").format(ef=sql.Literal(max(index.ef_search, k))))
        where = sql.SQL("")
        # sent as untyped text, so Postgres reads it as the view's own type (vector or halfvec): no reader needs to
        # know which storage the version it lands on uses, even while a swap changes it
        params: list = ["[" + ",".join(f"{x:.8g}" for x in query.tolist()) + "]"]
        if source is not None:
            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            conn.execute(sql.SQL("SET LOCAL hnsw.max_scan_tuples = {n}").format(n=sql.Literal(index.max_scan_tuples)))
            where = sql.SQL("WHERE source = %s")
            params.append(source)
        rows = conn.execute(sql.SQL(
            "WITH nearest AS MATERIALIZED (SELECT chunk_hash, doc_id, source, text, embedding <=> %s "
            "AS distance FROM {view} {where} ORDER BY distance LIMIT %s) "
            "SELECT chunk_hash, doc_id, source, text, 1 - distance FROM nearest ORDER BY distance").format(
            view=view, where=where), [*params, k]).fetchall()
    hits = [Hit(h, d, s, t, float(score)) for h, d, s, t, score in rows]
    if len(hits) < k:
        log.warning("retrieve: index %r (version %d) returned %d of k=%d rows%s", index_name, serving.version,
                    len(hits), k, f" for source={source!r}" if source is not None else "")
    return hits
