"""The pgvector side of an index: one table per index version (`<index>_v<N>`, rows keyed by chunk content hash,
HNSW cosine), a view named after the index that readers query, and the freshness rows in `rag_indexes` /
`rag_index_refreshes` (schema: include/sql/001_rag_indexes.sql).

A full rebuild fills a new version's table out of sight and `swap()` repoints the view in one transaction, so a
reader sees the old rows or the new ones, never an empty or half-filled table. Every write is idempotent: inserts
skip hashes already present, deletes of absent rows delete nothing.

Full-text search reads a generated `tsv` column (to_tsvector of the chunk's text, GIN-indexed) that the view exposes.
Tables built before it existed get it from `add_fulltext` the next time a reindex opens them; until then readers
compute to_tsvector per row (see tasks/rag/retrieve.py), so such an index answers full-text queries, only slower.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from tasks.rag.chunking import Chunk
from tasks.rag.config import IndexConfig, require_index_name

COLUMNS = ("chunk_hash", "doc_id", "source", "text", "embedding", "tsv")
TEXT_SEARCH_CONFIG = "english"  # stems and drops stop words; questions and chunks are English prose
# STORED: the GIN index and ts_rank read it instead of re-parsing every matched chunk's text per query
TSV_COLUMN = sql.SQL("tsv tsvector GENERATED ALWAYS AS (to_tsvector({config}, text)) STORED").format(
    config=sql.Literal(TEXT_SEARCH_CONFIG))


class StaleIndexError(RuntimeError):
    """The live index moved while this run worked; rerun to plan against the new state."""


@dataclass(frozen=True)
class IndexVersion:
    """One row of rag_indexes: a version of an index and what it reflects."""

    index_name: str
    version: int
    table_name: str
    state: str
    repo: str
    commit_id: str
    embedding_model: str
    chunker: str
    storage: str
    hnsw: dict
    rows: int

    def built_like(self, repo: str, model: str, chunker: str, index: IndexConfig) -> bool:
        """Same inputs and layout: only then can it be updated incrementally or a build be resumed."""
        return (self.repo, self.embedding_model, self.chunker, self.storage, self.hnsw) == (
            repo, model, chunker, index.storage, index.hnsw)


_SELECT = ("SELECT index_name, version, table_name, state, repo, commit_id, embedding_model, chunker, storage, hnsw, "
           "rows FROM rag_indexes")


def live(conn: psycopg.Connection, index_name: str, lock: bool = False) -> IndexVersion | None:
    """The version the view serves; with lock=True (inside a transaction) other writers wait until commit."""
    row = conn.execute(_SELECT + " WHERE index_name = %s AND state = 'live'" + (" FOR UPDATE" if lock else ""),
                       (index_name,)).fetchone()
    return IndexVersion(*row) if row else None


def unfinished_build(conn: psycopg.Connection, index_name: str, commit_id: str) -> IndexVersion | None:
    """A build of this commit that a crashed or failed attempt left behind, to resume rather than restart."""
    row = conn.execute(_SELECT + " WHERE index_name = %s AND state = 'building' AND commit_id = %s "
                       "ORDER BY version DESC LIMIT 1", (index_name, commit_id)).fetchone()
    return IndexVersion(*row) if row else None


def begin_build(conn: psycopg.Connection, index_name: str, repo: str, commit_id: str, model: str, chunker: str,
                dimensions: int, index: IndexConfig) -> IndexVersion:
    """A new version row in state 'building' and its empty table (no HNSW or GIN index yet: building them after
    the load is several times faster than maintaining them row by row)."""
    require_index_name(index_name)
    with conn.transaction():
        conn.execute("LOCK TABLE rag_indexes IN SHARE ROW EXCLUSIVE MODE")  # two builds never take one number
        (version,) = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM rag_indexes WHERE index_name = %s",
                                  (index_name,)).fetchone()
        table = f"{index_name}_v{version}"
        conn.execute(sql.SQL(
            "CREATE TABLE {table} (chunk_hash text PRIMARY KEY, doc_id text NOT NULL, source text NOT NULL, "
            "text text NOT NULL, embedding {kind}({dims}) NOT NULL, {tsv})").format(
            table=sql.Identifier(table), kind=sql.SQL(index.storage), dims=sql.Literal(dimensions), tsv=TSV_COLUMN))
        conn.execute(sql.SQL("CREATE INDEX {name} ON {table} (doc_id)").format(
            name=sql.Identifier(f"{table}_doc"), table=sql.Identifier(table)))
        conn.execute("INSERT INTO rag_indexes (index_name, version, table_name, state, repo, commit_id, "
                     "embedding_model, chunker, storage, hnsw) VALUES (%s, %s, %s, 'building', %s, %s, %s, %s, %s, %s)",
                     (index_name, version, table, repo, commit_id, model, chunker, index.storage,
                      json.dumps(index.hnsw)))
    return IndexVersion(index_name, version, table, "building", repo, commit_id, model, chunker, index.storage,
                        index.hnsw, 0)


def build_hnsw(conn: psycopg.Connection, version: IndexVersion, build_memory: str = IndexConfig.build_memory
               ) -> None:
    """The search indexes of a loaded version: HNSW on the embeddings (with `build_memory` of maintenance_work_mem:
    past it pgvector builds on disk, several times slower) and GIN on the full-text column (added first if the table
    predates it, as a resumed build's may)."""
    _add_tsv(conn, version.table_name)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {memory}").format(memory=sql.Literal(build_memory)))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw (embedding {ops}) "
                             "WITH (m = {m}, ef_construction = {efc})").format(
            name=sql.Identifier(f"{version.table_name}_hnsw"), table=sql.Identifier(version.table_name),
            ops=sql.SQL(f"{version.storage}_cosine_ops"), m=sql.Literal(version.hnsw["m"]),
            efc=sql.Literal(version.hnsw["ef_construction"])))
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (tsv)").format(
        name=sql.Identifier(f"{version.table_name}_tsv"), table=sql.Identifier(version.table_name)))
    conn.execute(sql.SQL("ANALYZE {table}").format(table=sql.Identifier(version.table_name)))


