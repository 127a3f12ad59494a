"""The store opens data directories written by earlier emulator versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stack.lakefs_emulator.store import Store

# The branches table as it was before hidden branches existed.
OLD_BRANCHES = "CREATE TABLE branches (repo TEXT, name TEXT, commit_id TEXT, PRIMARY KEY (repo, name))"


def test_branches_written_before_hidden_branches_stay_visible(tmp_path: Path) -> None:
    db = tmp_path / "lakefs.db"
    with sqlite3.connect(db) as old:
        old.execute(OLD_BRANCHES)
        old.execute("INSERT INTO branches VALUES ('old-repo', 'legacy', 'c0ffee')")
    store = Store(db, committer="admin")
    store.create_repo("old-repo", "local://old", "main", bare=True)
    store.create_branch("old-repo", "tx-1", "legacy", hidden=True)
    assert store.branches("old-repo") == [("legacy", "c0ffee")]
    assert store.branches("old-repo", show_hidden=True) == [("legacy", "c0ffee"), ("tx-1", "c0ffee")]
    store.close()
