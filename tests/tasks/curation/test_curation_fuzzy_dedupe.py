from __future__ import annotations

import pytest
from curation_harness import run_stage

from tasks.curation import dedupe
from tasks.curation.dedupe import shingles
from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupe, FuzzyDedupeConfig

WORDS = [f"word{index}" for index in range(200)]
BASE = " ".join(WORDS)


def _with_changes(count: int, spacing: int = 10, start: int = 5) -> str:
    """BASE with `count` words replaced, far enough apart that each removes `shingle_words` shingles."""
    words = list(WORDS)
    for position in range(start, start + count * spacing, spacing):
        words[position] = f"changed{position}"
    return " ".join(words)


def _exact_jaccard(a: str, b: str, size: int = 3) -> float:
    sa, sb = shingles(a, size), shingles(b, size)
    return len(sa & sb) / len(sa | sb)


def test_near_duplicate_above_threshold_is_dropped_naming_the_kept_record() -> None:
    near = _with_changes(3)
    assert _exact_jaccard(BASE, near) > 0.9
    stage = FuzzyDedupe(FuzzyDedupeConfig(num_perm=256, threshold=0.8))
    kept = run_stage(stage, [BASE, near])
    assert [r["id"] for r in kept] == ["doc-0"]
    assert stage.quarantine[0].reason == "near_duplicate"
    assert stage.quarantine[0].detail.startswith("doc-0 ")


def test_documents_well_below_threshold_are_both_kept() -> None:
    far = _with_changes(15)
    assert _exact_jaccard(BASE, far) < 0.65
    assert len(run_stage(FuzzyDedupe(FuzzyDedupeConfig(num_perm=256, threshold=0.8)), [BASE, far])) == 2


def test_threshold_is_the_knob_for_the_same_pair() -> None:
    pair = [BASE, _with_changes(6)]  # exact Jaccard ~0.8
    assert len(run_stage(FuzzyDedupe(FuzzyDedupeConfig(num_perm=256, threshold=0.6)), pair)) == 1
    assert len(run_stage(FuzzyDedupe(FuzzyDedupeConfig(num_perm=256, threshold=0.95)), pair)) == 2


def test_unrelated_short_texts_survive_and_shingles_handle_short_input() -> None:
    assert shingles("one two", 3) == {b"one two"}
    assert len(run_stage(FuzzyDedupe(FuzzyDedupeConfig()), ["a cat sat on the mat", "stock prices rose today"])) == 2


@pytest.mark.parametrize("minhash", ["datasketch", "rensa"])
def test_a_chain_keeps_only_its_first_member_even_where_the_ends_are_not_similar(minhash: str) -> None:
    """A~B and B~C but not A~C: connected components drop B and C, both naming A (the old sequential rule,
    "drop if similar to an earlier kept record", kept A and C)."""
    a, b, c = _with_changes(5), BASE, _with_changes(5, start=105)
    config = FuzzyDedupeConfig(num_perm=256, threshold=0.8, minhash=minhash)
    hasher = config.hasher()
    estimate = lambda x, y: dedupe.estimated_jaccard(hasher.signature(x), hasher.signature(y))  # noqa: E731
    assert estimate(a, b) >= 0.8 and estimate(b, c) >= 0.8 and estimate(a, c) < 0.8
    stage = FuzzyDedupe(config)
    assert [r["id"] for r in run_stage(stage, [a, b, c])] == ["doc-0"]
    assert [(e.id, e.detail.split(" ")[0]) for e in stage.quarantine] == [("doc-1", "doc-0"), ("doc-2", "doc-0")]


def test_a_later_batch_is_resolved_against_what_earlier_batches_kept() -> None:
    stage = FuzzyDedupe(FuzzyDedupeConfig(num_perm=256))
    assert len(stage.process(run_stage(FuzzyDedupe(FuzzyDedupeConfig()), [BASE]))) == 1
    assert run_stage(stage, [_with_changes(2)]) == []
    assert stage.quarantine[0].detail.startswith("doc-0 ")
