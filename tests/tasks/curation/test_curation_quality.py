from __future__ import annotations

import pytest
from curation_harness import reasons, run_stage

from tasks.curation.stages.quality import Quality, QualityConfig, top_ngram_fraction

PROSE = ("The reading room of the city library is open to every visitor from Monday to Friday. Books that "
         "are due while the building is closed can be returned later without any fee, and the staff will "
         "help with questions about the new catalogue that replaced the old card index this spring.")


@pytest.mark.parametrize(("text", "reason"), [
    ("Too short to be a document.", "quality:word_count"),
    (" ".join(["incomprehensibilities"] * 10 + ["the", "and"] * 5 + ["notwithstanding"] * 10), "quality:mean_word_length"),
    (PROSE + " #tag" * 12, "quality:symbol_ratio"),
    (PROSE + " 1234567890" * 20, "quality:digit_ratio"),
    (PROSE + " -- ==" * 20, "quality:alpha_words"),
    ("zork blat frim " * 10, "quality:stop_words"),
    ("\n".join(f"- the item number {word} and more" for word in "abcdefghij") + "\n" + PROSE.replace(". ", " "),
     "quality:bullet_lines"),
    ("\n".join(f"the story of {word} and then the people in the town went home..." for word in "abcdefghij"), "quality:ellipsis_lines"),
    ("\n\n".join(f"the section about {word} and its parts" for word in "abcdefghij"), "quality:punctuation"),
    ("\n".join([PROSE] * 3), "quality:duplicate_lines"),
    (PROSE + " " + " ".join(["of the and"] * 8) + ".", "quality:repeated_ngrams"),
])
def test_each_rule_drops_with_its_own_reason(text: str, reason: str) -> None:
    stage = Quality(QualityConfig())
    run_stage(stage, [text])
    assert reasons(stage) == {"doc-0": reason}


def test_clean_prose_passes_every_rule() -> None:
    assert len(run_stage(Quality(QualityConfig()), [PROSE])) == 1


def test_top_ngram_fraction_is_zero_without_repeats_and_counts_characters() -> None:
    assert top_ngram_fraction(["a", "b", "c"], 2) == 0.0
    assert top_ngram_fraction(["ab", "cd", "ab", "cd"], 2) == pytest.approx(8 / 8)
