"""Routes for repositories, branches, tags, commits, log, diff, merge, revert and cherry-pick."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from .errors import BadRequest, PreconditionFailed
from .merge import Change, parse_strategy
from .model import Commit
from .paging import group_by_delimiter, page, page_in_order
from .versioning import Versioning

_REPO = "/repositories/{repository}"


class RepositoryCreation(BaseModel):
    name: str
    storage_namespace: str
    default_branch: str = "main"
    sample_data: bool = False
    read_only: bool = False
    storage_id: str | None = None


class BranchCreation(BaseModel):
    name: str
    source: str
    force: bool = False
    hidden: bool = False


class TagCreation(BaseModel):
    id: str
    ref: str
    force: bool = False


class CommitCreation(BaseModel):
    message: str
    metadata: dict[str, str] | None = None
    date: int | None = None
    allow_empty: bool = False
    force: bool = False


class MergeRequest(BaseModel):
    message: str | None = None
    metadata: dict[str, str] | None = None
    strategy: str | None = None
    force: bool = False
    allow_empty: bool = False
    squash_merge: bool = False


class CommitOverrides(BaseModel):
    message: str | None = None
    metadata: dict[str, str] | None = None


class RevertCreation(BaseModel):
    ref: str
    parent_number: int
    commit_overrides: CommitOverrides | None = None
    force: bool = False
    allow_empty: bool = False


class CherryPickCreation(BaseModel):
    ref: str
    parent_number: int | None = None
    commit_overrides: CommitOverrides | None = None
    force: bool = False


class ResetCreation(BaseModel):
    type: str
    path: str | None = None
    force: bool = False


class BranchProtectionRule(BaseModel):
    pattern: str


def change_to_api(path: str, is_prefix: bool, change: Change | None, uncommitted: bool) -> dict:
    """A removal is sized by what lakeFS reads it from: the removed entry in a diff of commits, the staged
    tombstone (size 0) in a branch's uncommitted changes."""
    if is_prefix or change is None:
        return {"type": "prefix_changed", "path": path, "path_type": "common_prefix"}
    sized = None if uncommitted and change.type == "removed" else change.right or change.left
    return {"type": change.type, "path": path, "path_type": "object", "size_bytes": sized.size if sized else 0}


def diff_page(changes: list[Change], after: str | None, amount: int | None, prefix: str, delimiter: str | None,
              uncommitted: bool = False) -> dict:
    by_path = {change.path: change for change in changes}
    grouped = group_by_delimiter(by_path, prefix or "", delimiter)
    items = [change_to_api(path, is_prefix, by_path.get(path), uncommitted) for path, is_prefix in grouped]
    return page(items, lambda item: item["path"], after, amount)


