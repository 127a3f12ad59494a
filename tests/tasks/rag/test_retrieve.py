"""Retrieval on a real PostgreSQL + pgvector: filtered vector search goes through HNSW with iterative index scans (a
rare source still fills k, where one plain ef_search-sized candidate list, filtered afterwards, would come back nearly
empty); full-text search finds a chunk by a rare word the embedding ranks low; hybrid fuses both by reciprocal rank;
an index built before the full-text column still answers, and gets the column from the next reindex."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import numpy as np
import pytest
from psycopg import sql

from tasks.common import platform_db
from tasks.rag import config as rag_config
from tasks.rag import store
from tasks.rag.chunking import Chunk
from tasks.rag.embedding import Embedder
from tasks.rag.retrieve import fuse, retrieve
from tests.tasks.rag.corpus import sample_records

CFG = rag_config.load()
ROWS, RARE_EVERY = 3000, 100  # one row in a hundred belongs to the rare source
DIMS = CFG.embedding.dimensions


@pytest.fixture()
def conn(platform_dsn: str):
    with platform_db.connect(platform_dsn) as connection:
        yield connection


def live_index(conn, chunks: list[Chunk], vectors: np.ndarray) -> tuple[str, store.IndexVersion]:
    """A new index serving exactly these rows, built through the store as reindex builds one."""
    name = f"rag_{uuid.uuid4().hex[:8]}"
    version = store.begin_build(conn, name, "repo", "c0ffee", "test", "none", DIMS, CFG.index)
    with conn.transaction():
        store.insert_chunks(conn, version, chunks, vectors)
    store.build_hnsw(conn, version)
    store.swap(conn, version, len(chunks), CFG.index.keep_retired)
    return name, version


def unit(*components: tuple[int, float]) -> np.ndarray:
    vector = np.zeros(DIMS, dtype=np.float32)
    for axis, value in components:
        vector[axis] = value
    return vector / np.linalg.norm(vector)


def test_a_rare_source_fills_k_through_the_hnsw_index(platform_dsn: str):
    name = f"rag_{uuid.uuid4().hex[:8]}"
    vectors = np.random.default_rng(7).standard_normal((ROWS, CFG.embedding.dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [Chunk(f"doc{n}", "pypi:rare" if n % RARE_EVERY == 0 else "pypi:common", f"text {n}")
              for n in range(ROWS)]
    with platform_db.connect(platform_dsn) as conn:
        version = store.begin_build(conn, name, "repo", "c0ffee", "random", "none", CFG.embedding.dimensions,
                                    CFG.index)
        with conn.transaction():
            store.insert_chunks(conn, version, chunks, vectors)
        store.build_hnsw(conn, version)
        store.swap(conn, version, ROWS, CFG.index.keep_retired)
        query = vectors[1]  # a common-source row: the rare ones are far from the top of the candidate list

        hits = retrieve(conn, name, query, 10, CFG.index, source="pypi:rare")
        assert len(hits) == 10 and {hit.source for hit in hits} == {"pypi:rare"}
        exact = conn.execute(sql.SQL("SELECT doc_id FROM {t} WHERE source = 'pypi:rare' ORDER BY embedding <=> %s "
                                     "LIMIT 10").format(t=sql.Identifier(version.table_name)), (query,)).fetchall()
        assert len({hit.doc_id for hit in hits} & {d for (d,) in exact}) >= 8, "close to the exact top 10"

        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in conn.execute(sql.SQL(
                "EXPLAIN SELECT doc_id FROM {view} WHERE source = 'pypi:rare' ORDER BY embedding <=> %s LIMIT 10"
            ).format(view=sql.Identifier(name)), (query,)))
            assert f"{version.table_name}_hnsw" in plan
            conn.execute("SET LOCAL hnsw.iterative_scan = off")
            without = conn.execute(sql.SQL("SELECT doc_id FROM {view} WHERE source = 'pypi:rare' "
                                           "ORDER BY embedding <=> %s LIMIT 10").format(view=sql.Identifier(name)),
                                   (query,)).fetchall()
        assert len(without) < 10, "without iterative scans the filter starves the candidate list"


def test_fulltext_finds_a_chunk_by_a_rare_word_that_the_vector_search_ranks_low(conn):
    model = Embedder(CFG.embedding.model, DIMS, CFG.embedding.batch_size)
    records = sample_records(40)
    chunks = [Chunk(r["id"], r["source"], r["text"][:400]) for r in records]
    name, _ = live_index(conn, chunks, model.encode([c.text for c in chunks]))
    # two paragraphs of one README name the MPI library MVAPICH in passing; no other chunk has the word, and the
    # model barely knows it
    holders = {"accelerate:section:2", "accelerate:paragraph:32.0"}
    assert {c.doc_id for c in chunks if "mvapich" in c.text.lower()} == holders
    question = "What is MVAPICH?"
    vector = model.encode([question])[0]

    by_vector = [hit.doc_id for hit in retrieve(conn, name, vector, len(chunks), CFG.index)]
    assert min(by_vector.index(doc) for doc in holders) >= 5, "the premise: the embedding ranks them low"
    by_words = retrieve(conn, name, None, 5, CFG.index, mode="fulltext", text=question)
    assert {hit.doc_id for hit in by_words} == holders, "the only chunks sharing a word with the question"
    assert [hit.text_rank for hit in by_words] == [1, 2] and {hit.vector_rank for hit in by_words} == {None}
    hybrid = retrieve(conn, name, vector, 5, CFG.index, mode="hybrid", text=question)
    assert {hit.doc_id for hit in hybrid[:2]} == holders, "fusion puts what only the words found first"


def test_hybrid_orders_by_reciprocal_rank_fusion_of_both_searches(conn, caplog):
    rows = {  # vector order for the query e0: A B C D E; text order for "zebra": C A D (the others lack the word)
        "A": (unit((0, 1.0)), "a zebra grazes beside another zebra"),
        "B": (unit((0, 1.0), (1, 0.5)), "plain grass and sky"),
        "C": (unit((0, 1.0), (1, 1.0)), "zebra after zebra after zebra"),
        "D": (unit((0, 1.0), (1, 4.0)), "one zebra far away"),
        "E": (unit((1, 1.0)), "nothing relevant here"),
    }
    chunks = [Chunk(doc, "test", text) for doc, (_, text) in rows.items()]
    name, _ = live_index(conn, chunks, np.stack([vector for vector, _ in rows.values()]))
    cfg = replace(CFG.index, hybrid_candidates=3, rrf_k=60)
    query = unit((0, 1.0))

    assert [h.doc_id for h in retrieve(conn, name, query, 5, cfg)] == ["A", "B", "C", "D", "E"]
    with caplog.at_level(logging.WARNING, logger="tasks.rag.retrieve"):
        by_words = retrieve(conn, name, query, 5, cfg, mode="fulltext", text="Where are the zebras?")
    assert [h.doc_id for h in by_words] == ["C", "A", "D"], "stemmed: zebras finds zebra; ranked by occurrences"
    assert f"index {name!r} (version 1) fulltext search returned 3 of k=5 rows" in caplog.text

    hybrid = retrieve(conn, name, query, 3, cfg, mode="hybrid", text="Where are the zebras?")
    # each search hands over its top 3 -- vector: A B C, text: C A D -- and a row scores sum(1 / (60 + rank)):
    # A 1/61 + 1/62 > C 1/63 + 1/61 > B 1/62 > D 1/63
    assert [h.doc_id for h in hybrid] == ["A", "C", "B"]
    assert [(h.vector_rank, h.text_rank) for h in hybrid] == [(1, 2), (3, 1), (2, None)]
    assert [h.score for h in hybrid] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    # k = 4 > hybrid_candidates: each search hands over its top 4, so D (vector 4th, text 3rd) now beats B
    hybrid = retrieve(conn, name, query, 4, cfg, mode="hybrid", text="Where are the zebras?")
    assert [(h.doc_id, h.vector_rank, h.text_rank) for h in hybrid] == [
        ("A", 1, 2), ("C", 3, 1), ("D", 4, 3), ("B", 2, None)]
    assert hybrid[2].score == pytest.approx(1 / 64 + 1 / 63)


def test_reciprocal_rank_fusion_on_a_hand_computed_case():
    fused = fuse({"vector": ["a", "b", "c"], "fulltext": ["c", "d", "a"]}, rrf_k=1)
    # a: 1/2 + 1/4 = 0.75, c: 1/4 + 1/2 = 0.75 (tie: by key), b: 1/3, d: 1/3 (tie: by key)
    assert fused == [("a", 0.75), ("c", 0.75), ("b", pytest.approx(1 / 3)), ("d", pytest.approx(1 / 3))]
    assert fuse({"vector": ["x"], "fulltext": []}, rrf_k=60) == [("x", 1 / 61)]


def test_an_index_built_before_full_text_answers_and_gets_the_column_from_the_next_reindex(conn, caplog):
    chunks = [Chunk("a", "s", "the heron waits by the river"), Chunk("b", "s", "a fox crosses the road at night")]
    name, version = live_index(conn, chunks, np.stack([unit((0, 1.0)), unit((1, 1.0))]))
    with conn.transaction():  # the layout before this change: no tsv column, a view without it
        conn.execute(sql.SQL("DROP VIEW {v}").format(v=sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER TABLE {t} DROP COLUMN tsv").format(t=sql.Identifier(version.table_name)))
        conn.execute(sql.SQL("CREATE VIEW {v} AS SELECT chunk_hash, doc_id, source, text, embedding FROM {t}").format(
            v=sql.Identifier(name), t=sql.Identifier(version.table_name)))
    assert not store.has_fulltext(conn, name)

    with caplog.at_level(logging.WARNING, logger="tasks.rag.retrieve"):
        before = retrieve(conn, name, unit((1, 1.0)), 1, CFG.index, mode="hybrid", text="where do herons wait?")
    assert f"{name!r} has no tsv column" in caplog.text
    assert store.add_fulltext(conn, store.live(conn, name)) and not store.add_fulltext(conn, store.live(conn, name))
    assert store.has_fulltext(conn, name) and store.has_fulltext(conn, version.table_name)
    after = retrieve(conn, name, unit((1, 1.0)), 1, CFG.index, mode="hybrid", text="where do herons wait?")
    # the vector search alone puts b first; only the words (computed per row, then from the column) lift a
    assert [h.doc_id for h in before] == [h.doc_id for h in after] == ["a"]
    assert [h.doc_id for h in retrieve(conn, name, None, 2, CFG.index, mode="fulltext", text="herons")] == ["a"]
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(sql.SQL(
            "EXPLAIN SELECT doc_id FROM {v} WHERE tsv @@ 'heron'::tsquery").format(v=sql.Identifier(name))))
    assert f"{version.table_name}_tsv" in plan, "the added column is GIN-indexed"


def test_fulltext_and_hybrid_need_the_question_s_words(conn):
    name, _ = live_index(conn, [Chunk("a", "s", "text")], unit((0, 1.0))[None, :])
    with pytest.raises(ValueError, match="fulltext retrieval needs the question's words"):
        retrieve(conn, name, None, 1, CFG.index, mode="fulltext")
    with pytest.raises(ValueError, match="retrieval mode 'semantic' must be one of vector, fulltext, hybrid"):
        retrieve(conn, name, unit((0, 1.0)), 1, CFG.index, mode="semantic", text="x")
