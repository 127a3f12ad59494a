"""The records lakeFS's model is made of: object entries, trees (path -> entry) and commits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Entry:
    """One object as a commit or the staging area sees it; `address` names the blob (its SHA-256)."""

    address: str
    checksum: str
    size: int
    mtime: int
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)

    def identity(self) -> str:
        """What makes two entries "the same object" for diff and merge (lakeFS ignores mtime too)."""
        return json.dumps([self.address, self.content_type, sorted(self.metadata.items())])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Entry:
        return Entry(**json.loads(text))


Tree = dict[str, Entry]


def meta_range_id(tree: Tree) -> str:
    """Content address of a tree: equal trees share one id, as lakeFS metaranges do."""
    if not tree:
        return ""
    digest = hashlib.sha256()
    for path in sorted(tree):
        digest.update(path.encode() + b"\0" + tree[path].identity().encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class Commit:
    id: str
    parents: list[str]
    committer: str
    message: str
    creation_date: int
    meta_range_id: str
    metadata: dict[str, str]
    generation: int

    def to_api(self) -> dict[str, object]:
        return {**asdict(self), "version": 1}


def commit_id(
    parents: list[str],
    committer: str,
    message: str,
    creation_date: int,
    range_id: str,
    metadata: dict[str, str],
    generation: int,
) -> str:
    """A commit id is the SHA-256 of its content, so the same content always gets the same id."""
    body = json.dumps(
        [parents, committer, message, creation_date, range_id, sorted(metadata.items()), generation],
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()
