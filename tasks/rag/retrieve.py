"""Top-k chunks from an index's live view, optionally only from one source, by one of three searches chosen per query:

- vector: cosine similarity through the HNSW index. A filtered query uses pgvector's iterative index scans
  (`hnsw.iterative_scan = relaxed_order`): HNSW keeps scanning until k rows pass the filter or
  `hnsw.max_scan_tuples` is reached, instead of filtering one ef_search-sized candidate list down to too few.
  relaxed_order can return rows slightly out of order, so they are re-sorted by distance.
- fulltext: Postgres full-text search on the chunks' `tsv` column (GIN). The question's words are stemmed, stop words
  dropped, and OR-ed (a chunk rarely holds every word of a question); matches are ranked BM25-style, each word's
  ts_rank weighted by how rare the word is (`_fulltext_sql`). It finds a chunk by a rare word (a function name, a
  library) that the embedding blurs into its neighbours.
- hybrid: both searches in one statement (one snapshot, so never two index versions across a swap), each handing its
  top `index.hybrid_candidates` to reciprocal rank fusion (`fuse`): rank-based, so cosine similarities and text ranks,
  which are on unrelated scales, never need calibrating against each other.

Fewer than k rows is logged, naming the index, the search, the filter and the count, never returned silently (a
full-text search returns only chunks that share a word with the question, so it is often short).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from tasks.rag.config import IndexConfig, RetrievalMode, require_index_name, require_mode
from tasks.rag.store import TEXT_SEARCH_CONFIG, has_fulltext, live

log = logging.getLogger(__name__)
_warned_without_tsv: set[str] = set()


@dataclass(frozen=True)
class Hit:
    chunk_hash: str
    doc_id: str
    source: str
    text: str
    score: float  # what hits are ordered by: cosine similarity (vector; 1 = same direction), the idf-weighted text
    #               rank (fulltext), the reciprocal-rank-fusion score (hybrid)
    vector_rank: int | None = None  # 1-based rank in the vector search; None: not among its candidates
    text_rank: int | None = None  # 1-based rank in the full-text search; None: no shared word, or not among its top


def retrieve(conn: psycopg.Connection, index_name: str, query: np.ndarray | None, k: int, index: IndexConfig,
             source: str | None = None, mode: RetrievalMode = "vector", text: str | None = None) -> list[Hit]:
    """`query` is the question's embedding (vector, hybrid), `text` its words (fulltext, hybrid)."""
    view = require_index_name(index_name)
    with conn.transaction():
        serving = live(conn, index_name)
        if serving is None:
            raise LookupError(f"index {index_name!r} has no live version yet: run reindex_rag first")
        hits = search(conn, view, query, k, index, source, mode, text, rows=serving.rows)
    if len(hits) < k:
        log.warning("retrieve: index %r (version %d) %s search returned %d of k=%d rows%s", index_name,
                    serving.version, mode, len(hits), k, f" for source={source!r}" if source is not None else "")
    return hits


def search(conn: psycopg.Connection, relation: str, query: np.ndarray | None, k: int, index: IndexConfig,
           source: str | None = None, mode: RetrievalMode = "vector", text: str | None = None,
           rows: int | None = None) -> list[Hit]:
    """The top k of one table or view (the retrieval gate searches a candidate version's table before it serves).
    `rows`: the relation's row count if known (full-text ranking needs it; else it is counted). Call inside a
    transaction: the search settings are SET LOCAL."""
    require_mode(mode, "retrieval mode")
    if mode != "fulltext" and query is None:
        raise ValueError(f"{mode} retrieval needs the question's embedding (query=...)")
    if mode != "vector" and not (text and text.strip()):
        raise ValueError(f"{mode} retrieval needs the question's words (text=...)")
    if mode == "vector":
        nearest = _vector(conn, relation, query, k, index, source)
        return [Hit(*row, vector_rank=rank) for rank, row in enumerate(nearest, start=1)]
    if mode == "fulltext":
        parts, params = _fulltext_sql(conn, relation, text, k, source, rows)
        matched = conn.execute(sql.SQL("WITH {parts} SELECT chunk_hash, doc_id, source, text, score FROM matched "
                                       "ORDER BY score DESC, chunk_hash").format(parts=parts), params).fetchall()
        return [Hit(*row, text_rank=rank) for rank, row in enumerate(matched, start=1)]

    candidates = max(index.hybrid_candidates, k)
    nearest_sql, vector_params = _vector_sql(conn, relation, query, candidates, index, source)
    matched_sql, text_params = _fulltext_sql(conn, relation, text, candidates, source, rows)
    found = conn.execute(sql.SQL(
        "WITH {nearest}, {matched} "
        "SELECT 'vector', chunk_hash, doc_id, source, text, 1 - distance FROM nearest "
        "UNION ALL SELECT 'fulltext', chunk_hash, doc_id, source, text, score FROM matched").format(
        nearest=nearest_sql, matched=matched_sql), {**vector_params, **text_params}).fetchall()
    by_arm: dict[str, list[tuple]] = {"vector": [], "fulltext": []}
    for arm, *row in found:
        by_arm[arm].append(tuple(row))
    for ranked in by_arm.values():
        ranked.sort(key=lambda row: (-row[4], row[0]))  # best first (relaxed_order may not be), ties by hash
    rows_by_hash = {row[0]: row[:4] for ranked in by_arm.values() for row in ranked}
    ranks = {arm: {row[0]: rank for rank, row in enumerate(ranked, start=1)} for arm, ranked in by_arm.items()}
    fused = fuse({arm: [row[0] for row in ranked] for arm, ranked in by_arm.items()}, index.rrf_k)
    return [Hit(*rows_by_hash[chunk_hash], score, vector_rank=ranks["vector"].get(chunk_hash),
                text_rank=ranks["fulltext"].get(chunk_hash)) for chunk_hash, score in fused[:k]]


