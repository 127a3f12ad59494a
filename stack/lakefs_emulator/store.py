"""Durable metadata (repositories, branches, tags, commits, trees, staging) in SQLite WAL, and ref resolution.

One process owns the data directory; every public call holds one lock so the single SQLite connection is
never used by two request threads at once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import BadRequest, Conflict, NotFound
from .model import Commit, Entry, Tree, commit_id, meta_range_id

REPO_NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
BRANCH_NAME_RULE = re.compile(r"^\w[-\w]*$", re.ASCII)
TAG_NAME_RULE = re.compile(r"^[^\s~^:?*\[\\@]+$")
NAMESPACE_RULE = re.compile(r"^(s3|gs|https?|mem|local|transient)://.*$")
# lakeFS with one blockstore configured knows one storage id, the empty string; any other is refused.
STORAGE_ID = ""
_REF_MODIFIER = re.compile(r"(~\d*|\^\d*)$")
_HEX = re.compile(r"^[0-9a-f]{6,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (name TEXT PRIMARY KEY, storage_namespace TEXT NOT NULL,
    default_branch TEXT NOT NULL, creation_date INTEGER NOT NULL, protection TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS commits (repo TEXT, id TEXT, parents TEXT, committer TEXT, message TEXT,
    creation_date INTEGER, meta_range_id TEXT, metadata TEXT, generation INTEGER, PRIMARY KEY (repo, id));
CREATE TABLE IF NOT EXISTS ranges (id TEXT, path TEXT, entry TEXT NOT NULL, PRIMARY KEY (id, path));
CREATE TABLE IF NOT EXISTS branches (repo TEXT, name TEXT, commit_id TEXT, hidden INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS tags (repo TEXT, name TEXT, commit_id TEXT, PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS staging (repo TEXT, branch TEXT, path TEXT, entry TEXT,
    PRIMARY KEY (repo, branch, path));
"""


@dataclass(frozen=True)
class Repo:
    name: str
    storage_namespace: str
    default_branch: str
    creation_date: int

    def to_api(self) -> dict[str, object]:
        return {
            "id": self.name,
            "storage_namespace": self.storage_namespace,
            "default_branch": self.default_branch,
            "creation_date": self.creation_date,
            "storage_id": STORAGE_ID,
            "read_only": False,
        }


@dataclass(frozen=True)
class Resolved:
    """A ref expression resolved: the commit, and the branch when staged data should be visible."""

    commit_id: str
    staged_branch: str | None


def require(rule: re.Pattern[str], value: str, what: str) -> None:
    if not rule.match(value):
        raise BadRequest(f"{what} {value!r} is invalid: it must match {rule.pattern}")


