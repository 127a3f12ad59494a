"""Chunkers on real documentation text with the embedding model's own tokenizer; content-hash keys."""

from __future__ import annotations

import pytest

from tasks.rag import config as rag_config
from tasks.rag.chunking import Chunker, Document, model_tokenizer
from tasks.rag.config import ChunkerConfig
from tasks.rag.embedding import model_path
from tests.tasks.rag.corpus import sample_records

TOKENIZER = model_tokenizer(str(model_path() / "tokenizer.json"))
LONG = " ".join(f"word{n} is followed by a comma, then more text." for n in range(120))


def tokens(text: str) -> list[int]:
    return TOKENIZER.encode(text, add_special_tokens=False).ids


def windows(size: int, overlap: int) -> Chunker:
    return Chunker(ChunkerConfig("t", "token_window", size=size, overlap=overlap), TOKENIZER)


def test_token_windows_are_whole_words_with_the_configured_overlap():
    full = tokens(LONG)
    chunks = windows(64, 16).token_windows(LONG, 64, 16)
    assert len(chunks) > 3
    assert all(c in LONG for c in chunks), "a window is an exact slice of the original text"
    assert LONG.startswith(chunks[0]) and LONG.endswith(chunks[-1])
    spans = []
    for chunk in chunks:
        ids = tokens(chunk)
        assert len(ids) <= 64
        start = next(i for i in range(len(full)) if full[i:i + len(ids)] == ids)  # no word cut: same word pieces
        spans.append((start, start + len(ids)))
    for (_, left_end), (right_start, _) in zip(spans, spans[1:], strict=False):
        assert 16 - 4 < left_end - right_start <= 16, "consecutive windows share about `overlap` tokens"
    assert spans[-1][1] == len(full)


def test_a_short_text_is_one_window_and_an_empty_one_none():
    chunker = windows(128, 32)
    assert [c.text for c in chunker.chunk(Document("d", "a short note", "s"))] == ["a short note"]
    assert chunker.chunk(Document("d", "   \n ", "s")) == []


def test_sections_start_at_headings_and_respect_the_budget():
    text = ("# Install\n\npip install thing\n\nIt needs Python 3.11.\n\n# Usage\n\nCall thing.run() with a path."
            f"\n\n{LONG}")
    chunker = Chunker(ChunkerConfig("s", "sections", max_tokens=60), TOKENIZER)
    sections = chunker.sections(text, 60)
    assert sections[0] == "# Install\n\npip install thing\n\nIt needs Python 3.11."
    assert sections[1] == "# Usage\n\nCall thing.run() with a path."
    assert len(sections) > 4, "the long paragraph is cut into windows, not truncated"
    assert all(len(tokens(s)) <= 60 for s in sections)


def test_sections_on_real_documents_keep_every_paragraph():
    chunker = Chunker(rag_config.load("sections").chunker, TOKENIZER)
    for record in sample_records(20):
        joined = "\n".join(c.text for c in chunker.chunk(Document(record["id"], record["text"], record["source"])))
        for paragraph in record["text"].split("\n\n"):
            assert all(word in joined for word in paragraph.split()[:3]), (record["id"], paragraph[:40])


def test_chunk_keys_are_content_hashes():
    chunker = windows(128, 32)
    doc = Document("pkg:1", "The same passage, repeated twice in this text.\n\n" * 2, "pypi:pkg")
    first, again = chunker.chunk(doc), chunker.chunk(doc)
    assert [c.content_hash for c in first] == [c.content_hash for c in again], "same input, same keys"
    sections = Chunker(ChunkerConfig("s", "sections", max_tokens=16), TOKENIZER).chunk(doc)
    assert len(sections) == 1, "a passage repeated within one document is stored once"
    other_doc = Document("pkg:2", doc.text, doc.source)
    other_source = Document("pkg:1", doc.text, "pypi:other")
    assert len({c.content_hash for d in (doc, other_doc, other_source) for c in chunker.chunk(d)}) == 3
    assert doc.content_hash != Document("pkg:1", doc.text + " ", doc.source).content_hash


def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="overlap 128 must be >= 0 and < size 128"):
        ChunkerConfig("t", "token_window", size=128, overlap=128)
    with pytest.raises(ValueError, match="chunker 'pages' is not configured in rag.yaml; choose one of sections, tokens"):
        rag_config.load("pages")
    with pytest.raises(ValueError, match="index.storage 'float8'"):
        rag_config.load(storage="float8")
    assert rag_config.load().chunker.fingerprint == "token_window(size=128,overlap=32)"
    assert rag_config.load(gate_mode="vector").evaluation.gate.mode == "vector"  # a run's Param overrides rag.yaml
    with pytest.raises(ValueError, match="evaluation.gate.mode"):
        rag_config.load(gate_mode="bm25")
