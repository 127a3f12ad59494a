"""Heuristic quality filters from the Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020) family.

Each rule is one small function with its own reason `quality:<rule>`, so a quarantine report says exactly
which threshold a document broke. Rules run cheapest first and the first failure drops the record.
Line-ending punctuation is measured per paragraph (blank-line separated) rather than per line because
wrapped prose, e.g. a docstring, ends most physical lines mid-sentence.

Technical documents embed code blocks, inline code, identifiers and URLs in their prose. The rules that judge
natural language (word length, symbols, letters, stop words, punctuation, repeated phrases) measure the prose
only (`TextStats.prose`), so a URL is not one 80-letter word and `sync_to_async` said five times is not
spam; the rules about the document's shape (length, digits, lines) still see all of it. Line-fraction rules
need `min_lines` lines: one line that starts with "- " is a sentence, not a list-only page, and a fraction of
one line is not a statistic. Rules read structure where the text has it: a list item that is a sentence is
prose, a code fence line is markup, a link is one name and inline code one word to the n-gram count. Measured
on `tests/tasks/curation/data/reference_corpus.jsonl` by `bench/curation_false_drops.py`.
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
# A fence left open runs to the end of the document, as markdown renders it.
_FENCED_CODE = re.compile(r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
# Stands for a link or inline code held out of the text while repeated_ngrams splits it into words.
_HELD = "\ue001"
_HELD_WORD = re.compile(r"\ue001\d+\ue001")
_FENCE_LINE = re.compile(r"^(?:```|~~~)[\w+.-]*$")
_INLINE_CODE = re.compile(r"(`{1,2})[^`\n]+?\1")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]")
_MARKDOWN_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\s]*\)")
# `text <url>`_ or `text`__: the text starts right after the backtick and the underscores end the reference, so
# "`a` or `__main__`" holds no link.
_RST_LINK = re.compile(r"`([^`<\s][^`<\n]*?)(?:\s*<[^>\n]*>)?`_{1,2}(?!\w)")
# A "... " line continues a doctest only after a ">>> " line; elsewhere it is an ellipsis opening prose.
_DOCTEST = re.compile(r"^[ \t]*(>>>|\.\.\.)(?: |$)")
# Where inline code or a URL was cut out of the prose, and the punctuation around it (no letter or digit).
_CUT = "\ue000"
_CUT_WITH_PUNCTUATION = re.compile(r"[^\w\s\ue000]*(?:\ue000[^\w\s\ue000]*)+")
_ENDS_IN_CODE_OR_URL = re.compile(r"(?:(`{1,2})[^`\n]+\1|(?:https?://|www\.)\S+)$")
# Hashtags, not '#' in markdown headings, "# comments" or issue numbers such as (#123).
_HASHTAG = re.compile(r"(?<![\w&#])#[^\W\d]")
# Identifier-like tokens: snake_case, dotted.names, calls(), CamelCase with an inner capital.
_IDENTIFIER = re.compile(r"_|\w\.\w|\(\)|[a-z][A-Z]")
_SENTENCE_END = re.compile(r"[.!?:;][\"')\]*_]*(?:\s|$)")
_TRAILING_MARKUP = "*_`~]>-"
_CLOSERS = ")\"'”»"
_SENTENCE_STOPS = (".", "!", "?", "。")
# Markdown structure at the start of a line (heading hashes, quote and list markers): layout, not words.
_LINE_MARKUP = re.compile(r"^[ \t]*(?:#{1,6}|>|[-*+•]|\d+[.)])[ \t]+", re.MULTILINE)
# A line this short without terminal punctuation is a heading: structure, not an unfinished sentence.
_HEADING_WORDS = 8


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
    min_ngram_repeats: int = 3
    min_ngram_words: int = 50
    min_lines: int = 3
    max_bullet_line_fraction: float = 0.9
    max_ellipsis_line_fraction: float = 0.3
    min_alpha_word_fraction: float = 0.8
    min_stop_words: int = 2
    stop_words: tuple[str, ...] = (
        "the",
        "be",
        "to",
        "of",
        "and",
        "that",
        "have",
        "with",
        "a",
        "an",
        "is",
        "are",
        "in",
        "on",
        "for",
        "it",
        "this",
        "as",
        "by",
        "from",
        "or",
        "not",
        "can",
        "you",
    )

    def __post_init__(self) -> None:
        if self.min_ngram_repeats < 2 or self.min_lines < 1:
            raise ConfigError(
                f"need min_ngram_repeats >= 2 and min_lines >= 1, got {self.min_ngram_repeats}, {self.min_lines}"
            )
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
    def without_code_blocks(self) -> str:
        return strip_literal_blocks(_FENCED_CODE.sub("", self.text))

    @cached_property
    def prose(self) -> str:
        """The text without code blocks, inline code and URLs (links keep their words); all of it when
        nothing else is left, so a document that is only code is still judged. Punctuation attached to code
        or a URL goes with it: the commas of "`a`, `b`, `c`" are the code list's, not words without letters."""
        prose = _RST_LINK.sub(r"\1", _MARKDOWN_LINK.sub(r"\1", self.without_code_blocks))
        prose = _URL.sub(_CUT, _INLINE_CODE.sub(_CUT, prose))
        prose = _CUT_WITH_PUNCTUATION.sub("", prose)
        return prose if prose.split() else self.text

    @cached_property
    def prose_raw_words(self) -> list[str]:
        return _LINE_MARKUP.sub("", self.prose).split()

    @cached_property
    def prose_words(self) -> list[str]:
        stripped = (_WORD_EDGES.sub("", word).lower() for word in self.prose_raw_words)
        return [word for word in stripped if word]

    @cached_property
    def ngram_words(self) -> list[tuple[str, bool]]:
        """The words repeated_ngrams counts, each with whether it may compete for the top n-gram. Link text is
        one word, the name of what it links to, so "the [Databricks CLI]" and "the [Databricks SDK for Go]" are
        different phrases; inline code is one word that counts but never competes, like an identifier, so the
        prose around it neither shrinks nor joins across it. URLs are left out."""
        held: list[tuple[str, bool]] = []

        def hold(word: str, competes: bool) -> str:
            held.append((word, competes))
            return f" {_HELD}{len(held) - 1}{_HELD} "

        def link(match: re.Match[str]) -> str:
            name = " ".join(match[1].replace("`", "").split())
            plain = not _IDENTIFIER.search(name)
            return hold(name.lower() if plain else name, plain) if name else " "

        text = _RST_LINK.sub(link, _MARKDOWN_LINK.sub(link, self.without_code_blocks))
        text = _URL.sub(" ", _INLINE_CODE.sub(lambda match: hold(match[0].strip("`"), False), text))
        words: list[tuple[str, bool]] = []
        for raw in _LINE_MARKUP.sub("", text).split():
            if _HELD_WORD.fullmatch(raw):
                words.append(held[int(raw[1:-1])])
            elif word := _WORD_EDGES.sub("", raw):
                plain = not _IDENTIFIER.search(word)
                words.append((word.lower() if plain else word, plain))
        return words

    @cached_property
    def list_items(self) -> list[str]:
        """Each line that opens a list item, joined with the indented lines it wraps onto (up to a blank line,
        the next item or an unindented line)."""
        items: list[str] = []
        in_item = False
        for line in self.text.split("\n"):
            wraps = in_item and line[:1] in (" ", "\t") and bool(line.strip()) and not _BULLET.match(line)
            if _BULLET.match(line):
                items.append(line.strip())
            elif wraps:
                items[-1] += " " + line.strip()
            in_item = bool(_BULLET.match(line)) or wraps
        return items

    @cached_property
    def paragraphs(self) -> list[str]:
        """Blank-line separated blocks outside code blocks; a block of list items counts each item."""
        found: list[str] = []
        for block in self.without_code_blocks.split("\n\n"):
            items: list[str] = []
            for line in block.strip().split("\n"):
                if _BULLET.match(line) or not items:
                    items.append(line.strip())
                else:
                    items[-1] += " " + line.strip()
            found += [item for item in items if item]
        return found


