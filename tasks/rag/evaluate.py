"""Checks a freshly built index version must pass before it may serve: every planned chunk stored, the HNSW index
finding stored chunks again (a recall probe through the index itself, not a sequential scan), and the retrieval gate:
recall@k and MRR of the labelled query set (include/rag/labelled_queries.yaml) searched the configured way.

The labelled set is written for the sample corpus. A query counts only if at least one of its answer documents is in
the version (and only those count as its answers), so an index of another corpus is neither blocked nor passed by
questions about this one: with no query counting, the gate says so and does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import yaml
from psycopg import sql

from tasks.rag.config import EvaluationConfig, GateConfig, IndexConfig
from tasks.rag.retrieve import search
from tasks.rag.store import IndexVersion, row_count

Encode = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class LabelledQuery:
    question: str
    answers: frozenset[str]  # ids of the documents that answer it


@dataclass(frozen=True)
class RetrievalScores:
    """The labelled set's scores on one version; recall/mrr are None when no query counted."""

    mode: str
    k: int
    labelled: int
    counted: int
    recall_at_k: float | None
    mrr: float | None
    missed: tuple[str, ...]  # counted questions none of whose answers came back in the top k

    def summary(self) -> str:
        if self.recall_at_k is None:
            return (f"no labelled query's answer documents are in this version (0 of {self.labelled} count): the "
                    f"retrieval gate does not apply")
        return (f"{self.mode} search, top {self.k}, {self.counted} of {self.labelled} labelled queries count: "
                f"recall@{self.k} {self.recall_at_k:.3f}, MRR {self.mrr:.3f}")


@dataclass(frozen=True)
class Evaluation:
    rows: int
    expected_rows: int
    recall: float
    probes: int
    retrieval: RetrievalScores
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def evaluate(conn: psycopg.Connection, version: IndexVersion, expected_rows: int, config: EvaluationConfig,
             index: IndexConfig, encode: Encode) -> Evaluation:
    """`encode` embeds questions; it is called only if the gate has queries to score with a vector search."""
    rows = row_count(conn, version.table_name)
    recall, probes = hnsw_probe(conn, version, config, index.ef_search)
    problems = []
    if rows != expected_rows:
        problems.append(f"{rows} rows stored, {expected_rows} chunks planned")
    if recall < config.min_recall:
        problems.append(f"recall probe {recall:.3f} over {probes} stored chunks (top {config.k}, ef_search "
                        f"{index.ef_search}) is below evaluation.min_recall {config.min_recall}")
    gate = config.gate
    scores = score_version(conn, version, load_labelled(gate.labelled_queries), gate.mode, gate.k, index, encode)
    problems += gate_problems(scores, gate)
    return Evaluation(rows, expected_rows, recall, probes, scores, tuple(problems))


def hnsw_probe(conn: psycopg.Connection, version: IndexVersion, config: EvaluationConfig, ef_search: int
               ) -> tuple[float, int]:
    """(share of probes that find themselves in the top k through HNSW, probes)."""
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
    return (found / len(probes) if probes else 0.0), len(probes)


def load_labelled(path: Path) -> tuple[LabelledQuery, ...]:
    """The labelled set; a malformed entry is refused, naming the file, the entry and the field."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = raw.get("queries") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a mapping with a non-empty list 'queries'")
    queries: list[LabelledQuery] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path.name} query {number}"
        question = entry.get("question") if isinstance(entry, dict) else None
        answers = entry.get("answers") if isinstance(entry, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: field 'question' must be a non-empty string")
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) and a for a in answers)):
            raise ValueError(f"{where} ({question!r}): field 'answers' must be a non-empty list of document ids")
        if question in seen:
            raise ValueError(f"{where}: question {question!r} appears twice")
        seen.add(question)
        queries.append(LabelledQuery(question, frozenset(answers)))
    return tuple(queries)


def score_version(conn: psycopg.Connection, version: IndexVersion, queries: Sequence[LabelledQuery], mode: str,
                  k: int, index: IndexConfig, encode: Encode) -> RetrievalScores:
    """Search the version's table for each counting query and score what comes back."""
    wanted = sorted({doc for query in queries for doc in query.answers})
    present = {doc for (doc,) in conn.execute(sql.SQL("SELECT DISTINCT doc_id FROM {table} WHERE doc_id = ANY(%s)")
                                                 .format(table=sql.Identifier(version.table_name)), (wanted,))}
    counted = [LabelledQuery(q.question, q.answers & present) for q in queries if q.answers & present]
    if not counted:
        return RetrievalScores(mode, k, len(queries), 0, None, None, ())
    vectors = encode([q.question for q in counted]) if mode != "fulltext" else [None] * len(counted)
    rows = row_count(conn, version.table_name)
    rankings = []
    for query, vector in zip(counted, vectors, strict=True):
        with conn.transaction():
            hits = search(conn, version.table_name, vector, k, index, mode=mode, text=query.question, rows=rows)
        rankings.append([hit.doc_id for hit in hits])
    recall, mrr, missed = score_rankings(rankings, [q.answers for q in counted], k)
    return RetrievalScores(mode, k, len(queries), len(counted), recall, mrr,
                           tuple(q.question for q, miss in zip(counted, missed, strict=True) if miss))


def score_rankings(rankings: Sequence[Sequence[str]], answers: Sequence[frozenset[str]], k: int
                   ) -> tuple[float, float, list[bool]]:
    """Mean recall@k and MRR over queries, and which queries missed entirely. A ranking is the document ids of the
    hits in order (a document with several chunks repeats); only its first k distinct documents are scored, so a
    query is judged on the documents a reader of its top k chunks would see."""
    recalls, reciprocal_ranks, missed = [], [], []
    for ranking, relevant in zip(rankings, answers, strict=True):
        documents = list(dict.fromkeys(ranking))[:k]
        found = [rank for rank, doc in enumerate(documents, start=1) if doc in relevant]
        recalls.append(len(found) / len(relevant))
        reciprocal_ranks.append(1 / found[0] if found else 0.0)
        missed.append(not found)
    return sum(recalls) / len(recalls), sum(reciprocal_ranks) / len(reciprocal_ranks), missed


def gate_problems(scores: RetrievalScores, gate: GateConfig) -> list[str]:
    """The failure, naming both scores and the thresholds broken; nothing when it passes or does not apply."""
    if scores.recall_at_k is None or scores.mrr is None:
        return []
    below = [f"{name} {value:.3f} < evaluation.gate.{setting} {minimum}" for name, value, setting, minimum in (
        (f"recall@{scores.k}", scores.recall_at_k, "min_recall_at_k", gate.min_recall_at_k),
        ("MRR", scores.mrr, "min_mrr", gate.min_mrr)) if value < minimum]
    if not below:
        return []
    return [f"retrieval gate failed ({scores.summary()}): {', '.join(below)}"]
