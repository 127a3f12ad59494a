"""Where the curation executors read raw shards and write their outputs, as streams.

A raw JSONL file is read in parts of `CHUNK_BYTES` cut after a newline, and its records come out in blocks of
`BLOCK_RECORDS`, so no process holds a whole shard, let alone the corpus; outputs are written through a stream
that spools to a temporary file. Two stores with one interface: a lakeFS ref (the steps) and a local folder (the
benchmark).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo
from tasks.curation.records import JSONL_SUFFIXES, QuarantineEntry, Record, read_file, read_jsonl

CHUNK_BYTES = 4 * 1024 * 1024
BLOCK_RECORDS = 2000


class Store(Protocol):
    def open_reader(self, path: str) -> BinaryIO: ...

    def open_writer(self, path: str) -> BinaryIO: ...


@dataclass(frozen=True)
class LakeFSStore:
    """Raw files read at `read_ref` (a commit, for a reproducible read), outputs written to `write_branch`."""

    endpoint: LakeFSEndpoint
    repo: str
    read_ref: str
    write_branch: str

    def open_reader(self, path: str) -> BinaryIO:
        return VersionedRepo(self.endpoint, self.repo).open_reader(self.read_ref, path)

    def open_writer(self, path: str) -> BinaryIO:
        return VersionedRepo(self.endpoint, self.repo).open_writer(self.write_branch, path)


@dataclass(frozen=True)
class FolderStore:
    """Raw files under `root/`, outputs written under `out/`."""

    root: Path
    out: Path

    def open_reader(self, path: str) -> BinaryIO:
        return (self.root / path).open("rb")

    def open_writer(self, path: str) -> BinaryIO:
        target = self.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("wb")


def line_parts(stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes) parts of a stream, each ending after a newline (the last where the data ends)."""
    line, pending = 1, b""
    while chunk := stream.read(chunk_bytes):
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut:
            part, pending = pending[:cut], pending[cut:]
            yield line, part
            line += len(part.splitlines())
    if pending:
        yield line, pending


def record_blocks(
    store: Store, paths: Sequence[str], block_records: int = BLOCK_RECORDS
) -> Iterator[tuple[list[Record], list[QuarantineEntry]]]:
    """One shard's records and reader rejections, in file then line order, a block at a time: the same records
    `records.read_file` makes of the whole files."""
    records: list[Record] = []
    rejected: list[QuarantineEntry] = []
    for path in paths:
        with store.open_reader(path) as stream:
            if PurePosixPath(path).suffix.lower() in JSONL_SUFFIXES:
                for first_line, part in line_parts(stream):
                    found, bad = read_jsonl(path, part, first_line=first_line)
                    records += found
                    rejected += bad
                    if len(records) >= block_records:
                        yield records, rejected
                        records, rejected = [], []
            else:
                found, bad = read_file(path, stream.read())
                records += found
                rejected += bad
        if len(records) >= block_records:
            yield records, rejected
            records, rejected = [], []
    if records or rejected:
        yield records, rejected
