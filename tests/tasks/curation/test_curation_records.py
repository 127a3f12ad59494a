from __future__ import annotations

import json

from tasks.curation.records import (
    decode,
    preview,
    read_file,
    read_files,
    read_jsonl,
    record_id_for_path,
    to_jsonl,
)


def test_jsonl_reads_good_lines_and_quarantines_bad_ones_with_file_and_line() -> None:
    data = b"\n".join([
        b'{"id": "a", "text": "hello", "meta": {"lang": "en"}}',
        b"",
        b'{"id": "b", "text": "cut off',
        b'{"id": "c"}',
        b'{"id": 4, "text": "x"}',
        b"[1, 2]",
        b'{"id": "d", "text": "fine", "source": "crawl"}',
    ])
    records, rejected = read_jsonl("shard.jsonl", data)
    assert [(r["id"], r["source"]) for r in records] == [("a", "shard.jsonl"), ("d", "crawl")]
    assert records[0]["meta"] == {"lang": "en", "origin": "shard.jsonl:1"}
    assert [(e.id, e.stage, e.reason) for e in rejected] == [
        ("shard.jsonl:3", "read", "malformed_json"),
        ("shard.jsonl:4", "read", "missing_field:text"),
        ("shard.jsonl:5", "read", "invalid_field:id"),
        ("shard.jsonl:6", "read", "malformed_json"),
    ]
    assert rejected[1].detail == "shard.jsonl:4: field 'text' is required"


def test_invalid_utf8_reaches_the_record_as_surrogates_and_round_trips() -> None:
    records, _ = read_jsonl("s.jsonl", b'{"id": "x", "text": "ok \xff\xfe end"}')
    assert records[0]["text"] == "ok \udcff\udcfe end"
    assert preview(records[0]["text"]) == "ok \\xff\\xfe end"
    line = to_jsonl(records)
    assert json.loads(line)["text"] == records[0]["text"]


def test_documents_get_their_path_as_id_and_a_content_type() -> None:
    records, rejected = read_file("pages/a.html", b"<p>hi</p>")
    assert rejected == [] and records[0]["id"] == "pages/a.html"
    assert records[0]["meta"]["content_type"] == "text/html"
    assert read_file("notes/b.md", b"# t")[0][0]["meta"]["content_type"] == "text/markdown"
    assert record_id_for_path("\\docs\\c.txt") == "docs/c.txt"


def test_unsupported_files_are_quarantined_and_others_read_in_path_order() -> None:
    assert read_file("x.pdf", b"%PDF")[1][0].reason == "unsupported_format"
    records, _ = read_files({"b.txt": b"two", "a.txt": b"one", "manifest.json": b"{}"})
    assert [r["id"] for r in records] == ["a.txt", "b.txt"]
    assert decode(b"\xc3\xa9") == "é"


def test_jsonl_writer_keeps_unicode_readable() -> None:
    assert to_jsonl([{"text": "Grüße"}]) == '{"text": "Grüße"}\n'.encode()