def strip_literal_blocks(text: str) -> str:
    """Without reStructuredText literal blocks (the indented lines after a line ending in "::") and doctest
    lines (">>> " and the "... " lines that follow it): the code of rst READMEs, as fences are markdown's."""
    kept: list[str] = []
    in_literal = in_doctest = False
    for line in text.split("\n"):
        if in_literal and (not line.strip() or line[:1] in (" ", "\t")):
            continue
        in_literal = line.rstrip().endswith("::")
        prompt = _DOCTEST.match(line)
        in_doctest = bool(prompt) and (prompt[1] == ">>>" or in_doctest)
        if not in_doctest:
            kept.append(line[:-1] if in_literal else line)
    return "\n".join(kept)


Rule = Callable[[TextStats, QualityConfig], str | None]


def _fraction(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def word_count(stats: TextStats, config: QualityConfig) -> str | None:
    count = len(stats.words)
    if not config.min_words <= count <= config.max_words:
        return f"{count} words outside [{config.min_words}, {config.max_words}]"
    return None


def mean_word_length(stats: TextStats, config: QualityConfig) -> str | None:
    words = stats.prose_words or stats.words
    mean = sum(map(len, words)) / len(words)
    if not config.min_mean_word_length <= mean <= config.max_mean_word_length:
        return f"mean word length {mean:.2f} outside [{config.min_mean_word_length}, {config.max_mean_word_length}]"
    return None


def symbol_ratio(stats: TextStats, config: QualityConfig) -> str | None:
    symbols = len(_HASHTAG.findall(stats.prose)) + sum(stats.prose.count(mark) for mark in _ELLIPSIS)
    ratio = _fraction(symbols, len(stats.prose_raw_words))
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
    """Numbers are words in technical text (versions, dates); their share has its own rule, digit_ratio."""
    words = stats.prose_raw_words
    ratio = _fraction(sum(any(char.isalnum() for char in word) for word in words), len(words))
    if ratio < config.min_alpha_word_fraction:
        return f"fraction of words with a letter or digit {ratio:.3f} < {config.min_alpha_word_fraction}"
    return None


def stop_words(stats: TextStats, config: QualityConfig) -> str | None:
    found = len(set(stats.prose_words) & set(config.stop_words))
    if found < config.min_stop_words:
        return f"{found} distinct stop words < {config.min_stop_words} (looks like no natural language)"
    return None


def is_sentence(item: str) -> bool:
    """Ends in a full stop, "!" or "?" (past closing markup, brackets and quotes), not in an ellipsis."""
    item = item.rstrip().rstrip(_TRAILING_MARKUP + _CLOSERS)
    return item.endswith(_SENTENCE_STOPS) and not item.endswith(_ELLIPSIS)


def bullet_lines(stats: TextStats, config: QualityConfig) -> str | None:
    """Gopher's list-only page: lines that open a list item. An item that is a sentence (a news entry, a reason
    with its full stop, past the lines it wraps onto) is prose set as a list and does not count; fragments
    such as menu entries or keywords do."""
    if len(stats.lines) < config.min_lines:
        return None
    bullets = sum(not is_sentence(item) for item in stats.list_items)
    ratio = _fraction(bullets, len(stats.lines))
    if ratio > config.max_bullet_line_fraction:
        return f"bullet line fraction {ratio:.3f} > {config.max_bullet_line_fraction}"
    return None


def ellipsis_lines(stats: TextStats, config: QualityConfig) -> str | None:
    if len(stats.lines) < config.min_lines:
        return None
    ratio = _fraction(sum(line.endswith(_ELLIPSIS) for line in stats.lines), len(stats.lines))
    if ratio > config.max_ellipsis_line_fraction:
        return f"ellipsis line fraction {ratio:.3f} > {config.max_ellipsis_line_fraction}"
    return None


def is_heading(paragraph: str) -> bool:
    return len(paragraph.split()) <= _HEADING_WORDS and not paragraph.rstrip(_TRAILING_MARKUP).endswith(_TERMINAL)


def is_punctuated(paragraph: str) -> bool:
    """Ends a sentence (past closing markup such as `**` or `_`), ends on the command or address the sentence
    leads to ("install it with `pip install x`"), or holds a sentence end inside."""
    paragraph = paragraph.rstrip()
    return paragraph.rstrip(_TRAILING_MARKUP).endswith(_TERMINAL) or bool(
        _ENDS_IN_CODE_OR_URL.search(paragraph) or _SENTENCE_END.search(paragraph[:-1])
    )


def punctuation(stats: TextStats, config: QualityConfig) -> str | None:
    """Share of non-heading paragraphs that are sentences; a document of headings only scores 0."""
    paragraphs = [p for p in stats.paragraphs if not is_heading(p)]
    ratio = _fraction(sum(map(is_punctuated, paragraphs)), len(paragraphs))
    if ratio < config.min_punctuated_paragraph_fraction:
        return f"paragraphs ending in punctuation {ratio:.3f} < {config.min_punctuated_paragraph_fraction}"
    return None


def duplicate_lines(stats: TextStats, config: QualityConfig) -> str | None:
    """Code fence lines (```` ```sh ````, ```` ``` ````) are markup that opens and closes each block, not repeated
    content; every other line counts, inside code blocks too."""
    lines = [line for line in stats.lines if not _FENCE_LINE.match(line)]
    duplicates = len(lines) - len(set(lines))
    ratio = _fraction(duplicates, len(lines))
    if ratio > config.max_duplicate_line_fraction:
        return f"duplicate line fraction {ratio:.3f} > {config.max_duplicate_line_fraction}"
    return None


def top_ngram_fraction(words: list[str], n: int, min_count: int = 2, competes: list[bool] | None = None) -> float:
    """Gopher: share of word characters covered by the most frequent n-gram (0 if none repeats `min_count`
    times). N-grams holding a word that does not compete (by default an identifier) are not counted: prose
    names its subject again and again."""
    plain = competes if competes is not None else [not _IDENTIFIER.search(word) for word in words]
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1) if all(plain[i : i + n]))
    if not counts:
        return 0.0
    gram, count = counts.most_common(1)[0]
    if count < min_count:
        return 0.0
    return _fraction(count * sum(map(len, gram)), sum(map(len, words)))


def repeated_ngrams(stats: TextStats, config: QualityConfig) -> str | None:
    if len(stats.words) < config.min_ngram_words:
        return None
    words = [word for word, _ in stats.ngram_words]
    competes = [competes for _, competes in stats.ngram_words]
    for n, limit in sorted(config.max_top_ngram_fraction.items()):
        ratio = top_ngram_fraction(words, n, config.min_ngram_repeats, competes)
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
