"""Routes for objects: upload (raw or multipart), get (with ranges), head, stat, ls, delete, copy."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from email.utils import formatdate

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from .blobs import BlobStore
from .errors import BadRequest, NotFound, PreconditionFailed
from .model import Entry
from .paging import group_by_delimiter, page
from .versioning import Versioning

_REPO = "/repositories/{repository}"
_META_PREFIX = "x-lakefs-meta-"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20


class ObjectCopyCreation(BaseModel):
    src_path: str
    src_ref: str | None = None
    force: bool = False
    shallow: bool = False


class PathList(BaseModel):
    paths: list[str]


def objects_router(v: Versioning, blobs: BlobStore) -> APIRouter:  # noqa: C901 - one closure per route
    router = APIRouter()
    store = v.store

    def stats(path: str, entry: Entry, user_metadata: bool = True) -> dict:
        result = {
            "path": path,
            "path_type": "object",
            "physical_address": f"local://{blobs.path_of(entry.address)}",
            "checksum": entry.checksum,
            "size_bytes": entry.size,
            "mtime": entry.mtime,
            "content_type": entry.content_type,
        }
        if user_metadata:
            result["metadata"] = entry.metadata
        return result

    def headers_of(entry: Entry) -> dict[str, str]:
        return {
            "ETag": f'"{entry.checksum}"',
            "Last-Modified": formatdate(entry.mtime, usegmt=True),
            "Content-Type": entry.content_type,
        }

    def require_path(path: str) -> None:
        if not path:
            raise BadRequest("query parameter 'path' must not be empty")

    def check_preconditions(repository: str, branch: str, path: str, if_none_match: str | None,
                            if_match: str | None) -> None:
        current = store.view(repository, branch).get(path)
        if if_none_match is not None:
            if if_none_match != "*":
                raise BadRequest(f"If-None-Match {if_none_match!r} is not supported: only '*' is")
            if current is not None:
                raise PreconditionFailed(f"object {path!r} already exists on branch {branch!r} "
                                         f"in repository {repository!r} (If-None-Match: *)")
        if if_match is not None and (current is None or if_match.strip('"') != current.checksum):
            raise PreconditionFailed(f"object {path!r} on branch {branch!r} does not match ETag {if_match}")

    @router.post(_REPO + "/branches/{branch}/objects", status_code=201)
    async def upload_object(request: Request, repository: str, branch: str, path: str,
                            if_none_match: str | None = Header(default=None),
                            if_match: str | None = Header(default=None),
                            storageClass: str | None = None, force: bool = False) -> dict:  # noqa: N803
        require_path(path)
        v.check_writable(repository, branch)
        check_preconditions(repository, branch, path, if_none_match, if_match)
        content_type = request.headers.get("content-type", "application/octet-stream")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("content")
            if upload is None or isinstance(upload, str):
                raise BadRequest("multipart upload must carry exactly one file part named 'content'")
            blob = await blobs.write_stream(_file_chunks(upload))
            content_type = upload.content_type or "application/octet-stream"
        else:
            blob = await blobs.write_stream(request.stream())
        metadata = {k[len(_META_PREFIX):]: val for k, val in request.headers.items() if k.startswith(_META_PREFIX)}
        entry = Entry(blob.sha256, blob.md5, blob.size, int(time.time()), content_type, metadata)
        with store.transaction():
            v.check_writable(repository, branch)
            check_preconditions(repository, branch, path, if_none_match, if_match)
            store.stage(repository, branch, path, entry)
        return stats(path, entry)

    @router.get(_REPO + "/refs/{ref}/objects")
    def get_object(repository: str, ref: str, path: str, range: str | None = Header(default=None),  # noqa: A002
                   if_none_match: str | None = Header(default=None), presign: bool = False) -> Response:
        entry = store.object(repository, ref, path)
        headers = headers_of(entry)
        if if_none_match and if_none_match.strip('"') == entry.checksum:
            return Response(status_code=304, headers={"ETag": headers["ETag"]})
        blob_path = blobs.path_of(entry.address)
        if range is None:
            return FileResponse(blob_path, headers=headers, media_type=entry.content_type)
        span = _parse_range(range, entry.size, path)
        if span is None:
            return JSONResponse({"message": f"Range {range!r} is not satisfiable for object {path!r} of "
                                            f"{entry.size} bytes"},
                                status_code=416, headers={"Content-Range": f"bytes */{entry.size}"})
        start, end = span
        with open(blob_path, "rb") as data:
            data.seek(start)
            body = data.read(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        return Response(body, status_code=206, headers=headers, media_type=entry.content_type)

    @router.head(_REPO + "/refs/{ref}/objects")
    def head_object(repository: str, ref: str, path: str, range: str | None = Header(default=None)  # noqa: A002
                    ) -> Response:
        try:
            entry = store.object(repository, ref, path)
        except NotFound:
            return Response(status_code=404)
        headers = {**headers_of(entry), "Content-Length": str(entry.size)}
        return Response(status_code=200, headers=headers)

    @router.get(_REPO + "/refs/{ref}/objects/stat")
    def stat_object(repository: str, ref: str, path: str, user_metadata: bool = True,
                    presign: bool = False) -> dict:
        return stats(path, store.object(repository, ref, path), user_metadata)

    @router.get(_REPO + "/refs/{ref}/objects/ls")
    def list_objects(repository: str, ref: str, user_metadata: bool = True, presign: bool = False,
                     after: str | None = None, amount: int | None = None, delimiter: str | None = None,
                     prefix: str = "") -> dict:
        tree = store.view(repository, ref)
        items = [
            {"path": p, "path_type": "common_prefix", "physical_address": "", "checksum": "", "mtime": 0}
            if is_prefix else stats(p, tree[p], user_metadata)
            for p, is_prefix in group_by_delimiter(tree, prefix or "", delimiter)
        ]
        return page(items, lambda item: item["path"], after, amount)

    @router.delete(_REPO + "/branches/{branch}/objects", status_code=204)
    def delete_object(repository: str, branch: str, path: str, force: bool = False,
                      no_tombstone: bool = False) -> Response:
        require_path(path)
        delete_paths(repository, branch, [path])
        return Response(status_code=204)

    @router.post(_REPO + "/branches/{branch}/objects/delete")
    def delete_objects(repository: str, branch: str, body: PathList, force: bool = False,
                       no_tombstone: bool = False) -> dict:
        delete_paths(repository, branch, body.paths)
        return {"errors": []}

    def delete_paths(repository: str, branch: str, paths: list[str]) -> None:
        """Missing objects are not an error (lakeFS's rule); committed ones get a tombstone."""
        with store.transaction():
            v.check_writable(repository, branch)
            committed = store.commit_tree(repository, store.branch_head(repository, branch))
            for path in paths:
                if path in committed:
                    store.stage(repository, branch, path, None)
                else:
                    store.unstage(repository, branch, path, exact=True)

    @router.post(_REPO + "/branches/{branch}/objects/copy", status_code=201)
    def copy_object(repository: str, branch: str, dest_path: str, body: ObjectCopyCreation) -> dict:
        require_path(dest_path)
        with store.transaction():
            v.check_writable(repository, branch)
            source = store.object(repository, body.src_ref or branch, body.src_path)
            copied = Entry(source.address, source.checksum, source.size, int(time.time()), source.content_type,
                           dict(source.metadata))
            store.stage(repository, branch, dest_path, copied)
        return stats(dest_path, copied)

    return router


async def _file_chunks(upload) -> AsyncIterator[bytes]:  # noqa: ANN001 - starlette UploadFile
    while chunk := await upload.read(_CHUNK):
        yield chunk


def _parse_range(header: str, size: int, path: str) -> tuple[int, int] | None:
    """One byte range, as the SDK's readers send; None when it starts past the end (lakeFS answers 416)."""
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise BadRequest(f"Range {header!r} for object {path!r} is not a single 'bytes=start-end' range")
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end

