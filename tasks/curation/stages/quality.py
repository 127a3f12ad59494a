"""Heuristic quality filters from the Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020) family.

Each rule is one small function with its own reason `quality:<rule>`, so a quarantine report says exactly
which threshold a document broke. Rules run cheapest first and the first failure drops the record.
Line-ending punctuation is measured per paragraph (blank-line separated) rather than per line because
wrapped prose, e.g. a docstring, ends most physical lines mid-sentence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from tasks.curation.records import Record
from tasks.curation.stage import ConfigError, Drop, Stage

_WORD_EDGES = re.compile(r"^\W+|\W+$")
_BULLET = re.compile(r"^\s*(?:[-*•‣◦●▪]|\d+[.)])\s")
_ELLIPSIS = ("...", "…")
_TERMINAL = (".", "!", "?", '"', "'", ":", ")", "»", "”", "。")


@dataclass(frozen=True)
class QualityConfig:
    min_words: int = 20
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_digit_fraction: float = 0.25
    min_punctuated_paragraph_fraction: float = 0.2
    max_duplicate_line_fraction: float = 0.3
    max_top_ngram_fraction: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    max_bullet_line_fraction: float = 0.9
    max_ellipsis_line_fraction: float = 0.3
    min_alpha_word_fraction: float = 0.8
    min_stop_words: int = 2
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")

    def __post_init__(self) -> None:
        if not 0 < self.min_words <= self.max_words:
            raise ConfigError(f"need 0 < min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.min_mean_word_length > self.max_mean_word_length:
            raise ConfigError("min_mean_word_length must not exceed max_mean_word_length")
        bad = {n: v for n, v in self.max_top_ngram_fraction.items() if not (isinstance(n, int) and n >= 2)}
        if bad:
            raise ConfigError(f"max_top_ngram_fraction keys must be n-gram sizes >= 2, got {sorted(bad)}")


class TextStats:
    """What the rules measure, computed lazily once per document."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def raw_words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def words(self) -> list[str]:
        """Words without surrounding punctuation, lower-cased; pure-punctuation tokens removed."""
        stripped = (_WORD_EDGES.sub("", word).lower() for word in self.raw_words)
        return [word for word in stripped if word]

    @cached_property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.split("\n") if line.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [block.strip() for block in self.text.split("\n\n") if block.strip()]


Rule = Callable[[TextStats, QualityConfig], str | None]


def _fraction(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def word_count(stats: TextStats, config: QualityConfig) -> str | None:
    count = len(stats.words)
    if not config.min_words <= count <= config.max_words:
        return f"{count} words outside [{config.min_words}, {config.max_words}]"
    return None


def mean_word_length(stats: TextStats, config: QualityConfig) -> str | None:
    mean = sum(map(len, stats.words)) / len(stats.words)
    if not config.min_mean_word_length <= mean <= config.max_mean_word_length:
        return f"mean word length {mean:.2f} outside [{config.min_mean_word_length}, {config.max_mean_word_length}]"
    return None


def symbol_ratio(stats: TextStats, config: QualityConfig) -> str | None:
    symbols = stats.text.count("#") + sum(stats.text.count(mark) for mark in _ELLIPSIS)
    ratio = _fraction(symbols, len(stats.raw_words))
    if ratio > config.max_symbol_word_ratio:
        return f"'#'/ellipsis to word ratio {ratio:.3f} > {config.max_symbol_word_ratio}"
    return None


def digit_ratio(stats: TextStats, config: QualityConfig) -> str | None:
    visible = [char for char in stats.text if not char.isspace()]
    ratio = _fraction(sum(char.isdigit() for char in visible), len(visible))
    if ratio > config.max_digit_fraction:
        return f"digit fraction {ratio:.3f} > {config.max_digit_fraction}"
    return None


def alpha_words(stats: TextStats, config: QualityConfig) -> str | None:
    ratio = _fraction(sum(any(char.isalpha() for char in word) for word in stats.raw_words), len(stats.raw_words))
    if ratio < config.min_alpha_word_fraction:
        return f"fraction of words with a letter {ratio:.3f} < {config.min_alpha_word_fraction}"
    return None


def stop_words(stats: TextStats, config: QualityConfig) -> str | None:
    found = len(set(stats.words) & set(config.stop_words))
    if found < config.min_stop_words:
        return f"{found} distinct stop words < {config.min_stop_words} (looks like no natural language)"
    return None


def bullet_lines(stats: TextStats, config: QualityConfig) -> str | None:
    ratio = _fraction(sum(bool(_BULLET.match(line)) for line in stats.lines), len(stats.lines))
    if ratio > config.max_bullet_line_fraction:
        return f"bullet line fraction {ratio:.3f} > {config.max_bullet_line_fraction}"
    return None


def ellipsis_lines(stats: TextStats, config: QualityConfig) -> str | None:
    ratio = _fraction(sum(line.endswith(_ELLIPSIS) for line in stats.lines), len(stats.lines))
    if ratio > config.max_ellipsis_line_fraction:
        return f"ellipsis line fraction {ratio:.3f} > {config.max_ellipsis_line_fraction}"
    return None


def punctuation(stats: TextStats, config: QualityConfig) -> str | None:
    ratio = _fraction(sum(p.endswith(_TERMINAL) for p in stats.paragraphs), len(stats.paragraphs))
    if ratio < config.min_punctuated_paragraph_fraction:
        return f"paragraphs ending in punctuation {ratio:.3f} < {config.min_punctuated_paragraph_fraction}"
    return None


def duplicate_lines(stats: TextStats, config: QualityConfig) -> str | None:
    duplicates = len(stats.lines) - len(set(stats.lines))
    ratio = _fraction(duplicates, len(stats.lines))
    if ratio > config.max_duplicate_line_fraction:
        return f"duplicate line fraction {ratio:.3f} > {config.max_duplicate_line_fraction}"
    return None


def top_ngram_fraction(words: list[str], n: int) -> float:
    """Gopher: share of word characters covered by the most frequent n-gram (0 if none repeats)."""
    if len(words) < n:
        return 0.0
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return _fraction(count * sum(map(len, gram)), sum(map(len, words)))


def repeated_ngrams(stats: TextStats, config: QualityConfig) -> str | None:
    for n, limit in sorted(config.max_top_ngram_fraction.items()):
        ratio = top_ngram_fraction(stats.words, n)
        if ratio > limit:
            return f"top {n}-gram covers {ratio:.3f} of characters > {limit}"
    return None


RULES: dict[str, Rule] = {
    "word_count": word_count,
    "mean_word_length": mean_word_length,
    "symbol_ratio": symbol_ratio,
    "digit_ratio": digit_ratio,
    "alpha_words": alpha_words,
    "stop_words": stop_words,
    "bullet_lines": bullet_lines,
    "ellipsis_lines": ellipsis_lines,
    "punctuation": punctuation,
    "duplicate_lines": duplicate_lines,
    "repeated_ngrams": repeated_ngrams,
}


class Quality(Stage[QualityConfig]):
    name = "quality"
    config_type = QualityConfig

    def apply(self, record: Record) -> Record | Drop:
        stats = TextStats(record["text"])
        for rule_name, rule in RULES.items():
            problem = rule(stats, self.config)
            if problem:
                return Drop(f"quality:{rule_name}", problem)
        return record
