"""Versioned data on lakeFS through the official `lakefs` SDK: one branch per pipeline run, commits that carry
lineage, and write-audit-publish (merge to the default branch only after validation passes).

Everything goes through the SDK (and `lakefs-spec` for fsspec IO), so the embedded emulator and a real lakeFS
differ only in the endpoint configured here. Every operation is safe to retry after a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import lakefs
import lakefs_sdk
from lakefs import exceptions as lakefs_errors

MergeStrategy = Literal["source-wins", "dest-wins"]
ENV_URL = "LAKECTL_SERVER_ENDPOINT_URL"
ENV_KEY = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
ENV_SECRET = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"
BRANCH_RULE = re.compile(r"^\w[-\w]*$", re.ASCII)
RUN_BRANCH_KEY = "run_branch"
_SLUG_LEN = 24
_HASH_LEN = 10


class VersionedDataError(RuntimeError):
    """A lakeFS operation failed; the message names the repository, ref and path involved."""


class RefNotFoundError(VersionedDataError):
    """A repository, branch, tag, commit or object does not exist."""


class InvalidNameError(VersionedDataError, ValueError):
    """A repository or branch name breaks lakeFS's naming rule."""


class ProtectedBranchError(VersionedDataError):
    """A direct write to a protected branch (e.g. main): write on a run branch and merge instead."""


class MergeConflictError(VersionedDataError):
    def __init__(self, message: str, paths: Sequence[str]) -> None:
        super().__init__(message)
        self.paths = list(paths)


class ValidationFailedError(VersionedDataError):
    """Write-audit-publish stopped at the audit: the run branch is kept for inspection."""

    def __init__(self, message: str, branch: str, commit_id: str, problems: Sequence[str]) -> None:
        super().__init__(message)
        self.branch, self.commit_id, self.problems = branch, commit_id, list(problems)


@dataclass(frozen=True)
class LakeFSEndpoint:
    """Where lakeFS is and how to log in; the same fields as lakectl's config and an Airflow Connection."""

    url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LakeFSEndpoint:
        env = os.environ if env is None else env
        missing = [name for name in (ENV_URL, ENV_KEY, ENV_SECRET) if not env.get(name)]
        if missing:
            raise VersionedDataError(f"lakeFS endpoint not configured: set {', '.join(missing)}")
        return cls(env[ENV_URL].rstrip("/"), env[ENV_KEY], env[ENV_SECRET])

    def to_env(self) -> dict[str, str]:
        """The LAKECTL_* variables from_env() reads, to hand this endpoint to a step's process or pod."""
        return {ENV_URL: self.url, ENV_KEY: self.access_key_id, ENV_SECRET: self.secret_access_key}

    def client(self) -> lakefs.Client:
        return lakefs.Client(host=self.url, username=self.access_key_id, password=self.secret_access_key)

    def storage_options(self) -> dict[str, str]:
        """fsspec options for `lakefs://repo/ref/path` URLs (pandas, pyarrow, lakefs-spec)."""
        return {"host": self.url, "username": self.access_key_id, "password": self.secret_access_key}


@dataclass(frozen=True)
class Lineage:
    """What produced a commit; stored as commit metadata so any artifact can be traced to its inputs."""

    dag_id: str
    run_id: str
    task_id: str
    input_commit: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        metadata = {"dag_id": self.dag_id, "run_id": self.run_id, "task_id": self.task_id}
        if self.input_commit:
            metadata["input_commit"] = self.input_commit
        metadata.update({f"count.{name}": str(value) for name, value in self.counts.items()})
        return metadata

    def made(self, metadata: Mapping[str, str]) -> bool:
        """True if a commit with this metadata was made by the same task of the same run."""
        return all(metadata.get(k) == v for k, v in
                   (("dag_id", self.dag_id), ("run_id", self.run_id), ("task_id", self.task_id)))


@dataclass(frozen=True)
class Change:
    type: str
    path: str
    size_bytes: int | None


def run_branch_name(dag_id: str, run_id: str) -> str:
    """A short, deterministic branch name valid under lakeFS's `^\\w[-\\w]*$`; the hash of the exact ids keeps
    distinct runs apart even when their readable parts slug to the same text."""
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()[:_HASH_LEN]
    parts = [_slug(dag_id), _slug(run_id)]
    name = "run-" + "-".join(p for p in parts if p) + "-" + digest
    assert BRANCH_RULE.match(name), name
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:_SLUG_LEN].strip("-")


def require_branch_name(name: str) -> None:
    if not BRANCH_RULE.match(name):
        raise InvalidNameError(f"branch name {name!r} is invalid: lakeFS branch names must match "
                               f"{BRANCH_RULE.pattern} (letters, digits, '_' and '-', not starting with '-')")


