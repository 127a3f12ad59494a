"""The pure 3-way merge and diff the emulator's merge, revert and cherry-pick are built on."""

from __future__ import annotations

import pytest

from stack.lakefs_emulator.errors import BadRequest
from stack.lakefs_emulator.merge import diff_trees, parse_strategy, three_way
from stack.lakefs_emulator.model import Entry, meta_range_id


def entry(content: str) -> Entry:
    return Entry(address=content, checksum=content, size=len(content), mtime=0)


BASE = {"same": entry("s"), "src-edit": entry("1"), "dst-edit": entry("2"), "both": entry("3"), "gone": entry("4")}
SOURCE = {**BASE, "src-edit": entry("1b"), "both": entry("3s"), "added": entry("n")}
DEST = {**BASE, "dst-edit": entry("2b"), "both": entry("3d")}
del SOURCE["gone"]


def test_non_overlapping_changes_combine_and_overlap_conflicts() -> None:
    outcome = three_way(BASE, SOURCE, DEST, None)
    assert outcome.conflicts == ["both"]
    assert outcome.tree["src-edit"] == entry("1b") and outcome.tree["dst-edit"] == entry("2b")
    assert "gone" not in outcome.tree and outcome.tree["added"] == entry("n")


@pytest.mark.parametrize(("strategy", "winner"), [("source-wins", "3s"), ("dest-wins", "3d")])
def test_strategies_resolve_conflicts(strategy: str, winner: str) -> None:
    outcome = three_way(BASE, SOURCE, DEST, parse_strategy(strategy))
    assert outcome.conflicts == [] and outcome.tree["both"] == entry(winner)


def test_unknown_strategy_is_rejected_by_name() -> None:
    with pytest.raises(BadRequest, match="'theirs'"):
        parse_strategy("theirs")


def test_diff_and_tree_ids_ignore_mtime() -> None:
    assert [(c.type, c.path) for c in diff_trees(BASE, SOURCE)] == [
        ("added", "added"), ("changed", "both"), ("removed", "gone"), ("changed", "src-edit")]
    later = {p: Entry(e.address, e.checksum, e.size, 99) for p, e in BASE.items()}
    assert diff_trees(BASE, later) == [] and meta_range_id(BASE) == meta_range_id(later)
