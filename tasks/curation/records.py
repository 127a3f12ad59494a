"""Records and the readers that turn raw bytes (read from lakeFS by the caller) into them.

A record is a plain dict: `id`, `text`, `source`, `meta`. Readers decode bytes as UTF-8 with
`surrogateescape`, so an invalid byte survives as a lone surrogate (U+DC80..U+DCFF) in `text` and the
normalise stage, not the reader, decides whether to repair or drop the record. A line or file the reader
cannot turn into a record becomes a `QuarantineEntry` naming `file:line` and the rule, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, TypedDict

READ_STAGE = "read"
META_LANGUAGE = "language"  # meta key the language stage writes and the quality gate reads
PREVIEW_CHARS = 200
JSONL_SUFFIXES = frozenset({".jsonl"})
TEXT_SUFFIXES = frozenset({".txt", ".md"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = JSONL_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES
REQUIRED_FIELDS = ("id", "text")
# Deeper `meta` is no metadata anyone writes on purpose, and near the interpreter's recursion limit every
# later json.dumps of the record would fail; such a line is quarantined at the door.
MAX_META_DEPTH = 32


class Record(TypedDict):
    id: str
    text: str
    source: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class QuarantineEntry:
    """Why a record left the pipeline: the stage and rule that dropped it, with a preview to inspect."""

    id: str
    source: str
    stage: str
    reason: str
    detail: str
    preview: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def make_record(record_id: str, text: str, source: str, meta: Mapping[str, Any] | None = None) -> Record:
    return Record(id=record_id, text=text, source=source, meta=dict(meta or {}))


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first `limit` characters, with undecodable bytes shown as `\\xNN` so the preview is valid UTF-8
    (a lone surrogate that came as a JSON escape, e.g. "\\ud800", is shown as that escape)."""
    try:
        return text[:limit].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def quarantine(record: Record, stage: str, reason: str, detail: str = "") -> QuarantineEntry:
    return QuarantineEntry(record["id"], record["source"], stage, reason, detail, preview(record["text"]))


def decode(data: bytes) -> str:
    """UTF-8 that never fails: invalid bytes become lone surrogates the normalise stage can count."""
    return data.decode("utf-8", "surrogateescape")


def record_id_for_path(path: str) -> str:
    """A file's record id is its path relative to the corpus root, in POSIX form."""
    return PurePosixPath(path.replace("\\", "/")).as_posix().lstrip("/")


def is_supported(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in SUPPORTED_SUFFIXES


def read_jsonl(name: str, data: bytes, default_source: str | None = None, first_line: int = 1
               ) -> tuple[list[Record], list[QuarantineEntry]]:
    """One record per non-blank line; `source` defaults to the file name, `meta` to {}. `first_line` numbers the
    lines of a part of a file read as a stream (a part starts after a newline)."""
    records: list[Record] = []
    rejected: list[QuarantineEntry] = []
    for number, raw_line in enumerate(data.splitlines(), start=first_line):
        line = decode(raw_line)
        if not line.strip():
            continue
        where = f"{name}:{number}"
        record, problem = _parse_jsonl_line(line, default_source or name)
        if record is None:
            reason, detail = problem
            rejected.append(QuarantineEntry(where, default_source or name, READ_STAGE, reason, f"{where}: {detail}",
                                            preview(line)))
            continue
        record["meta"].setdefault("origin", where)
        records.append(record)
    return records, rejected


def _parse_jsonl_line(line: str, default_source: str) -> tuple[Record | None, tuple[str, str]]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as error:
        return None, ("malformed_json", f"not valid JSON ({error.msg} at column {error.colno})")
    except RecursionError:
        return None, ("malformed_json", "nested too deeply to parse")
    if not isinstance(obj, dict):
        return None, ("malformed_json", f"expected a JSON object, got {type(obj).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in obj:
            return None, (f"missing_field:{field}", f"field '{field}' is required")
        if not isinstance(obj[field], str):
            actual = type(obj[field]).__name__
            return None, (f"invalid_field:{field}", f"field '{field}' must be a string, got {actual}")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        return None, ("invalid_field:meta", f"field 'meta' must be an object, got {type(meta).__name__}")
    if nesting_depth(meta) > MAX_META_DEPTH:
        return None, ("invalid_field:meta", f"field 'meta' is nested deeper than {MAX_META_DEPTH} levels")
    source = obj.get("source", default_source)
    if not isinstance(source, str):
        return None, ("invalid_field:source", f"field 'source' must be a string, got {type(source).__name__}")
    return make_record(obj["id"], obj["text"], source, meta), ("", "")


def nesting_depth(value: Any) -> int:
    """Depth of nested lists and objects, counted without recursion (1 for a flat object)."""
    depth, level = 0, [value]
    while level:
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            break
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def read_document(name: str, data: bytes, source: str | None = None) -> Record:
    """A whole .txt/.md/.html file as one record; HTML is marked so normalise strips its markup."""
    suffix = PurePosixPath(name).suffix.lower()
    content_type = "text/html" if suffix in HTML_SUFFIXES else "text/markdown" if suffix == ".md" else "text/plain"
    record_id = record_id_for_path(name)
    return make_record(record_id, decode(data), source or record_id, {"content_type": content_type, "origin": name})


def read_file(name: str, data: bytes) -> tuple[list[Record], list[QuarantineEntry]]:
    """Dispatch on the file suffix; an unsupported suffix is a quarantine entry, not a silent skip."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return read_jsonl(name, data)
    if suffix in TEXT_SUFFIXES | HTML_SUFFIXES:
        return [read_document(name, data)], []
    entry = QuarantineEntry(record_id_for_path(name), name, READ_STAGE, "unsupported_format",
                            f"{name}: suffix '{suffix}' is not one of {sorted(SUPPORTED_SUFFIXES)}", "")
    return [], [entry]


def read_files(files: Mapping[str, bytes]) -> tuple[list[Record], list[QuarantineEntry]]:
    """All supported files in sorted path order, so "keep the first duplicate" is deterministic."""
    records: list[Record] = []
    rejected: list[QuarantineEntry] = []
    for name in sorted(path for path in files if is_supported(path)):
        file_records, file_rejected = read_file(name, files[name])
        records.extend(file_records)
        rejected.extend(file_rejected)
    return records, rejected


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """JSONL, UTF-8. A row holding undecodable bytes is written ASCII-escaped so it round-trips exactly."""
    lines = []
    for row in rows:
        line = json.dumps(row, ensure_ascii=False, sort_keys=True)
        try:
            lines.append(line.encode("utf-8"))
        except UnicodeEncodeError:
            lines.append(json.dumps(row, ensure_ascii=True, sort_keys=True).encode("ascii"))
    return b"".join(line + b"\n" for line in lines)
