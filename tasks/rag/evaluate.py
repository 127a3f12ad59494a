"""Checks a freshly built index version must pass before it may serve: every planned chunk stored, and the HNSW
index finding stored chunks again (a recall probe through the index itself, not a sequential scan)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from tasks.rag.config import EvaluationConfig
from tasks.rag.store import IndexVersion, row_count


@dataclass(frozen=True)
class Evaluation:
    rows: int
    expected_rows: int
    recall: float
    probes: int
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def evaluate(conn: psycopg.Connection, version: IndexVersion, expected_rows: int, config: EvaluationConfig,
             ef_search: int) -> Evaluation:
    rows = row_count(conn, version.table_name)
    table = sql.Identifier(version.table_name)
    found = 0
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")  # the probe must go through HNSW to say anything about it
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {ef}").format(ef=sql.Literal(ef_search)))
        probes = conn.execute(sql.SQL("SELECT chunk_hash, embedding FROM {table} ORDER BY chunk_hash LIMIT %s").format(
            table=table), (config.probes,)).fetchall()
        for chunk_hash, embedding in probes:
            top = conn.execute(sql.SQL("SELECT chunk_hash FROM {table} ORDER BY embedding <=> %s LIMIT %s").format(
                table=table), (embedding, config.k)).fetchall()
            found += any(h == chunk_hash for (h,) in top)
    recall = found / len(probes) if probes else 0.0
    problems = []
    if rows != expected_rows:
        problems.append(f"{rows} rows stored, {expected_rows} chunks planned")
    if recall < config.min_recall:
        problems.append(f"recall probe {recall:.3f} over {len(probes)} stored chunks (top {config.k}, ef_search "
                        f"{ef_search}) is below evaluation.min_recall {config.min_recall}")
    return Evaluation(rows, expected_rows, recall, len(probes), tuple(problems))
