"""The retrieval gate: the labelled set is written from the sample corpus; recall@k and MRR are scored as defined; on a
real PostgreSQL + pgvector, lakeFS emulator and embedding model, a full rebuild whose embeddings are shuffled is not
swapped in and the failure names the scores and thresholds, a good one goes live, and an index of a corpus the set
was not written for is neither blocked nor scored."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tasks.curation.pipeline import load_config, run_stages, shard_stages
from tasks.curation.records import make_record
from tasks.curation.sample_corpus import build_sample_corpus, stdlib_docs
from tasks.rag import config as rag_config
from tasks.rag import store
from tasks.rag.embedding import Embedder
from tasks.rag.evaluate import LabelledQuery, load_labelled, score_rankings, score_version
from tasks.rag.reindex import EvaluationFailedError, reindex
from tasks.rag.steps import chunker_for
from tests.tasks.rag.corpus import index_name, publish_corpus, sample_records

CFG = rag_config.load()
GATE = CFG.evaluation.gate
LABELLED = load_labelled(GATE.labelled_queries)
DISTRACTORS = 40  # sample-corpus documents no question is about, so the gate does not search a tiny haystack


class Memoised:
    """The real model, each text embedded once per test module (the tests reindex the same corpus several times)."""

    def __init__(self, model: Embedder) -> None:
        self.model, self.memo = model, {}

    def encode(self, texts, progress=None):
        todo = [text for text in dict.fromkeys(texts) if text not in self.memo]
        if todo:
            self.memo.update(zip(todo, self.model.encode(todo), strict=True))
        if progress is not None:
            progress(len(texts), len(texts))
        return np.stack([self.memo[text] for text in texts]).astype(np.float32)


class Shuffled:
    """A broken model: every text gets the vector of another text of the same call."""

    def __init__(self, model: Memoised) -> None:
        self.model = model

    def encode(self, texts, progress=None):
        vectors = self.model.encode(texts, progress)
        return vectors[np.random.default_rng(0).permutation(len(vectors))]


@pytest.fixture(scope="module")
def model() -> Memoised:
    return Memoised(Embedder(CFG.embedding.model, CFG.embedding.dimensions, CFG.embedding.batch_size))


def labelled_corpus() -> list[dict]:
    """The documents answering the labelled questions and some others, as curated records."""
    docs = {doc.id: doc.text for doc in stdlib_docs()}
    answers = sorted({doc for query in LABELLED for doc in query.answers})
    others = [doc for doc in sorted(docs) if doc not in answers and len(docs[doc]) < 1500][::97][:DISTRACTORS]
    return [{"id": doc, "source": "python-stdlib", "text": docs[doc]} for doc in answers + others]


def test_the_labelled_set_is_written_from_the_sample_corpus_and_survives_curation():
    files = build_sample_corpus()
    # JSONL records keep their ids through curation (a .txt/.md/.html file's record is named by its path instead)
    jsonl_ids = {json.loads(line)["id"] for path, data in files.items() if path.startswith("shards/")
                 for line in data.split(b"\n") if line.startswith(b'{"id": "stdlib:')}
    assert 30 <= len(LABELLED) <= 60
    for query in LABELLED:
        assert query.answers <= jsonl_ids, f"{query.question!r}: {sorted(query.answers - jsonl_ids)} not in the corpus"
    answers = sorted({doc for query in LABELLED for doc in query.answers})
    texts = {doc.id: doc.text for doc in stdlib_docs()}
    kept = run_stages(shard_stages(load_config()), [make_record(doc, texts[doc], "python-stdlib") for doc in answers])
    assert sorted(record["id"] for record in kept.kept) == answers, "curation's per-record stages keep every answer"


def test_a_malformed_labelled_set_is_refused_naming_the_entry(tmp_path):
    path = tmp_path / "queries.yaml"
    path.write_text("queries:\n  - question: What is x?\n    answers: [doc:x]\n  - question: And y?\n    answers: []\n")
    with pytest.raises(ValueError, match=r"queries.yaml query 2 \('And y\?'\): field 'answers' must be a non-empty"):
        load_labelled(path)
    path.write_text("queries:\n  - question: What is x?\n    answers: [a]\n  - question: What is x?\n    answers: [b]\n")
    with pytest.raises(ValueError, match=r"query 2: question 'What is x\?' appears twice"):
        load_labelled(path)


def test_recall_at_k_and_mrr_are_scored_on_the_distinct_documents_of_the_top_k():
    rankings = [
        ["a", "a", "b", "x"],  # a, b found at document ranks 1 and 2 of the 2 answers
        ["x", "y", "x", "c"],  # c at document rank 3
        ["x", "y", "z", "w", "v", "d"],  # d is the 6th distinct document: outside the top 5
        ["y", "e"],  # one of the two answers, at rank 2
    ]
    answers = [frozenset("ab"), frozenset("c"), frozenset("d"), frozenset({"e", "f"})]
    recall, mrr, missed = score_rankings(rankings, answers, k=5)
    assert recall == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert mrr == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert missed == [False, False, True, False]


def test_the_gate_lets_a_good_index_go_live_and_blocks_a_shuffled_one_naming_scores(conn, repo, model):
    name, chunker = index_name(), chunker_for(CFG)
    commit = publish_corpus(repo.endpoint, repo.repo_id, labelled_corpus(), "labelled corpus")
    logs: list[str] = []
    good = reindex(conn, repo, commit, name, CFG, chunker, lambda: model, log=logs.append)
    assert (good.mode, good.version, store.live(conn, name).version) == ("full", 1, 1)
    assert good.gate_recall_at_k >= GATE.min_recall_at_k and good.gate_mrr >= GATE.min_mrr
    assert (f"retrieval gate: {GATE.mode} search, top {GATE.k}, {len(LABELLED)} of {len(LABELLED)} labelled "
            f"queries count: recall@{GATE.k} {good.gate_recall_at_k:.3f}, MRR {good.gate_mrr:.3f}") in "\n".join(logs)

    with pytest.raises(EvaluationFailedError) as failure:
        reindex(conn, repo, commit, name, CFG, chunker, lambda: Shuffled(model), full_rebuild=True)
    found = re.search(
        rf"index '{name}' version 2 not swapped in: retrieval gate failed \({GATE.mode} search, top {GATE.k}, "
        rf"{len(LABELLED)} of {len(LABELLED)} labelled queries count: recall@{GATE.k} (0\.\d+), MRR (0\.\d+)\): "
        rf"recall@{GATE.k} \1 < evaluation.gate.min_recall_at_k {GATE.min_recall_at_k}, "
        rf"MRR \2 < evaluation.gate.min_mrr {GATE.min_mrr}; the live version keeps serving", str(failure.value))
    assert found, str(failure.value)
    assert float(found[1]) < good.gate_recall_at_k / 2 and float(found[2]) < good.gate_mrr / 2
    assert store.live(conn, name).version == 1, "the good version keeps serving"
    assert conn.execute("SELECT state FROM rag_indexes WHERE index_name = %s AND version = 2", (name,)
                        ).fetchone()[0] == "failed"


def test_a_corpus_the_set_was_not_written_for_is_not_blocked_and_partial_answers_count_alone(conn, repo, model):
    name, chunker = index_name(), chunker_for(CFG)
    commit = publish_corpus(repo.endpoint, repo.repo_id, sample_records(15), "package READMEs")
    logs: list[str] = []
    # the embeddings the previous test's gate blocked: only a gate that does not apply lets them through
    outcome = reindex(conn, repo, commit, name, CFG, chunker, lambda: Shuffled(model), log=logs.append)
    assert (outcome.mode, store.live(conn, name).version, outcome.gate_recall_at_k) == ("full", 1, None)
    assert (f"retrieval gate: no labelled query's answer documents are in this version (0 of {len(LABELLED)} "
            "count): the retrieval gate does not apply") in "\n".join(logs)

    present = sample_records(15)[0]
    queries = [LabelledQuery(" ".join(present["text"].split()[:12]), frozenset({present["id"], "stdlib:absent"})),
               LabelledQuery("about a document it does not hold", frozenset({"stdlib:absent"}))]
    scores = score_version(conn, store.live(conn, name), queries, "fulltext", 5, CFG.index, lambda texts: None)
    assert (scores.labelled, scores.counted) == (2, 1), "only the query with an answer in the index counts"
    assert scores.recall_at_k == 1.0, "found, and its one present answer is the whole denominator (not 0.5)"
