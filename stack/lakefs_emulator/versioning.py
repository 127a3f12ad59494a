"""lakeFS's versioning operations (commit, log, diff, merge, revert, cherry-pick) on top of the store."""

from __future__ import annotations

import fnmatch
import heapq
import time
from collections.abc import Iterator

from .errors import BadRequest, Conflict, Forbidden
from .merge import Change, Strategy, diff_trees, three_way
from .model import Commit, Tree
from .store import Store

# Keys lakeFS (graveler) adds to the commits it makes for merges and cherry-picks.
MERGE_STRATEGY_KEY = ".lakefs.merge.strategy"
CHERRY_PICK_ORIGIN_KEY = "cherry-pick-origin"
CHERRY_PICK_COMMITTER_KEY = "cherry-pick-committer"


class Versioning:
    def __init__(self, store: Store) -> None:
        self.store = store

    def check_writable(self, repo: str, branch: str) -> None:
        """Branch protection: writes and commits on a protected branch are refused; merges are allowed."""
        self.store.branch_head(repo, branch)
        for pattern in self.store.protection_rules(repo):
            if fnmatch.fnmatchcase(branch, pattern):
                raise Forbidden(
                    f"branch {branch!r} in repository {repo!r} is protected by rule {pattern!r}: "
                    "write on another branch and merge into it"
                )

    def _require_clean(self, repo: str, branch: str, action: str) -> None:
        if self.uncommitted(repo, branch):
            raise BadRequest(f"{action}: branch {branch!r} in repository {repo!r} has uncommitted changes "
                             "(dirty branch); commit or reset them first")

    def uncommitted(self, repo: str, branch: str) -> list[Change]:
        head = self.store.branch_head(repo, branch)
        return diff_trees(self.store.commit_tree(repo, head), self.store.view(repo, branch))

    def commit(
        self, repo: str, branch: str, message: str, metadata: dict[str, str], allow_empty: bool, date: int | None
    ) -> Commit:
        with self.store.transaction():
            self.check_writable(repo, branch)
            head = self.store.branch_head(repo, branch)
            tree = self.store.view(repo, branch)
            if not allow_empty and tree == self.store.commit_tree(repo, head):
                raise BadRequest(f"commit: no changes on branch {branch!r} in repository {repo!r}")
            created = self.store.add_commit(repo, [head], message, metadata, tree, date or int(time.time()))
            self.store.move_branch(repo, branch, created.id)
            self.store.unstage(repo, branch)
        return created

    def merge_base(self, repo: str, left: str, right: str) -> str | None:
        """The nearest common ancestor (highest generation), as lakeFS picks it."""
        left_ancestors = set(self._walk(repo, left, first_parent=False))
        for commit in self._walk_commits(repo, right, first_parent=False):
            if commit.id in left_ancestors:
                return commit.id
        return None

    def _walk_commits(self, repo: str, start: str, first_parent: bool) -> Iterator[Commit]:
        """Ancestors newest first: by generation, then creation date (lakeFS's log order)."""
        first = self.store.commit(repo, start)
        queue = [(-first.generation, -first.creation_date, first.id)]
        seen = {first.id}
        while queue:
            _, _, cid = heapq.heappop(queue)
            commit = self.store.commit(repo, cid)
            yield commit
            for parent_id in commit.parents[:1] if first_parent else commit.parents:
                if parent_id not in seen:
                    seen.add(parent_id)
                    parent = self.store.commit(repo, parent_id)
                    heapq.heappush(queue, (-parent.generation, -parent.creation_date, parent.id))

    def _walk(self, repo: str, start: str, first_parent: bool) -> Iterator[str]:
        return (commit.id for commit in self._walk_commits(repo, start, first_parent))

    def log(
        self,
        repo: str,
        ref: str,
        first_parent: bool,
        objects: list[str],
        prefixes: list[str],
        stop_at: str | None,
        since: int | None,
    ) -> list[Commit]:
        start = self.store.resolve(repo, ref).commit_id
        stop_id = self.store.resolve(repo, stop_at).commit_id if stop_at else None
        result = []
        for commit in self._walk_commits(repo, start, first_parent):
            if since is not None and commit.creation_date < since:
                break
            if (not objects and not prefixes) or self._touches(repo, commit, objects, prefixes):
                result.append(commit)
            if commit.id == stop_id:
                break
        return result

    def _touches(self, repo: str, commit: Commit, objects: list[str], prefixes: list[str]) -> bool:
        parent_tree = self.store.commit_tree(repo, commit.parents[0]) if commit.parents else {}
        for change in diff_trees(parent_tree, self.store.tree(commit.meta_range_id)):
            if change.path in objects or any(change.path.startswith(p) for p in prefixes):
                return True
        return False

    def diff_refs(self, repo: str, left: str, right: str, three_dot: bool) -> list[Change]:
        """Committed changes from left to right; three-dot diffs from their merge base, as lakeFS does."""
        left_id = self.store.resolve(repo, left).commit_id
        right_id = self.store.resolve(repo, right).commit_id
        if three_dot:
            base = self.merge_base(repo, left_id, right_id)
            left_tree = self.store.commit_tree(repo, base) if base else {}
        else:
            left_tree = self.store.commit_tree(repo, left_id)
        return diff_trees(left_tree, self.store.commit_tree(repo, right_id))

    def merge(
        self,
        repo: str,
        source_ref: str,
        dest_branch: str,
        message: str | None,
        metadata: dict[str, str],
        strategy: Strategy | None,
        allow_empty: bool,
        squash: bool,
    ) -> Commit:
        with self.store.transaction():
            source = self.store.resolve(repo, source_ref).commit_id
            dest = self.store.branch_head(repo, dest_branch)
            self._require_clean(repo, dest_branch, f"merge {source_ref!r} into {dest_branch!r}")
            base = self.merge_base(repo, source, dest)
            base_range = self.store.commit(repo, base).meta_range_id if base else ""
            source_range = self.store.commit(repo, source).meta_range_id
            if source_range == base_range and not allow_empty:
                # graveler's rule: the source brings nothing since the merge base (already merged, an ancestor,
                # or only empty commits). A source whose tree merely equals the destination's is merged.
                raise BadRequest(f"merge {source_ref!r} into {dest_branch!r}: no changes since their merge base "
                                 f"{base}; pass allow_empty to record a merge commit anyway")
            outcome = three_way(self.store.tree(base_range), self.store.tree(source_range),
                                self.store.commit_tree(repo, dest), strategy)
            if outcome.conflicts:
                raise Conflict(
                    f"conflict found merging {source_ref!r} into {dest_branch!r} in repository {repo!r}: "
                    f"paths changed on both sides: {', '.join(outcome.conflicts[:20])}"
                )
            parents = [dest] if squash else [dest, source]
            merged = self.store.add_commit(
                repo, parents, message or f"Merge '{source_ref}' into '{dest_branch}'",
                {**metadata, MERGE_STRATEGY_KEY: strategy or "default"}, outcome.tree, int(time.time()),
            )
            self.store.move_branch(repo, dest_branch, merged.id)
        return merged

    def revert(
        self, repo: str, branch: str, ref: str, parent_number: int, allow_empty: bool,
        message: str | None, metadata: dict[str, str] | None,
    ) -> Commit:
        """Undo the changes a commit made (relative to one of its parents) with a new commit on branch."""
        with self.store.transaction():
            self.check_writable(repo, branch)
            self._require_clean(repo, branch, f"revert {ref!r}")
            target = self.store.commit(repo, self.store.resolve(repo, ref).commit_id)
            parent_tree = self.store.tree(self._parent_range(repo, target, parent_number, ref))
            return self._apply(repo, branch, self.store.tree(target.meta_range_id), parent_tree, not allow_empty,
                               message or f"Revert {ref}", metadata or {}, f"revert {ref!r}")

    def cherry_pick(
        self, repo: str, branch: str, ref: str, parent_number: int | None,
        message: str | None, metadata: dict[str, str] | None,
    ) -> Commit:
        """Apply the changes a commit made (relative to one parent) as a new commit on branch. As in lakeFS the
        copy keeps the commit's message and metadata (unless overridden) and records where it came from."""
        with self.store.transaction():
            self.check_writable(repo, branch)
            self._require_clean(repo, branch, f"cherry-pick {ref!r}")
            target = self.store.commit(repo, self.store.resolve(repo, ref).commit_id)
            parent_range = self._parent_range(repo, target, parent_number or 0, ref)
            if parent_range == target.meta_range_id:
                raise BadRequest(f"cherry-pick {ref!r} on branch {branch!r}: no changes (the commit changed nothing)")
            kept = target.metadata if metadata is None else metadata
            origin = {CHERRY_PICK_ORIGIN_KEY: target.id, CHERRY_PICK_COMMITTER_KEY: target.committer}
            return self._apply(repo, branch, self.store.tree(parent_range), self.store.tree(target.meta_range_id),
                               False, message or target.message, {**kept, **origin}, f"cherry-pick {ref!r}")

    def _parent_range(self, repo: str, target: Commit, parent_number: int, ref: str) -> str:
        """The metarange of the parent a revert or cherry-pick diffs against ("" for a root commit)."""
        if len(target.parents) > 1 and not 1 <= parent_number <= len(target.parents):
            raise BadRequest(f"ref {ref!r} is a merge commit: parent_number must be 1..{len(target.parents)}")
        if len(target.parents) <= 1 and parent_number > 1:
            raise BadRequest(f"ref {ref!r} has {len(target.parents)} parent(s): parent_number {parent_number} "
                             "is out of range")
        if not target.parents:
            return ""
        return self.store.commit(repo, target.parents[max(parent_number, 1) - 1]).meta_range_id

    def _apply(
        self, repo: str, branch: str, base: Tree, source: Tree, refuse_unchanged: bool,
        message: str, metadata: dict[str, str], action: str,
    ) -> Commit:
        head = self.store.branch_head(repo, branch)
        head_tree = self.store.commit_tree(repo, head)
        outcome = three_way(base, source, head_tree, None)
        if outcome.conflicts:
            raise Conflict(f"{action} on branch {branch!r} in repository {repo!r}: conflict found at "
                           f"{', '.join(outcome.conflicts[:20])}")
        if outcome.tree == head_tree and refuse_unchanged:
            raise BadRequest(f"{action} on branch {branch!r}: no changes")
        created = self.store.add_commit(repo, [head], message, metadata, outcome.tree, int(time.time()))
        self.store.move_branch(repo, branch, created.id)
        return created

    def hard_reset(self, repo: str, branch: str, ref: str) -> None:
        with self.store.transaction():
            self.check_writable(repo, branch)
            self._require_clean(repo, branch, f"hard reset to {ref!r}")
            self.store.move_branch(repo, branch, self.store.resolve(repo, ref).commit_id)

    def delete_branch(self, repo: str, branch: str) -> None:
        with self.store.transaction():
            self.check_writable(repo, branch)
            self.store.delete_branch(repo, branch)

