from __future__ import annotations

from curation_harness import reasons, run_stage

from tasks.curation.sample_corpus import GIBBERISH
from tasks.curation.stages.language import Language, LanguageConfig, detect_language

ENGLISH = "The library will be closed for renovation until the end of the month, but the reading room stays open."
GERMAN = "Die Bibliothek bleibt wegen Renovierung bis Ende des Monats geschlossen, der Lesesaal bleibt offen."
RUSSIAN = "Библиотека будет закрыта на ремонт до конца месяца, но читальный зал останется открытым."


def test_keeps_configured_languages_and_records_code_and_score() -> None:
    stage = Language(LanguageConfig(keep=("en",), min_score=0.3))
    kept = run_stage(stage, [ENGLISH, GERMAN, RUSSIAN, GIBBERISH])
    assert [r["id"] for r in kept] == ["doc-0"]
    assert kept[0]["meta"]["language"] == "en" and kept[0]["meta"]["language_score"] > 0.8
    assert reasons(stage) == {"doc-1": "language:de", "doc-2": "language:ru", "doc-3": "language:low_confidence"}


def test_several_languages_can_be_kept() -> None:
    stage = Language(LanguageConfig(keep=("en", "de")))
    assert [r["meta"]["language"] for r in run_stage(stage, [ENGLISH, GERMAN, RUSSIAN])] == ["en", "de"]
    assert detect_language(RUSSIAN)[0] == "ru"