def refs_router(v: Versioning) -> APIRouter:  # noqa: C901 - one closure per route, each small
    router = APIRouter()
    store = v.store

    # repositories
    @router.get("/repositories")
    def list_repositories(prefix: str = "", after: str | None = None, amount: int | None = None,
                          search: str = "") -> dict:
        repos = [r.to_api() for r in store.repos() if r.name.startswith(prefix) and search in r.name]
        return page(repos, lambda r: r["id"], after, amount)

    @router.post("/repositories", status_code=201)
    def create_repository(body: RepositoryCreation, bare: bool = False) -> dict:
        return store.create_repo(body.name, body.storage_namespace, body.default_branch, bare,
                                 body.storage_id).to_api()

    @router.get(_REPO)
    def get_repository(repository: str) -> dict:
        return store.repo(repository).to_api()

    @router.delete(_REPO, status_code=204)
    def delete_repository(repository: str, force: bool = False) -> Response:
        store.delete_repo(repository)
        return Response(status_code=204)

    @router.get(_REPO + "/metadata")
    def repository_metadata(repository: str) -> dict:
        store.repo(repository)
        return {}

    @router.get(_REPO + "/settings/branch_protection")
    def get_branch_protection(repository: str) -> JSONResponse:
        rules = [{"pattern": p} for p in store.protection_rules(repository)]
        return JSONResponse(rules, headers={"ETag": _rules_etag(rules)})

    @router.put(_REPO + "/settings/branch_protection", status_code=204)
    def set_branch_protection(repository: str, rules: list[BranchProtectionRule],
                              if_match: str | None = Header(default=None)) -> Response:
        current = [{"pattern": p} for p in store.protection_rules(repository)]
        if if_match and if_match.strip('"') != _rules_etag(current).strip('"'):
            raise PreconditionFailed(f"branch protection rules of {repository!r} changed since ETag {if_match}")
        store.set_protection_rules(repository, [rule.pattern for rule in rules])
        return Response(status_code=204)

    # branches
    @router.get(_REPO + "/branches")
    def list_branches(repository: str, prefix: str = "", after: str | None = None, amount: int | None = None,
                      show_hidden: bool = False) -> dict:
        refs = [{"id": n, "commit_id": c} for n, c in store.branches(repository, show_hidden)
                if n.startswith(prefix)]
        return page(refs, lambda r: r["id"], after, amount)

    @router.post(_REPO + "/branches", status_code=201)
    def create_branch(repository: str, body: BranchCreation) -> PlainTextResponse:
        head = store.create_branch(repository, body.name, body.source, body.hidden)
        return PlainTextResponse(head, status_code=201, media_type="text/html")

    @router.get(_REPO + "/branches/{branch}")
    def get_branch(repository: str, branch: str) -> dict:
        return {"id": branch, "commit_id": store.branch_head(repository, branch)}

    @router.delete(_REPO + "/branches/{branch}", status_code=204)
    def delete_branch(repository: str, branch: str, force: bool = False) -> Response:
        v.delete_branch(repository, branch)
        return Response(status_code=204)

    @router.put(_REPO + "/branches/{branch}", status_code=204)
    def reset_branch(repository: str, branch: str, body: ResetCreation) -> Response:
        store.branch_head(repository, branch)
        if body.type == "reset":
            store.unstage(repository, branch)
        elif body.type in ("object", "common_prefix") and body.path:
            store.unstage(repository, branch, body.path, exact=body.type == "object")
        else:
            raise BadRequest(f"reset type {body.type!r} needs a path (types: object, common_prefix, reset)")
        return Response(status_code=204)

    @router.put(_REPO + "/branches/{branch}/hard_reset", status_code=204)
    def hard_reset_branch(repository: str, branch: str, ref: str, force: bool = False) -> Response:
        v.hard_reset(repository, branch, ref)
        return Response(status_code=204)

    @router.get(_REPO + "/branches/{branch}/diff")
    def diff_branch(repository: str, branch: str, after: str | None = None, amount: int | None = None,
                    prefix: str = "", delimiter: str | None = None) -> dict:
        return diff_page(v.uncommitted(repository, branch), after, amount, prefix, delimiter, uncommitted=True)

    # commits
    @router.post(_REPO + "/branches/{branch}/commits", status_code=201)
    def commit(repository: str, branch: str, body: CommitCreation, source_metarange: str | None = None) -> dict:
        if source_metarange:
            raise BadRequest("source_metarange commits are not supported by the emulator")
        return v.commit(repository, branch, body.message, body.metadata or {}, body.allow_empty,
                        body.date).to_api()

    @router.get(_REPO + "/commits/{commit_id}")
    def get_commit(repository: str, commit_id: str) -> dict:
        return store.commit(repository, store.resolve(repository, commit_id).commit_id).to_api()

    @router.get(_REPO + "/refs/{ref}/commits")
    def log_commits(
        repository: str, ref: str, after: str | None = None, amount: int | None = None,
        objects: list[str] = Query(default=[]), prefixes: list[str] = Query(default=[]),
        limit: bool = False, first_parent: bool = False, since: datetime | None = None,
        stop_at: str | None = None,
    ) -> dict:
        commits = v.log(repository, ref, first_parent, objects, prefixes, stop_at or None,
                        int(since.timestamp()) if since else None)
        result = page_in_order([c.to_api() for c in commits], lambda c: c["id"], after, amount)
        if limit:
            result["pagination"]["has_more"] = False
            result["pagination"]["next_offset"] = ""
        return result

    # merge and diff
    @router.post(_REPO + "/refs/{source_ref}/merge/{destination_branch}")
    def merge(repository: str, source_ref: str, destination_branch: str,
              body: MergeRequest | None = Body(default=None)) -> dict:
        request = body or MergeRequest()
        merged = v.merge(repository, source_ref, destination_branch, request.message, request.metadata or {},
                         parse_strategy(request.strategy), request.allow_empty or request.force,
                         request.squash_merge)
        return {"reference": merged.id}

    @router.get(_REPO + "/refs/{source_ref}/merge/{destination_branch}")
    def find_merge_base(repository: str, source_ref: str, destination_branch: str) -> dict:
        source = store.resolve(repository, source_ref).commit_id
        dest = store.resolve(repository, destination_branch).commit_id
        base = v.merge_base(repository, source, dest)
        if base is None:
            raise BadRequest(f"{source_ref!r} and {destination_branch!r} have no common ancestor")
        return {"source_commit_id": source, "destination_commit_id": dest, "base_commit_id": base}

    @router.get(_REPO + "/refs/{left_ref}/diff/{right_ref}")
    def diff_refs(repository: str, left_ref: str, right_ref: str, after: str | None = None,
                  amount: int | None = None, prefix: str = "", delimiter: str | None = None,
                  type: str = "three_dot", include_right_stats: bool = False) -> dict:
        if type not in ("two_dot", "three_dot"):
            raise BadRequest(f"diff type {type!r} is not one of two_dot, three_dot")
        changes = v.diff_refs(repository, left_ref, right_ref, three_dot=type == "three_dot")
        return diff_page(changes, after, amount, prefix, delimiter)

    # revert and cherry-pick
    @router.post(_REPO + "/branches/{branch}/revert", status_code=204)
    def revert(repository: str, branch: str, body: RevertCreation) -> Response:
        overrides = body.commit_overrides or CommitOverrides()
        v.revert(repository, branch, body.ref, body.parent_number, body.allow_empty, overrides.message,
                 overrides.metadata)
        return Response(status_code=204)

    @router.post(_REPO + "/branches/{branch}/cherry-pick", status_code=201)
    def cherry_pick(repository: str, branch: str, body: CherryPickCreation) -> dict:
        overrides = body.commit_overrides or CommitOverrides()
        picked: Commit = v.cherry_pick(repository, branch, body.ref, body.parent_number, overrides.message,
                                       overrides.metadata)
        return picked.to_api()

    # tags
    @router.get(_REPO + "/tags")
    def list_tags(repository: str, prefix: str = "", after: str | None = None, amount: int | None = None) -> dict:
        refs = [{"id": n, "commit_id": c} for n, c in store.tags(repository) if n.startswith(prefix)]
        return page(refs, lambda r: r["id"], after, amount)

    @router.post(_REPO + "/tags", status_code=201)
    def create_tag(repository: str, body: TagCreation) -> dict:
        return {"id": body.id, "commit_id": store.create_tag(repository, body.id, body.ref, body.force)}

    @router.get(_REPO + "/tags/{tag}")
    def get_tag(repository: str, tag: str) -> dict:
        return {"id": tag, "commit_id": store.tag(repository, tag)}

    @router.delete(_REPO + "/tags/{tag}", status_code=204)
    def delete_tag(repository: str, tag: str, force: bool = False) -> Response:
        store.delete_tag(repository, tag)
        return Response(status_code=204)

    return router


def _rules_etag(rules: list[dict]) -> str:
    return '"' + hashlib.md5(json.dumps(rules, sort_keys=True).encode()).hexdigest() + '"'