def has_fulltext(conn: psycopg.Connection, relation: str) -> bool:
    """Whether a table or an index's view has the `tsv` column."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%s)) "
                        "AND attname = 'tsv' AND NOT attisdropped)", (relation,)).fetchone()[0]


def _add_tsv(conn: psycopg.Connection, table: str) -> bool:
    if has_fulltext(conn, table):
        return False  # checked first: ALTER TABLE takes an exclusive lock even when there is nothing to add
    conn.execute(sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {tsv}").format(
        table=sql.Identifier(table), tsv=TSV_COLUMN))
    return True


def add_fulltext(conn: psycopg.Connection, version: IndexVersion) -> bool:
    """Give a live version built before full-text search its `tsv` column, GIN index and view column, in one
    transaction (the column's table rewrite blocks readers for its duration: a one-off, seconds at 100k rows).
    Returns whether anything was added."""
    with conn.transaction():
        if not _add_tsv(conn, version.table_name):
            return False
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (tsv)").format(
            name=sql.Identifier(f"{version.table_name}_tsv"), table=sql.Identifier(version.table_name)))
        conn.execute(_view_sql(version, replace=True))
    return True


def _view_sql(version: IndexVersion, replace: bool = False) -> sql.Composed:
    return sql.SQL("CREATE {how} VIEW {view} AS SELECT {columns} FROM {table}").format(
        how=sql.SQL("OR REPLACE" if replace else ""), view=sql.Identifier(require_index_name(version.index_name)),
        columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), table=sql.Identifier(version.table_name))


def hashes(conn: psycopg.Connection, table: str, doc_ids: Sequence[str] | None = None) -> set[str]:
    """Chunk hashes stored in table (of these documents only, if given)."""
    query = sql.SQL("SELECT chunk_hash FROM {table}").format(table=sql.Identifier(table))
    if doc_ids is None:
        return {h for (h,) in conn.execute(query)}
    return {h for (h,) in conn.execute(query + sql.SQL(" WHERE doc_id = ANY(%s)"), (list(doc_ids),))}


def insert_chunks(conn: psycopg.Connection, version: IndexVersion, chunks: Sequence[Chunk],
                  vectors: np.ndarray) -> int:
    """COPY BINARY into a temporary table, then insert what is not there yet; returns rows inserted.
    Call inside a transaction (the temporary table is dropped at commit)."""
    if not chunks:
        return 0
    dims = vectors.shape[1]
    conn.execute(sql.SQL("CREATE TEMP TABLE incoming (chunk_hash text, doc_id text, source text, text text, "
                         "embedding vector({dims})) ON COMMIT DROP").format(dims=sql.Literal(dims)))
    with conn.cursor().copy("COPY incoming FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["text", "text", "text", "text", "vector"])
        for chunk, vector in zip(chunks, vectors, strict=True):
            copy.write_row((chunk.content_hash, chunk.doc_id, chunk.source, chunk.text, vector))
    inserted = conn.execute(sql.SQL(
        "INSERT INTO {table} (chunk_hash, doc_id, source, text, embedding) "
        "SELECT chunk_hash, doc_id, source, text, embedding::{kind} FROM incoming "
        "ON CONFLICT (chunk_hash) DO NOTHING").format(
        table=sql.Identifier(version.table_name), kind=sql.SQL(version.storage))).rowcount
    conn.execute("DROP TABLE incoming")
    return inserted


def delete_chunks(conn: psycopg.Connection, table: str, chunk_hashes: Iterable[str]) -> int:
    return conn.execute(sql.SQL("DELETE FROM {table} WHERE chunk_hash = ANY(%s)").format(
        table=sql.Identifier(table)), (list(chunk_hashes),)).rowcount


def delete_documents(conn: psycopg.Connection, table: str, doc_ids: Iterable[str]) -> int:
    return conn.execute(sql.SQL("DELETE FROM {table} WHERE doc_id = ANY(%s)").format(
        table=sql.Identifier(table)), (list(doc_ids),)).rowcount


def row_count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {table}").format(table=sql.Identifier(table))).fetchone()[0]


def reflect(conn: psycopg.Connection, version: IndexVersion, commit_id: str, rows: int) -> None:
    """The version now reflects commit_id (inside the transaction that made its rows so)."""
    conn.execute("UPDATE rag_indexes SET commit_id = %s, rows = %s, refreshed_at = now() "
                 "WHERE index_name = %s AND version = %s", (commit_id, rows, version.index_name, version.version))


def record_refresh(conn: psycopg.Connection, version: IndexVersion, mode: str, base_commit: str | None,
                   commit_id: str, counts: dict[str, int], rows: int, seconds: float) -> None:
    conn.execute(
        "INSERT INTO rag_index_refreshes (index_name, version, mode, base_commit, commit_id, docs_added, docs_changed, "
        "docs_removed, chunks_embedded, chunks_deleted, rows, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s)",
        (version.index_name, version.version, mode, base_commit, commit_id, counts["docs_added"],
         counts["docs_changed"], counts["docs_removed"], counts["chunks_embedded"], counts["chunks_deleted"], rows,
         seconds))


def mark_failed(conn: psycopg.Connection, version: IndexVersion) -> None:
    conn.execute("UPDATE rag_indexes SET state = 'failed' WHERE index_name = %s AND version = %s AND state = "
                 "'building'", (version.index_name, version.version))


def swap(conn: psycopg.Connection, version: IndexVersion, rows: int, keep_retired: int) -> list[str]:
    """Point the index's view at this version and retire the previous one, in one transaction; drop the tables of
    failed builds (kept for inspection until now) and of retired versions beyond the newest `keep_retired`.
    Returns the dropped tables."""
    view = sql.Identifier(require_index_name(version.index_name))
    with conn.transaction():
        live(conn, version.index_name, lock=True)
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {view}").format(view=view))
        conn.execute(_view_sql(version))
        conn.execute("UPDATE rag_indexes SET state = 'retired' WHERE index_name = %s AND state = 'live'",
                     (version.index_name,))
        conn.execute("UPDATE rag_indexes SET state = 'live', rows = %s, refreshed_at = now() "
                     "WHERE index_name = %s AND version = %s", (rows, version.index_name, version.version))
        old = [table for (table,) in conn.execute(
            "SELECT table_name FROM rag_indexes WHERE index_name = %(index)s AND (state = 'failed' OR (state = "
            "'retired' AND version < ALL (SELECT version FROM rag_indexes WHERE index_name = %(index)s AND state = "
            "'retired' ORDER BY version DESC LIMIT %(keep)s)))", {"index": version.index_name, "keep": keep_retired})]
        for table in old:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {table}").format(table=sql.Identifier(table)))
            conn.execute("UPDATE rag_indexes SET state = 'dropped' WHERE table_name = %s", (table,))
    return old
