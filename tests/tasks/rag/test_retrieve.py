"""Filtered retrieval goes through HNSW with iterative index scans: a rare source still fills k, where one plain
ef_search-sized candidate list, filtered afterwards, would come back nearly empty."""

from __future__ import annotations

import uuid

import numpy as np
from psycopg import sql

from tasks.common import platform_db
from tasks.rag import config as rag_config
from tasks.rag import store
from tasks.rag.chunking import Chunk
from tasks.rag.retrieve import retrieve

CFG = rag_config.load()
ROWS, RARE_EVERY = 3000, 100  # one row in a hundred belongs to the rare source


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
