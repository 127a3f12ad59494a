"""Documents -> chunks, by the strategy named in config: token windows with overlap, or sections (headings and
paragraphs kept whole, packed up to a token budget). Tokens are the embedding model's own word pieces, so sizes are
in the units the model reads (all-MiniLM-L6-v2 reads at most 256; the model truncates anything longer).

A chunk's key is the sha256 of (document id, source, text): the same content always gets the same key, so an insert
retried after a crash finds its rows already there, and a document edit re-embeds only the chunks whose text moved.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from tokenizers import Tokenizer

from tasks.rag.config import ChunkerConfig

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
HEADING = re.compile(r"^(#{1,6}\s|[A-Z0-9][^\n.!?:;]{0,80}$)")  # markdown heading, or a short unpunctuated line


@dataclass(frozen=True)
class Document:
    """One curated record: what the index is built from."""

    doc_id: str
    text: str
    source: str = ""

    @property
    def content_hash(self) -> str:
        """Changes when anything stored with the document's chunks changes."""
        return _sha256(self.doc_id, self.source, self.text)


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    source: str
    text: str

    @property
    def content_hash(self) -> str:
        return _sha256(self.doc_id, self.source, self.text)


@lru_cache(maxsize=2)
def model_tokenizer(path: str) -> Tokenizer:
    """The embedding model's word-piece tokenizer (tokenizer.json next to its weights), without special tokens."""
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class Chunker:
    """Splits documents the way one ChunkerConfig says; the same input always gives the same chunks."""

    def __init__(self, config: ChunkerConfig, tokenizer: Tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer

    def chunk(self, doc: Document) -> list[Chunk]:
        if self.config.kind == "token_window":
            pieces = self.token_windows(doc.text, self.config.size, self.config.overlap)
        else:
            pieces = self.sections(doc.text, self.config.max_tokens)
        unique = dict.fromkeys(p for p in pieces if p.strip())  # a repeated passage is stored once per document
        return [Chunk(doc.doc_id, doc.source, text) for text in unique]

    def chunk_all(self, docs: Iterable[Document]) -> list[Chunk]:
        return [chunk for doc in docs for chunk in self.chunk(doc)]

    def token_windows(self, text: str, size: int, overlap: int) -> list[str]:
        """Windows of at most `size` tokens made of whole words, each starting at the first word that lies within
        the last `overlap` tokens of the previous one; cut from the original text, so nothing is rewritten."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        tokens = [(span, word) for span, word in zip(encoding.offsets, encoding.word_ids, strict=True)
                  if span[1] > span[0]]
        starts = [i for i, (_, word) in enumerate(tokens) if i == 0 or word != tokens[i - 1][1]]
        ends = [*starts[1:], len(tokens)]  # token end of each word
        windows: list[str] = []
        first = 0  # index into starts: the window's first word
        while first < len(starts):
            last = first  # one past the window's last word; a word longer than `size` still makes one window
            while last < len(starts) and (last == first or ends[last] - starts[first] <= size):
                last += 1
            end = ends[last - 1]
            windows.append(text[tokens[starts[first]][0][0]:tokens[end - 1][0][1]])
            if last == len(starts):
                break
            first = next(w for w in range(first + 1, last + 1) if starts[w] >= end - overlap)
        return windows

    def sections(self, text: str, max_tokens: int) -> list[str]:
        """Paragraphs packed in order up to max_tokens; a heading always starts a new section; a paragraph longer
        than the budget is cut into token windows (1/8 overlap) rather than truncated."""
        sections: list[str] = []
        current: list[str] = []
        used = 0
        for paragraph in (p.strip() for p in PARAGRAPH_BREAK.split(text)):
            if not paragraph:
                continue
            tokens = self._count(paragraph)
            if current and (HEADING.match(paragraph) or used + tokens > max_tokens):
                sections.append("\n\n".join(current))
                current, used = [], 0
            if tokens > max_tokens:
                sections.extend(self.token_windows(paragraph, max_tokens, max_tokens // 8))
                continue
            current.append(paragraph)
            used += tokens
        if current:
            sections.append("\n\n".join(current))
        return sections

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