@contextmanager
def _named(action: str, repo: str, ref: str | None = None, path: str | None = None) -> Iterator[None]:
    """Turn SDK exceptions into ours, naming the repository, ref and path and the server's reason."""
    where = f"repository {repo!r}" + (f", ref {ref!r}" if ref else "") + (f", path {path!r}" if path else "")
    try:
        yield
    except lakefs_errors.ServerException as exc:
        reason = exc.body.get("message") or exc.reason or str(exc)
        message = f"{action} failed for {where}: {reason} (HTTP {exc.status_code})"
        if isinstance(exc, lakefs_errors.NotFoundException):
            raise RefNotFoundError(message) from exc
        if isinstance(exc, lakefs_errors.ForbiddenException):
            raise ProtectedBranchError(message) from exc
        raise VersionedDataError(message) from exc


class VersionedRepo:
    """One lakeFS repository as the pipelines use it."""

    def __init__(self, endpoint: LakeFSEndpoint, repo: str, client: lakefs.Client | None = None) -> None:
        self.endpoint = endpoint
        self.repo_id = repo
        self.client = client or endpoint.client()
        self.repo = lakefs.Repository(repo, client=self.client)

    # setup
    def ensure(self, storage_namespace: str, default_branch: str = "main", protect_default: bool = True) -> None:
        """Create the repository if missing; protect its default branch so data only lands there by merge."""
        if not re.match(r"^[a-z0-9][a-z0-9-]{2,62}$", self.repo_id):
            raise InvalidNameError(f"repository name {self.repo_id!r} is invalid: lakeFS needs "
                                   "^[a-z0-9][a-z0-9-]{2,62}$ (lowercase letters, digits, '-', 3-63 chars)")
        with _named("create repository", self.repo_id):
            self.repo.create(storage_namespace=storage_namespace, default_branch=default_branch, exist_ok=True)
        if protect_default:
            api = self.client.sdk_client.repositories_api
            with _named("protect default branch", self.repo_id, self.default_branch):
                patterns = [rule.pattern for rule in api.get_branch_protection_rules(self.repo_id)]
                if self.default_branch not in patterns:
                    rules = [lakefs_sdk.BranchProtectionRule(pattern=p) for p in [*patterns, self.default_branch]]
                    api.set_branch_protection_rules(self.repo_id, rules)

    @property
    def default_branch(self) -> str:
        with _named("read repository", self.repo_id):
            return self.repo.properties.default_branch

    # branches
    def open_run_branch(self, dag_id: str, run_id: str, source: str | None = None) -> str:
        """The run's branch, created from source (default branch) on first call and reused on retries, so a
        retried task neither forks a second branch nor loses what the first attempt staged."""
        name = run_branch_name(dag_id, run_id)
        self.create_branch(name, source or self.default_branch)
        return name

    def create_branch(self, name: str, source: str) -> str:
        require_branch_name(name)
        with _named("create branch", self.repo_id, f"{name} from {source}"):
            self.repo.branch(name).create(source, exist_ok=True)
        return name

    def branch_exists(self, name: str) -> bool:
        return any(b.id == name for b in self.repo.branches(prefix=name))

    def delete_branch(self, name: str) -> None:
        with _named("delete branch", self.repo_id, name):
            self.repo.branch(name).delete()

    def head(self, ref: str) -> str:
        """The commit id a ref points at now (pin it: commit ids never move)."""
        with _named("resolve ref", self.repo_id, ref):
            return self.repo.ref(ref).get_commit().id

    # objects
    def put_object(self, branch: str, path: str, data: bytes, content_type: str = "application/octet-stream"
                   ) -> str:
        """Stage data at path; a retry that writes the same bytes changes nothing. Returns the MD5 checksum."""
        checksum = hashlib.md5(data).hexdigest()
        obj = self.repo.branch(branch).object(path)
        with _named("upload object", self.repo_id, branch, path):
            if obj.exists() and obj.stat().checksum == checksum:
                return checksum
            obj.upload(data, mode="wb", content_type=content_type)
        return checksum

    def get_object(self, ref: str, path: str) -> bytes:
        """Read an object at any ref; pass a commit id for a reproducible read."""
        with _named("read object", self.repo_id, ref, path):
            with self.repo.ref(ref).object(path).reader(mode="rb") as reader:
                return reader.read()

    def open_reader(self, ref: str, path: str) -> BinaryIO:
        """A stream over an object (ranged reads): read it in parts instead of holding it whole."""
        with _named("read object", self.repo_id, ref, path):
            return self.repo.ref(ref).object(path).reader(mode="rb")

    def open_writer(self, branch: str, path: str) -> BinaryIO:
        """A stream into an object, spooled to a temporary file and uploaded when closed (use it as a context)."""
        with _named("upload object", self.repo_id, branch, path):
            return self.repo.branch(branch).object(path).writer(mode="wb")

    def list_objects(self, ref: str, prefix: str = "") -> list[str]:
        with _named("list objects", self.repo_id, ref, prefix or None):
            return [o.path for o in self.repo.ref(ref).objects(prefix=prefix)]

    def delete_object(self, branch: str, path: str) -> None:
        with _named("delete object", self.repo_id, branch, path):
            self.repo.branch(branch).object(path).delete()

    # commits
    def commit(self, branch: str, message: str, lineage: Lineage) -> str:
        """Commit what is staged with lineage metadata. If nothing is staged and the head commit was made by this
        same task (a retry after the commit landed), return that commit instead of making a duplicate."""
        b = self.repo.branch(branch)
        with _named("commit", self.repo_id, branch):
            changed = any(True for _ in b.uncommitted(max_amount=1))
            head = b.get_commit()
            if not changed and lineage.made(head.metadata or {}):
                return head.id
            return b.commit(message, metadata=lineage.to_metadata(), allow_empty=not changed).id

    def log(self, ref: str, limit: int = 100) -> list[lakefs.Commit]:
        with _named("log", self.repo_id, ref):
            return list(self.repo.ref(ref).log(max_amount=limit))

    def diff(self, left: str, right: str, three_dot: bool = True, prefix: str = "") -> list[Change]:
        """Changes from left to right; three-dot compares right with the merge base (what a merge would bring)."""
        with _named("diff", self.repo_id, f"{left}...{right}" if three_dot else f"{left}..{right}"):
            return [Change(c.type, c.path, c.size_bytes) for c in self.repo.ref(left).diff(
                right, prefix=prefix or None, type="three_dot" if three_dot else "two_dot")]

    def merge(self, source: str, dest: str, strategy: MergeStrategy | None = None, message: str | None = None,
              metadata: Mapping[str, str] | None = None, allow_empty: bool = False) -> str:
        """Merge source into dest; without a strategy a path changed on both sides fails with the paths named."""
        kwargs: dict[str, object] = {"metadata": dict(metadata or {}), "allow_empty": allow_empty}
        if strategy:
            kwargs["strategy"] = strategy
        if message:
            kwargs["message"] = message
        try:
            with _named("merge", self.repo_id, f"{source} into {dest}"):
                return self.repo.ref(source).merge_into(dest, **kwargs)
        except VersionedDataError as exc:
            if isinstance(exc.__cause__, lakefs_errors.ConflictException):
                paths = self._conflicting_paths(source, dest)
                raise MergeConflictError(
                    f"merge of {source!r} into {dest!r} in repository {self.repo_id!r} conflicts at "
                    f"{', '.join(paths[:20]) or 'unknown paths'}: both sides changed them; choose "
                    "strategy='source-wins' or 'dest-wins', or fix the source branch", paths) from exc
            raise

    def _conflicting_paths(self, source: str, dest: str) -> list[str]:
        source_side = {c.path for c in self.diff(dest, source)}
        dest_side = {c.path for c in self.diff(source, dest)}
        return sorted(source_side & dest_side)

    def tag(self, name: str, ref: str) -> str:
        """Tag a released dataset; re-tagging the same commit is a no-op, moving a tag is refused."""
        commit_id = self.head(ref)
        tag = self.repo.tag(name)
        with _named("create tag", self.repo_id, name):
            try:
                existing = tag.get_commit().id
            except lakefs_errors.NotFoundException:
                tag.create(commit_id)
                return commit_id
        if existing != commit_id:
            raise VersionedDataError(f"tag {name!r} in repository {self.repo_id!r} already points at "
                                     f"{existing}, not {commit_id} (from ref {ref!r}); tags are immutable")
        return commit_id

    def revert(self, branch: str, commit_ref: str, parent_number: int = 0) -> str:
        """Undo one commit with a new commit on branch (for a merge commit, relative to parent 1 or 2)."""
        with _named("revert", self.repo_id, f"{commit_ref} on {branch}"):
            return self.repo.branch(branch).revert(commit_ref, parent_number=parent_number).id

    # write-audit-publish
    def publish(self, branch: str, validate: Callable[[str], Sequence[str]], lineage: Lineage,
                strategy: MergeStrategy | None = None) -> str:
        """Audit the branch's head commit and merge it into the default branch only if validate(commit_id)
        returns no problems; then delete the branch. On failure the branch stays for inspection.
        A retry after a crash between merge and delete finds the earlier merge and finishes."""
        dest = self.default_branch
        if not self.branch_exists(branch):
            published = self._merge_of(branch, dest)
            if published is None:
                raise RefNotFoundError(f"publish: run branch {branch!r} not found in repository "
                                       f"{self.repo_id!r} and no merge of it on {dest!r}")
            return published
        commit_id = self.head(branch)
        problems = list(validate(commit_id))
        if problems:
            raise ValidationFailedError(
                f"validation of branch {branch!r} at commit {commit_id} in repository {self.repo_id!r} failed: "
                f"{'; '.join(problems[:10])}; {dest!r} is unchanged and the branch is kept for inspection",
                branch, commit_id, problems)
        merged = self._merge_of(branch, dest)
        if merged is None:
            metadata = {**lineage.to_metadata(), RUN_BRANCH_KEY: branch, "source_commit": commit_id}
            # allow_empty: a run that changed nothing still leaves its lineage on the default branch
            merged = self.merge(branch, dest, strategy=strategy, message=f"Publish {branch}", metadata=metadata,
                                allow_empty=True)
        self.delete_branch(branch)
        return merged

    def _merge_of(self, branch: str, dest: str, search_depth: int = 200) -> str | None:
        for commit in self.log(dest, limit=search_depth):
            if (commit.metadata or {}).get(RUN_BRANCH_KEY) == branch:
                return commit.id
        return None
