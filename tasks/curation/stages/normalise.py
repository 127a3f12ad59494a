"""Normalise raw text before any filter looks at it: repair the encoding, strip HTML markup and
boilerplate, Unicode NFC, collapse whitespace; drop what cannot be repaired, is empty or is oversized.

Encoding repair without ftfy, in two principled steps: (1) invalid UTF-8 bytes (lone surrogates left by the
reader's `surrogateescape`) and pre-existing U+FFFD are counted and removed, and the record is dropped as
`invalid_utf8` when they exceed `max_invalid_fraction` of its characters; (2) classic mojibake (UTF-8 bytes
once decoded as cp1252, e.g. "CafÃ©") is undone only when re-encoding as cp1252 decodes as strict UTF-8,
which random text practically never does.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

from tasks.curation.records import Record
from tasks.curation.stage import ConfigError, Drop, Stage

REPLACEMENT_CHAR = "\ufffd"
# Undecodable bytes (U+DC80..U+DCFF from the reader) and any other lone surrogate, which only a JSON escape
# such as "\\ud800" can put in a string and which no encoder downstream accepts.
_INVALID_CHARS = re.compile("[\ud800-\udfff\ufffd]")
# A lead byte of a 2/3-byte UTF-8 sequence read as cp1252, followed by a continuation byte read the same way.
_MOJIBAKE_HINT = re.compile("[ÃÂâ][\u0080-\u00bf\u2018-\u203a\u20ac\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc]")
# Control and zero-width characters that carry no text (tab and newline are whitespace, kept for structure).
_INVISIBLE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_HTML_DOCUMENT = re.compile(r"^\s*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE)
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "main",
                         "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt"})


@dataclass(frozen=True)
class NormaliseConfig:
    max_invalid_fraction: float = 0.01
    max_chars: int = 100_000
    boilerplate_tags: tuple[str, ...] = ("head", "script", "style", "nav", "footer", "header", "aside", "noscript",
                                         "form", "template", "iframe", "svg")

    def __post_init__(self) -> None:
        if not 0 <= self.max_invalid_fraction <= 1:
            raise ConfigError(f"max_invalid_fraction must be in [0, 1], got {self.max_invalid_fraction}")
        if self.max_chars < 1:
            raise ConfigError(f"max_chars must be >= 1, got {self.max_chars}")


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page; content inside boilerplate tags is skipped, entities are decoded."""

    def __init__(self, boilerplate_tags: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.boilerplate_tags = boilerplate_tags
        self.skip_depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.boilerplate_tags:
            self.skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.boilerplate_tags:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.parts.append(data)


def html_to_text(html: str, boilerplate_tags: frozenset[str]) -> str:
    extractor = _TextExtractor(boilerplate_tags)
    extractor.feed(html)
    extractor.close()
    return "".join(extractor.parts)


def is_html(record: Record) -> bool:
    """Markup is stripped only from records known or sniffed to be HTML: plain text may say "a <b>"."""
    return record["meta"].get("content_type") == "text/html" or bool(_HTML_DOCUMENT.match(record["text"]))


def fix_mojibake(text: str) -> str:
    if not _MOJIBAKE_HINT.search(text):
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except UnicodeError:
        return text


def collapse_whitespace(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class Normalise(Stage[NormaliseConfig]):
    name = "normalise"
    config_type = NormaliseConfig

    def apply(self, record: Record) -> Record | Drop:
        text = record["text"].replace("\r\n", "\n").replace("\r", "\n")
        if len(text) > self.config.max_chars:
            return Drop("oversized", f"{len(text)} characters > max_chars {self.config.max_chars}")
        invalid = len(_INVALID_CHARS.findall(text))
        if invalid and invalid > self.config.max_invalid_fraction * len(text):
            return Drop("invalid_utf8", f"{invalid} of {len(text)} characters are invalid bytes or U+FFFD "
                                        f"(> max_invalid_fraction {self.config.max_invalid_fraction})")
        text = fix_mojibake(_INVALID_CHARS.sub("", text))
        if is_html(record):
            text = html_to_text(text, frozenset(self.config.boilerplate_tags))
        text = collapse_whitespace(_INVISIBLE.sub("", unicodedata.normalize("NFC", text)))
        if not text:
            return Drop("empty", "no text left after normalisation")
        meta = dict(record["meta"])
        if invalid:
            meta["repaired_chars"] = invalid
            self.counters["repaired_records"] += 1
        return {**record, "text": text, "meta": meta}
