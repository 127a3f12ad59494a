"""Answer quality per request for monitor_llm — groundedness, relevance, toxicity in [0, 1] — deterministic and cached.

How each score is computed (METHODS says it in one line each, for the report):
- groundedness (model): the answer is split into sentences (SENTENCE); a sentence's support is its highest cosine
  similarity with any retrieved context passage, embedded whole, by all-MiniLM-L6-v2 (tasks.rag.embedding.Embedder,
  unit vectors), clipped to [0, 1]; groundedness is the mean support over the answer's sentences. No lexical overlap
  is used. It is a similarity, not an entailment judgement: a fluent sentence on the passages' topic that they do
  not support still scores in the middle of the range (bench/drift.py measures how well it separates).
- relevance (model): the cosine similarity of the question and the whole answer with the same model, clipped to [0, 1].
- toxicity (model): alt-profanity-check's offline classifier (a linear SVM on bag-of-words, shipped in the wheel),
  the highest probability over the answer's sentences, so one abusive sentence in a long answer is not diluted.
Edge cases: an empty answer scores 0 on all three; no contexts gives groundedness 0; an empty question relevance 0.
Scores are rounded to 4 decimals. Same inputs give the same score: from the cache (keyed by a sha256 of the scorer
version, question, answer and contexts), in memory and, with cache_dir, in one sqlite file that survives restarts;
the model is loaded only when something is not cached.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
SCORER_VERSION = f"quality-v1:{MODEL}:alt-profanity-check-1.9"  # in every cache key: a method change misses the cache
CACHE_FILE = "quality_scores.sqlite"
DECIMALS = 4
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")

METHODS: dict[str, str] = {
    "groundedness": f"model: {MODEL} cosine similarity of each answer sentence with its best-matching retrieved "
                    "passage, mean over sentences, clipped to [0, 1] (no lexical overlap)",
    "relevance": f"model: {MODEL} cosine similarity of the question and the answer, clipped to [0, 1]",
    "toxicity": "model: alt-profanity-check (offline linear SVM on bag-of-words), highest probability over the "
                "answer's sentences",
}

Request = tuple[str, str, Sequence[str]]  # (question, answer, retrieved contexts)


@dataclass(frozen=True)
class Quality:
    """Scores in [0, 1]: higher groundedness / relevance is better, higher toxicity worse."""

    groundedness: float
    relevance: float
    toxicity: float


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text) if s.strip()]


def cache_key(question: str, answer: str, contexts: Sequence[str]) -> str:
    payload = json.dumps([SCORER_VERSION, question, answer, list(contexts)], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class QualityScorer:
    """Scores requests, cached; `computed` counts requests scored by the models (cache misses) in this instance."""

    def __init__(self, cache_dir: Path | None = None, *, embedder=None, batch_size: int = 64) -> None:
        self._memory: dict[str, Quality] = {}
        self._db: sqlite3.Connection | None = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(Path(cache_dir) / CACHE_FILE)
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, groundedness REAL NOT NULL, "
                             "relevance REAL NOT NULL, toxicity REAL NOT NULL)")
            self._db.commit()
        self._embedder = embedder
        self._batch_size = batch_size
        self.computed = 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> QualityScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score(self, question: str, answer: str, contexts: Sequence[str]) -> Quality:
        return self.score_many([(question, answer, contexts)])[0]

    def score_many(self, requests: Iterable[Request]) -> list[Quality]:
        """Scores in input order; everything not cached is embedded in one batched pass and stored."""
        requests = list(requests)
        for index, (question, answer, contexts) in enumerate(requests):
            if isinstance(contexts, (str, bytes)) or not isinstance(contexts, Sequence):
                raise ValueError(f"quality: request {index}: contexts must be a list of passages, got "
                                 f"{type(contexts).__name__}")
            if not (isinstance(question, str) and isinstance(answer, str) and all(isinstance(c, str) for c in contexts)):
                raise ValueError(f"quality: request {index}: question, answer and every context must be strings")
        requests = [(q, a, list(c)) for q, a, c in requests]
        keys = [cache_key(*r) for r in requests]
        found = self._lookup(set(keys))
        missing = {k: r for k, r in zip(keys, requests, strict=True) if k not in found}
        if missing:
            fresh = dict(zip(missing, self._compute(list(missing.values())), strict=True))
            self._store(fresh)
            found.update(fresh)
        return [found[k] for k in keys]

    # --- cache -------------------------------------------------------------------------------------------------------
    def _lookup(self, keys: set[str]) -> dict[str, Quality]:
        found = {k: self._memory[k] for k in keys if k in self._memory}
        wanted = [k for k in keys if k not in found]
        if self._db is not None and wanted:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                rows = self._db.execute(f"SELECT key, groundedness, relevance, toxicity FROM scores WHERE key IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for key, *scores in rows:
                    found[key] = self._memory[key] = Quality(*scores)
        return found

    def _store(self, scores: dict[str, Quality]) -> None:
        self._memory.update(scores)
        if self._db is not None:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                                     [(k, *astuple(q)) for k, q in scores.items()])

    # --- models ------------------------------------------------------------------------------------------------------
    @property
    def model_loaded(self) -> bool:
        return self._embedder is not None

    @property
    def embedder(self):
        if self._embedder is None:
            from tasks.rag.embedding import Embedder

            self._embedder = Embedder(MODEL, DIMENSIONS, self._batch_size)
        return self._embedder

    def _compute(self, requests: list[tuple[str, str, list[str]]]) -> list[Quality]:
        from profanity_check import predict_prob

        split = [sentences(answer) for _, answer, _ in requests]
        texts = sorted({t for (q, a, cs), ss in zip(requests, split, strict=True) for t in (q, a, *cs, *ss)
                        if t.strip()})
        vectors = dict(zip(texts, self.embedder.encode(texts), strict=True)) if texts else {}
        all_sentences = [s for ss in split for s in ss]
        toxic = dict(zip(all_sentences, predict_prob(all_sentences), strict=True)) if all_sentences else {}

        out = []
        for (question, answer, contexts), answer_sentences in zip(requests, split, strict=True):
            passages = [vectors[c] for c in contexts if c.strip()]
            if not answer_sentences:
                out.append(Quality(0.0, 0.0, 0.0))
                continue
            groundedness = 0.0
            if passages:
                similarity = np.stack([vectors[s] for s in answer_sentences]) @ np.stack(passages).T
                groundedness = float(np.clip(similarity.max(axis=1), 0, 1).mean())
            relevance = float(np.clip(vectors[question] @ vectors[answer], 0, 1)) if question.strip() else 0.0
            toxicity = max(float(toxic[s]) for s in answer_sentences)
            out.append(Quality(*(round(min(max(v, 0.0), 1.0), DECIMALS) for v in (groundedness, relevance, toxicity))))
        self.computed += len(requests)
        return out
