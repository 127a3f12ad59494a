"""Pure tree algebra behind diff, merge, revert and cherry-pick: no I/O, so it is tested directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import BadRequest
from .model import Entry, Tree

ChangeType = Literal["added", "removed", "changed"]
Strategy = Literal["source-wins", "dest-wins"]
STRATEGIES: tuple[str, ...] = ("source-wins", "dest-wins")


@dataclass(frozen=True)
class Change:
    path: str
    type: ChangeType
    left: Entry | None
    right: Entry | None


def diff_trees(left: Tree, right: Tree) -> list[Change]:
    """Changes that turn left into right, sorted by path."""
    changes = []
    for path in sorted(left.keys() | right.keys()):
        before, after = left.get(path), right.get(path)
        if before is None and after is not None:
            changes.append(Change(path, "added", None, after))
        elif after is None and before is not None:
            changes.append(Change(path, "removed", before, None))
        elif before is not None and after is not None and before.identity() != after.identity():
            changes.append(Change(path, "changed", before, after))
    return changes


@dataclass(frozen=True)
class MergeOutcome:
    tree: Tree
    conflicts: list[str]


def parse_strategy(strategy: str | None) -> Strategy | None:
    if strategy in (None, ""):
        return None
    if strategy not in STRATEGIES:
        raise BadRequest(f"merge strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    return strategy  # type: ignore[return-value]


def three_way(base: Tree, source: Tree, dest: Tree, strategy: Strategy | None) -> MergeOutcome:
    """Apply source's changes since base onto dest; a path both sides changed differently is a conflict
    unless the strategy picks a side."""
    merged: Tree = {}
    conflicts = []
    for path in sorted(base.keys() | source.keys() | dest.keys()):
        b, s, d = (_identity(t.get(path)) for t in (base, source, dest))
        if s == d or s == b:
            chosen = dest.get(path)
        elif d == b:
            chosen = source.get(path)
        elif strategy == "source-wins":
            chosen = source.get(path)
        elif strategy == "dest-wins":
            chosen = dest.get(path)
        else:
            conflicts.append(path)
            continue
        if chosen is not None:
            merged[path] = chosen
    return MergeOutcome(merged, conflicts)


def _identity(entry: Entry | None) -> str | None:
    return None if entry is None else entry.identity()
