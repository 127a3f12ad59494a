from __future__ import annotations

from curation_harness import run_stage

from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupe, FuzzyDedupeConfig, shingles

WORDS = [f"word{index}" for index in range(200)]
BASE = " ".join(WORDS)


def _with_changes(count: int, spacing: int = 10) -> str:
    """BASE with `count` words replaced, far enough apart that each removes `shingle_words` shingles."""
    words = list(WORDS)
    for position in range(5, 5 + count * spacing, spacing):
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
