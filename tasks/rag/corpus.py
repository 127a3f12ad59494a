"""The curated corpus at a lakeFS commit, and what changed between two commits.

curate_corpus publishes ONE JSONL file (curated/corpus.jsonl), so lakeFS's diff can only say that file changed.
The diff is therefore two-level: lakeFS's diff between the commits decides whether the file changed at all (if not,
nothing is read or embedded), then the two versions are compared record by record on id and content hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from tasks.common.versioned_data import VersionedRepo
from tasks.rag.chunking import Document


class CorpusError(ValueError):
    """The corpus at a commit cannot be indexed; the message names the commit, the line and the field."""


@dataclass(frozen=True)
class CorpusDiff:
    """Documents to (re)index and document ids whose chunks must go."""

    added: tuple[Document, ...]
    changed: tuple[Document, ...]
    removed: tuple[str, ...]

    @property
    def upserts(self) -> tuple[Document, ...]:
        return self.added + self.changed

    def counts(self) -> dict[str, int]:
        return {"docs_added": len(self.added), "docs_changed": len(self.changed), "docs_removed": len(self.removed)}


def parse(data: bytes, where: str) -> dict[str, Document]:
    """Records by id; a record without a string id/text or a repeated id is refused, naming the line."""
    docs: dict[str, Document] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CorpusError(f"{where} line {number}: not JSON ({exc})") from exc
        for field in ("id", "text"):
            if not isinstance(record.get(field), str):
                raise CorpusError(f"{where} line {number}: field {field!r} must be a string")
        if record["id"] in docs:
            raise CorpusError(f"{where} line {number}: id {record['id']!r} appears twice; ids must be unique")
        docs[record["id"]] = Document(record["id"], record["text"], str(record.get("source") or ""))
    return docs


def read(repo: VersionedRepo, commit: str, path: str) -> dict[str, Document]:
    return parse(repo.get_object(commit, path), f"lakefs://{repo.repo_id}/{commit[:12]}/{path}")


def diff_documents(old: Mapping[str, Document], new: Mapping[str, Document]) -> CorpusDiff:
    """Record-level diff: added and removed by id, changed where the content hash differs."""
    return CorpusDiff(
        added=tuple(new[i] for i in sorted(new.keys() - old.keys())),
        changed=tuple(new[i] for i in sorted(new.keys() & old.keys()) if new[i].content_hash != old[i].content_hash),
        removed=tuple(sorted(old.keys() - new.keys())),
    )


def diff_commits(repo: VersionedRepo, base: str, target: str, path: str) -> CorpusDiff:
    """What indexing `target` needs on top of an index of `base`."""
    if not any(change.path == path for change in repo.diff(base, target, three_dot=False, prefix=path)):
        return CorpusDiff((), (), ())
    return diff_documents(read(repo, base, path), read(repo, target, path))