class Store:
    def __init__(self, db_path: Path, committer: str) -> None:
        self.committer = committer
        self._lock = threading.RLock()
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._add_hidden_column()
        self._trees: dict[str, Tree] = {}

    def _add_hidden_column(self) -> None:
        """Data directories written before hidden branches existed get the column, every branch visible."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(branches)")}
        if "hidden" not in columns:
            self._db.execute("ALTER TABLE branches ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock and one SQLite transaction; nested use joins the outer one."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, *args: object) -> tuple | None:
        return self._db.execute(sql, args).fetchone()

    # repositories
    def create_repo(self, name: str, namespace: str, default_branch: str, bare: bool, storage_id: str | None = None
                    ) -> Repo:
        require(REPO_NAME_RULE, name, "repository name")
        require(NAMESPACE_RULE, namespace, "storage_namespace")
        require(BRANCH_NAME_RULE, default_branch, "default_branch")
        with self.transaction():
            if self._one("SELECT 1 FROM repos WHERE name=?", name):
                raise Conflict(f"repository {name!r} already exists")
            if storage_id not in (None, STORAGE_ID):
                raise BadRequest(f"storage id: invalid value {storage_id!r}: this server has one blockstore, "
                                 f"storage id {STORAGE_ID!r}")
            now = int(time.time())
            self._db.execute("INSERT INTO repos VALUES (?,?,?,?,'[]')", (name, namespace, default_branch, now))
            if not bare:
                first = self.add_commit(name, [], "Repository created", {}, {}, now)
                self._db.execute("INSERT INTO branches (repo, name, commit_id) VALUES (?,?,?)",
                                 (name, default_branch, first.id))
        return Repo(name, namespace, default_branch, now)

    def repo(self, name: str) -> Repo:
        with self._lock:
            row = self._one("SELECT name, storage_namespace, default_branch, creation_date FROM repos WHERE name=?",
                            name)
        if row is None:
            raise NotFound(f"repository {name!r} not found")
        return Repo(*row)

    def repos(self) -> list[Repo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, storage_namespace, default_branch, creation_date FROM repos ORDER BY name"
            ).fetchall()
        return [Repo(*row) for row in rows]

    def delete_repo(self, name: str) -> None:
        with self.transaction():
            self.repo(name)
            for table in ("commits", "branches", "tags", "staging"):
                self._db.execute(f"DELETE FROM {table} WHERE repo=?", (name,))
            self._db.execute("DELETE FROM repos WHERE name=?", (name,))

    def protection_rules(self, repo: str) -> list[str]:
        self.repo(repo)
        with self._lock:
            return json.loads(self._one("SELECT protection FROM repos WHERE name=?", repo)[0])

    def set_protection_rules(self, repo: str, patterns: list[str]) -> None:
        with self.transaction():
            self.repo(repo)
            self._db.execute("UPDATE repos SET protection=? WHERE name=?", (json.dumps(patterns), repo))

    # commits and trees
    def add_commit(
        self, repo: str, parents: list[str], message: str, metadata: dict[str, str], tree: Tree, date: int
    ) -> Commit:
        """Store tree and commit (idempotently: both are content-addressed)."""
        range_id = meta_range_id(tree)
        with self.transaction():
            if range_id and not self._one("SELECT 1 FROM ranges WHERE id=? LIMIT 1", range_id):
                self._db.executemany(
                    "INSERT INTO ranges VALUES (?,?,?)", [(range_id, p, e.to_json()) for p, e in tree.items()]
                )
            generation = 1 + max((self.commit(repo, p).generation for p in parents), default=0)
            cid = commit_id(parents, self.committer, message, date, range_id, metadata, generation)
            self._db.execute(
                "INSERT OR IGNORE INTO commits VALUES (?,?,?,?,?,?,?,?,?)",
                (repo, cid, json.dumps(parents), self.committer, message, date, range_id,
                 json.dumps(metadata), generation),
            )
        return Commit(cid, parents, self.committer, message, date, range_id, metadata, generation)

    def commit(self, repo: str, cid: str) -> Commit:
        with self._lock:
            row = self._one(
                "SELECT id, parents, committer, message, creation_date, meta_range_id, metadata, generation "
                "FROM commits WHERE repo=? AND id=?", repo, cid)
        if row is None:
            raise NotFound(f"commit {cid!r} not found in repository {repo!r}")
        return Commit(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])

    def tree(self, range_id: str) -> Tree:
        if not range_id:
            return {}
        if range_id not in self._trees:
            with self._lock:
                rows = self._db.execute("SELECT path, entry FROM ranges WHERE id=?", (range_id,)).fetchall()
            self._trees[range_id] = {path: Entry.from_json(entry) for path, entry in rows}
        return dict(self._trees[range_id])

    def commit_tree(self, repo: str, cid: str) -> Tree:
        return self.tree(self.commit(repo, cid).meta_range_id)

    # branches and tags
    def branch_head(self, repo: str, branch: str) -> str:
        with self._lock:
            self.repo(repo)
            row = self._one("SELECT commit_id FROM branches WHERE repo=? AND name=?", repo, branch)
        if row is None:
            raise NotFound(f"branch {branch!r} not found in repository {repo!r}")
        return row[0]

    def branches(self, repo: str, show_hidden: bool = False) -> list[tuple[str, str]]:
        """Branches by name; hidden ones (the SDK's transaction branches) only when asked for, as in lakeFS."""
        with self._lock:
            self.repo(repo)
            return self._db.execute(
                "SELECT name, commit_id FROM branches WHERE repo=? AND (hidden=0 OR ?) ORDER BY name",
                (repo, show_hidden)).fetchall()

    def create_branch(self, repo: str, name: str, source: str, hidden: bool = False) -> str:
        require(BRANCH_NAME_RULE, name, "branch name")
        with self.transaction():
            head = self.resolve(repo, source).commit_id
            if self._one("SELECT 1 FROM branches WHERE repo=? AND name=?", repo, name):
                raise Conflict(f"branch {name!r} already exists in repository {repo!r}")
            self._db.execute("INSERT INTO branches VALUES (?,?,?,?)", (repo, name, head, hidden))
        return head

    def move_branch(self, repo: str, branch: str, cid: str) -> None:
        with self.transaction():
            self._db.execute("UPDATE branches SET commit_id=? WHERE repo=? AND name=?", (cid, repo, branch))

    def delete_branch(self, repo: str, branch: str) -> None:
        with self.transaction():
            self.branch_head(repo, branch)
            if self.repo(repo).default_branch == branch:
                raise BadRequest(f"branch {branch!r} is the default branch of repository {repo!r}: cannot delete it")
            self._db.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, branch))
            self._db.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, branch))

    def tags(self, repo: str) -> list[tuple[str, str]]:
        with self._lock:
            self.repo(repo)
            return self._db.execute("SELECT name, commit_id FROM tags WHERE repo=? ORDER BY name", (repo,)).fetchall()

    def tag(self, repo: str, name: str) -> str:
        with self._lock:
            self.repo(repo)
            row = self._one("SELECT commit_id FROM tags WHERE repo=? AND name=?", repo, name)
        if row is None:
            raise NotFound(f"tag {name!r} not found in repository {repo!r}")
        return row[0]

    def create_tag(self, repo: str, name: str, ref: str, force: bool) -> str:
        require(TAG_NAME_RULE, name, "tag id")
        with self.transaction():
            cid = self.resolve(repo, ref).commit_id
            if not force and self._one("SELECT 1 FROM tags WHERE repo=? AND name=?", repo, name):
                raise Conflict(f"tag already exists: {name!r} in repository {repo!r}")
            self._db.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?)", (repo, name, cid))
        return cid

    def delete_tag(self, repo: str, name: str) -> None:
        with self.transaction():
            self.tag(repo, name)
            self._db.execute("DELETE FROM tags WHERE repo=? AND name=?", (repo, name))

    # staging
    def staged(self, repo: str, branch: str) -> dict[str, Entry | None]:
        """Staged entries of a branch; None is a tombstone (a delete of a committed object)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT path, entry FROM staging WHERE repo=? AND branch=?", (repo, branch)).fetchall()
        return {path: Entry.from_json(entry) if entry else None for path, entry in rows}

    def stage(self, repo: str, branch: str, path: str, entry: Entry | None) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO staging VALUES (?,?,?,?)",
                             (repo, branch, path, entry.to_json() if entry else None))

    def unstage(self, repo: str, branch: str, prefix: str = "", exact: bool = False) -> None:
        with self.transaction():
            if exact:
                self._db.execute("DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, prefix))
            else:
                self._db.execute("DELETE FROM staging WHERE repo=? AND branch=? AND substr(path, 1, ?)=?",
                                 (repo, branch, len(prefix), prefix))

    # refs
    def resolve(self, repo: str, ref: str) -> Resolved:
        """Resolve a lakeFS ref expression: branch, tag or commit id (or unique prefix), optionally followed by
        `@` (committed data only) and any number of `~N` / `^N` ancestry modifiers."""
        self.repo(repo)
        expr, steps = ref, []
        while (found := _REF_MODIFIER.search(expr)) and found.start() > 0:
            steps.insert(0, found.group())
            expr = expr[: found.start()]
        committed_only = expr.endswith("@")
        base = expr.rstrip("@")
        with self._lock:
            branch = self._one("SELECT commit_id FROM branches WHERE repo=? AND name=?", repo, base)
            tag = None if branch else self._one("SELECT commit_id FROM tags WHERE repo=? AND name=?", repo, base)
            if branch or tag:
                cid = (branch or tag)[0]
            elif _HEX.match(base):
                rows = self._db.execute("SELECT id FROM commits WHERE repo=? AND id LIKE ? LIMIT 2",
                                        (repo, base + "%")).fetchall()
                if len(rows) != 1:
                    raise NotFound(f"ref {ref!r} not found in repository {repo!r}" +
                                   (" (ambiguous commit prefix)" if rows else ""))
                cid = rows[0][0]
            else:
                raise NotFound(f"ref {ref!r} not found in repository {repo!r}")
        for step in steps:
            cid = self._ancestor(repo, cid, step, ref)
        staged = base if branch and not steps and not committed_only else None
        return Resolved(cid, staged)

    def _ancestor(self, repo: str, cid: str, step: str, ref: str) -> str:
        count = int(step[1:] or 1)
        if step[0] == "^":
            parents = self.commit(repo, cid).parents
            if count > len(parents):
                raise NotFound(f"ref {ref!r}: commit {cid[:12]} has no parent number {count}")
            return parents[count - 1] if count else cid
        for _ in range(count):
            parents = self.commit(repo, cid).parents
            if not parents:
                raise NotFound(f"ref {ref!r}: commit {cid[:12]} has no parent")
            cid = parents[0]
        return cid

    def view(self, repo: str, ref: str) -> Tree:
        """The objects visible at a ref: a branch shows its staged changes on top of its head commit."""
        resolved = self.resolve(repo, ref)
        tree = self.commit_tree(repo, resolved.commit_id)
        if resolved.staged_branch:
            for path, entry in self.staged(repo, resolved.staged_branch).items():
                if entry is None:
                    tree.pop(path, None)
                else:
                    tree[path] = entry
        return tree

    def object(self, repo: str, ref: str, path: str) -> Entry:
        entry = self.view(repo, ref).get(path)
        if entry is None:
            raise NotFound(f"object {path!r} not found at ref {ref!r} in repository {repo!r}")
        return entry
