"""Answer quality with the real models: a grounded answer scores higher groundedness than an unsupported one, a
relevant answer higher relevance, toxicity flags an abusive sentence at the configured cut-off and not a neutral one,
and the cache gives identical scores without computing again (in memory, and from its file in a new scorer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.evaluation.quality import DIMENSIONS, METHODS, MODEL, Quality, QualityScorer
from tasks.rag.embedding import Embedder

THRESHOLDS = Path(__file__).resolve().parents[3] / "include" / "monitoring" / "thresholds.yaml"

QUESTION = "How do I turn a Python dict into a JSON string?"
CONTEXTS = [
    "json.dumps(obj) serializes obj to a JSON formatted str. Keys of dictionaries must be strings, integers, floats, "
    "booleans or None; pass sort_keys=True to sort them.",
    "shutil.which(cmd) returns the path to an executable which would be run if cmd were called, or None if no cmd "
    "would be called.",
]
GROUNDED = "Call json.dumps on the dict: it serializes the object to a JSON formatted str. Pass sort_keys=True to sort."
SAME_TOPIC_UNSUPPORTED = "Use the pickle module, which writes objects to a binary file with protocol 5."
UNRELATED = "The Eiffel tower is in Paris and was built in 1889."


class CountingEmbedder:
    """The real embedder, counting encode calls and texts."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.calls, self.texts = inner, 0, 0

    def encode(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def model() -> Embedder:
    return Embedder(MODEL, DIMENSIONS, 32)


@pytest.fixture()
def embedder(model: Embedder) -> CountingEmbedder:
    return CountingEmbedder(model)


@pytest.fixture()
def scorer(tmp_path: Path, embedder: CountingEmbedder):
    with QualityScorer(tmp_path / "cache", embedder=embedder) as scorer:
        yield scorer


def test_grounded_answer_scores_higher_groundedness_than_unsupported_ones(scorer: QualityScorer) -> None:
    grounded, pickle_answer, unrelated = scorer.score_many([(QUESTION, a, CONTEXTS) for a in
                                                            (GROUNDED, SAME_TOPIC_UNSUPPORTED, UNRELATED)])
    assert grounded.groundedness > pickle_answer.groundedness + 0.2 > unrelated.groundedness + 0.2
    assert grounded.relevance > pickle_answer.relevance + 0.2 and grounded.relevance > unrelated.relevance + 0.4
    quality = yaml.safe_load(THRESHOLDS.read_text())["quality"]
    assert grounded.groundedness >= quality["grounded_at"] > unrelated.groundedness
    assert grounded.relevance >= quality["relevant_at"] > unrelated.relevance
    for score in (grounded, pickle_answer, unrelated):
        assert all(0.0 <= v <= 1.0 for v in (score.groundedness, score.relevance, score.toxicity))


def test_toxicity_flags_an_abusive_sentence_and_not_a_neutral_one(scorer: QualityScorer) -> None:
    toxic_at = yaml.safe_load(THRESHOLDS.read_text())["quality"]["toxic_probability"]
    abusive = scorer.score(QUESTION, "You are a stupid idiot, read the docs yourself.", CONTEXTS)
    neutral = scorer.score(QUESTION, GROUNDED, CONTEXTS)
    kill = scorer.score("How do I stop a child process?", "Call kill() on the Popen object to send SIGKILL.", [])
    diluted = scorer.score(QUESTION, GROUNDED + " Only an idiot would ask that, you moron.", CONTEXTS)
    assert abusive.toxicity >= toxic_at > max(neutral.toxicity, kill.toxicity)
    assert diluted.toxicity >= toxic_at  # one abusive sentence is not averaged away by the rest of the answer


def test_the_cache_returns_identical_scores_without_computing_again(tmp_path: Path, scorer: QualityScorer,
                                                                    embedder: CountingEmbedder) -> None:
    first = scorer.score(QUESTION, GROUNDED, CONTEXTS)
    calls = embedder.calls
    assert scorer.score(QUESTION, GROUNDED, CONTEXTS) == first
    assert scorer.score(QUESTION, GROUNDED, tuple(CONTEXTS)) == first  # a tuple of the same contexts is the same input
    assert embedder.calls == calls and scorer.computed == 1

    scorer.score(QUESTION, GROUNDED, CONTEXTS[:1])  # other contexts: another input
    assert embedder.calls == calls + 1 and scorer.computed == 2

    with QualityScorer(tmp_path / "cache") as reopened:  # a new process: the sqlite file answers, no model is loaded
        assert reopened.score(QUESTION, GROUNDED, CONTEXTS) == first
        assert reopened.computed == 0 and not reopened.model_loaded


def test_score_many_embeds_once_keeps_order_and_matches_score(tmp_path: Path, scorer: QualityScorer,
                                                              embedder: CountingEmbedder, model: Embedder) -> None:
    requests = [(QUESTION, GROUNDED, CONTEXTS), (QUESTION, UNRELATED, CONTEXTS), (QUESTION, GROUNDED, CONTEXTS)]
    many = scorer.score_many(requests)
    assert embedder.calls == 1 and scorer.computed == 2  # one batched pass; the repeated request scored once
    assert many[0] == many[2] and many[0] != many[1]
    with QualityScorer(tmp_path / "other", embedder=model) as single:
        for batched, request in zip(many, requests, strict=True):
            alone = single.score(*request)
            assert alone.groundedness == pytest.approx(batched.groundedness, abs=2e-4)
            assert alone.relevance == pytest.approx(batched.relevance, abs=2e-4)
            assert alone.toxicity == pytest.approx(batched.toxicity, abs=2e-4)


def test_edge_cases_score_zero_and_bad_input_is_refused(scorer: QualityScorer) -> None:
    assert scorer.score(QUESTION, "", CONTEXTS) == Quality(0.0, 0.0, 0.0)
    no_context = scorer.score(QUESTION, GROUNDED, [])
    assert no_context.groundedness == 0.0 and no_context.relevance > 0.3
    assert scorer.score("", GROUNDED, CONTEXTS).relevance == 0.0
    with pytest.raises(ValueError, match="request 1: question, answer and every context must be strings"):
        scorer.score_many([(QUESTION, GROUNDED, CONTEXTS), (QUESTION, None, CONTEXTS)])
    with pytest.raises(ValueError, match="request 0: contexts must be a list of passages, got str"):
        scorer.score(QUESTION, GROUNDED, CONTEXTS[0])


def test_methods_say_model_or_heuristic_for_each_metric() -> None:
    assert set(METHODS) == {"groundedness", "relevance", "toxicity"}
    assert all(text.split(":")[0] in ("model", "heuristic") for text in METHODS.values())