def fuse(rankings: Mapping[str, Sequence[str]], rrf_k: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): each key scores the sum, over the
    rankings that hold it, of 1 / (rrf_k + its 1-based rank there). Best first; equal scores by key, so the order
    is deterministic."""
    scores: dict[str, float] = {}
    for ranking in rankings.values():
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _vector(conn: psycopg.Connection, relation: str, query: np.ndarray, k: int, index: IndexConfig,
            source: str | None) -> list[tuple]:
    nearest, params = _vector_sql(conn, relation, query, k, index, source)
    return conn.execute(sql.SQL("WITH {nearest} SELECT chunk_hash, doc_id, source, text, 1 - distance FROM nearest "
                                "ORDER BY distance, chunk_hash").format(nearest=nearest), params).fetchall()


def _vector_sql(conn: psycopg.Connection, relation: str, query: np.ndarray, limit: int, index: IndexConfig,
                source: str | None) -> tuple[sql.Composed, dict]:
    """The CTE `nearest` (chunk_hash, doc_id, source, text, distance) and its parameters; sets the HNSW knobs."""
    conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {ef}").format(ef=sql.Literal(max(index.ef_search, limit))))
    where = sql.SQL("")
    # sent as untyped text, so Postgres reads it as the relation's own type (vector or halfvec): no reader needs to
    # know which storage the version it lands on uses, even while a swap changes it
    params = {"vector": "[" + ",".join(f"{x:.8g}" for x in np.asarray(query).tolist()) + "]", "source": source,
              "limit": limit}
    if source is not None:
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        conn.execute(sql.SQL("SET LOCAL hnsw.max_scan_tuples = {n}").format(n=sql.Literal(index.max_scan_tuples)))
        where = sql.SQL("WHERE source = %(source)s")
    return sql.SQL(
        "nearest AS MATERIALIZED (SELECT chunk_hash, doc_id, source, text, embedding <=> %(vector)s AS distance "
        "FROM {relation} {where} ORDER BY distance LIMIT %(limit)s)").format(
        relation=sql.Identifier(relation), where=where), params


def _fulltext_sql(conn: psycopg.Connection, relation: str, text: str, limit: int, source: str | None,
                  rows: int | None) -> tuple[sql.Composed, dict]:
    """The CTEs ending in `matched` (chunk_hash, doc_id, source, text, score) and their parameters.

    Postgres's own ranking (ts_rank, ts_rank_cd) has no notion of how rare a word is, so with the question's words
    OR-ed, a chunk repeating a common word ("file", "return") outranks the one holding the rare word that matters.
    Each of the question's lexemes is therefore weighted by its BM25 inverse document frequency, counted through the
    GIN index, and a chunk scores the sum over the lexemes it holds of idf * ts_rank (ts_rank: the lexeme's frequency
    in the chunk, saturating)."""
    config = sql.Literal(TEXT_SEARCH_CONFIG)
    if has_fulltext(conn, relation):
        tsv = sql.Identifier("tsv")
    else:  # a version built before the tsv column: correct, but every row is parsed per query (no GIN index)
        if relation not in _warned_without_tsv:
            _warned_without_tsv.add(relation)
            log.warning("retrieve: %r has no tsv column (built before full-text search); computing to_tsvector per "
                        "row until the next reindex adds it", relation)
        tsv = sql.SQL("to_tsvector({config}, text)").format(config=config)
    where = sql.SQL("AND source = %(source)s") if source is not None else sql.SQL("")
    params = {"text": text, "source": source, "limit": limit, "rows": rows}
    # documents in the collection, for the idf: known rows, unless filtered to a source (then counted, filtered)
    total = (sql.SQL("%(rows)s::bigint") if rows is not None and source is None else
             sql.SQL("(SELECT count(*) FROM {relation} WHERE true {where})").format(
                 relation=sql.Identifier(relation), where=where))
    # one tsquery per distinct lexeme of the question (the 'simple' parser leaves a lexeme as it is)
    return sql.SQL(
        "terms AS MATERIALIZED (SELECT plainto_tsquery('simple', lexeme) AS query "
        "FROM unnest(tsvector_to_array(to_tsvector({config}, %(text)s))) AS lexeme), "
        "counted AS MATERIALIZED (SELECT query, (SELECT count(*) FROM {relation} WHERE {tsv} @@ query {where}) AS df, "
        "{total} AS n FROM terms), "
        "weights AS MATERIALIZED (SELECT query, ln(1 + (greatest(n, df) - df + 0.5) / (df + 0.5)) AS idf "
        "FROM counted WHERE df > 0), "
        "scored AS MATERIALIZED (SELECT chunk_hash, sum(weights.idf * ts_rank({tsv}, weights.query)) AS score "
        "FROM {relation} JOIN weights ON {tsv} @@ weights.query {where} GROUP BY chunk_hash "
        "ORDER BY score DESC, chunk_hash LIMIT %(limit)s), "
        "matched AS MATERIALIZED (SELECT chunk_hash, doc_id, source, text, scored.score FROM scored "
        "JOIN {relation} USING (chunk_hash))").format(
        config=config, tsv=tsv, relation=sql.Identifier(relation), where=where, total=total), params
