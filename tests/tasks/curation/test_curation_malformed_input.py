"""Malformed input never fails a run: whatever bytes arrive, every line or file ends as a kept record or a
quarantine entry with a reason, the counts balance, and what the step writes reads back as JSON."""

from __future__ import annotations

import json
import random

import pytest

from tasks.curation.pipeline import StageRun, curate, load_config
from tasks.curation.records import MAX_META_DEPTH, read_jsonl, to_jsonl

PROSE = ("The reading room of the city library is open to every visitor from Monday to Friday. Books that "
         "are due while the building is closed can be returned later without any fee, and the staff will "
         "help with questions about the new catalogue that replaced the old card index this spring.")
VALID = json.dumps({"id": "ok", "text": PROSE, "meta": {"lang": "en"}}).encode()


def _line(**fields: object) -> bytes:
    return json.dumps({"id": "x", "text": PROSE, **fields}).encode()


HOSTILE_LINES = {
    "deep-meta": b'{"id": "d", "text": "t", "meta": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "deep-text": b'{"id": "d", "text": ' + b"[" * 100_000 + b"}",
    "meta-too-deep": _line(meta={"a": json.loads("[" * (MAX_META_DEPTH + 1) + "]" * (MAX_META_DEPTH + 1))}),
    "nul-bytes": _line(text="nul \x00 in \x00 the text " + PROSE),
    "raw-nul": b'{"id": "n", "text": "a\x00b"}',
    "huge-line": _line(text=PROSE * 2000),
    "binary": bytes(b for b in range(256) if b not in b"\r\n") * 4,
    "latin-1": '{"id": "l", "text": "caf\u00e9 cr\u00e8me '.encode("latin-1") + PROSE.encode() + b'"}',
    "utf-16": _line(text="wide").decode().encode("utf-16"),
    "lone-surrogate": b'{"id": "s", "text": "half \\ud800 a pair ' + PROSE.encode() + b'"}',
    "id-int": _line(id=7),
    "text-list": _line(text=["a", "b"]),
    "meta-string": _line(meta="x"),
    "source-number": _line(source=3),
    "top-level-array": b"[1, 2, 3]",
    "top-level-null": b"null",
    "nan": b'{"id": "nan", "text": "' + PROSE.encode() + b'", "meta": {"score": NaN}}',
    "empty-object": b"{}",
    "bom": b"\xef\xbb\xbf" + VALID,
}


def _fuzzed_lines(count: int, seed: int) -> list[bytes]:
    """Valid lines with random bytes flipped, inserted or cut: what a torn write or a bad disk leaves."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        line = bytearray(VALID)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(line))
            action = rng.choice(("flip", "insert", "cut"))
            if action == "flip":
                line[position] = rng.randrange(256)
            elif action == "insert":
                line[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                del line[position:]
                break
        lines.append(bytes(line).replace(b"\n", b" ").replace(b"\r", b" "))
    return lines


def _files() -> dict[str, bytes]:
    rng = random.Random(13)
    return {
        "hostile.jsonl": b"\n".join(HOSTILE_LINES.values()) + b"\n",
        "fuzzed.jsonl": b"\n".join(_fuzzed_lines(300, seed=5)),
        "crlf.jsonl": VALID.replace(b'"ok"', b'"crlf"') + b"\r\n\r\n",
        "empty.jsonl": b"",
        "binary.txt": bytes(rng.randrange(256) for _ in range(4096)),
        "nul.md": b"# Title\n\n" + PROSE.encode().replace(b" ", b"\x00 ", 5),
        "broken.html": b"<html><body><p>" + PROSE.encode() + b"<div><<<>>>&#99999999999;&bogus;<script>x",
        "utf16.txt": PROSE.encode("utf-16"),
        "empty.txt": b"",
    }


@pytest.fixture(scope="module")
def run() -> StageRun:
    return curate(_files(), load_config())


def test_every_input_is_kept_or_quarantined_with_a_reason(run: StageRun) -> None:
    files = _files()
    inputs = sum(len([line for line in data.splitlines() if line.strip()]) for name, data in files.items()
                 if name.endswith(".jsonl")) + sum(not name.endswith(".jsonl") for name in files)
    assert run.counters_by_stage["read"]["seen"] == inputs == len(run.kept) + len(run.quarantined)
    for stage, counters in run.counters_by_stage.items():
        assert counters["seen"] == counters["kept"] + counters["dropped"], stage
    assert all(entry.stage and entry.reason for entry in run.quarantined)
    assert not [entry for entry in run.quarantined if entry.reason.startswith("error:")], "a stage raised"


def test_what_the_step_writes_reads_back(run: StageRun) -> None:
    for data in (to_jsonl(run.kept), to_jsonl(entry.to_dict() for entry in run.quarantined)):
        assert all(isinstance(json.loads(line), dict) for line in data.splitlines())


@pytest.mark.parametrize(("name", "reason", "detail"), [
    ("deep-meta", "malformed_json", "nested too deeply to parse"),
    ("deep-text", "malformed_json", "nested too deeply to parse"),
    ("meta-too-deep", "invalid_field:meta", f"field 'meta' is nested deeper than {MAX_META_DEPTH} levels"),
    ("binary", "malformed_json", ""),
    ("utf-16", "malformed_json", ""),
    ("id-int", "invalid_field:id", ""),
    ("text-list", "invalid_field:text", ""),
    ("meta-string", "invalid_field:meta", ""),
    ("source-number", "invalid_field:source", ""),
    ("top-level-null", "malformed_json", "expected a JSON object, got NoneType"),
])
def test_each_hostile_line_is_quarantined_naming_line_and_rule(name: str, reason: str, detail: str) -> None:
    _, rejected = read_jsonl("in.jsonl", HOSTILE_LINES[name])
    assert [(entry.id, entry.reason) for entry in rejected] == [("in.jsonl:1", reason)]
    assert rejected[0].detail.startswith(f"in.jsonl:1: {detail}")
