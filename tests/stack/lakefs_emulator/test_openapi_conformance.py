"""The emulator's answers checked against lakeFS's API definition, and every route it serves exercised.

Two checks of one scenario that reaches every route through the SDK (plus raw HTTP for error statuses):
- always: every response parses as the installed `lakefs_sdk` (generated from lakeFS's OpenAPI spec) says it must;
- when LLMOPS_LAKEFS_OPENAPI_SPEC names lakeFS's OpenAPI spec (CI sets it): every request and response is
  validated against the whole spec with openapi-core (status codes, headers, query parameters, request bodies).
  Without it that test is skipped with the reason, so `-ra` shows what was not checked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import lakefs
import lakefs_sdk
import pytest
import uvicorn
from fastapi.routing import APIRoute
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from stack.lakefs_emulator.app import Credentials, create_app
from stack.process import free_port
from tests.stack.lakefs_emulator.sdk_responses import operation_key, response_problem, sdk_operations

SPEC_ENV = "LLMOPS_LAKEFS_OPENAPI_SPEC"
KEY, SECRET = "AKIASPECCHECK", "spec-check-secret"
# Real lakeFS answers `Content-Range: bytes 0-9/100` (RFC 9110, which the SDK parses); the spec's pattern
# `^bytes=...` describes a request Range header, so that one response header is not checked against it.
UNCHECKED_RESPONSE_HEADERS = {"content-range"}
# Object bytes travel with the object's own media type in real lakeFS too (the SDK sends it on upload and
# lakeFS echoes it on get); the spec marks the upload body `x-validation-exclude-body`. Checked as bytes.
OBJECT_DATA = "/objects"


def media_type(headers: dict[str, str], path: str) -> str:
    declared = headers.get("content-type", "application/json")
    if declared.startswith("multipart/"):
        return declared
    declared = declared.split(";")[0]
    if path.endswith(OBJECT_DATA) and declared not in ("application/json", "multipart/form-data"):
        return "application/octet-stream"
    return declared


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes = b""
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    route_path: str | None = None  # the served route's template; None when middleware answered (401)


class Recorder:
    """ASGI middleware that keeps a copy of each exchange, complete by the time the client has the whole answer
    (recorded as it is sent, not after the app returns, which may be after the scenario has finished)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"], scope["query_string"].decode(),
                            {k.decode(): v.decode() for k, v in scope["headers"]})
        self.exchanges.append(exchange)

        async def recv():  # noqa: ANN202
            message = await receive()
            exchange.request_body += message.get("body", b"")
            return message

        async def snd(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                route = scope.get("route")
                exchange.route_path = route.path if route is not None else None
                exchange.status = message["status"]
                exchange.response_headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                exchange.response_body += message.get("body", b"")
            await send(message)

        await self.app(scope, recv, snd)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Recorder, set[str]]]:
    app = create_app(tmp_path_factory.mktemp("spec") / "data", Credentials(KEY, SECRET))
    routes = {f"{m} {r.path}" for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    recorder = Recorder(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", recorder, routes
    server.should_exit = True
    thread.join(timeout=10)


def drive_every_endpoint(url: str) -> None:
    """A scenario that reaches every route, success and error answers both, through the SDK where it can."""
    client = lakefs.Client(host=url, username=KEY, password=SECRET)
    raw = httpx.Client(base_url=f"{url}/api/v1", auth=(KEY, SECRET), timeout=10)
    assert client.version
    httpx.get(f"{url}/api/v1/healthcheck")
    httpx.get(f"{url}/api/v1/repositories")  # 401
    for path in ("/setup_lakefs", "/config/version", "/config/storage", "/user"):
        assert raw.get(path).status_code == 200
    repo = lakefs.Repository("spec-repo", client=client).create(storage_namespace="local://spec")
    raw.post("/repositories", json={"name": "spec-repo", "storage_namespace": "local://spec"})  # 409
    raw.post("/repositories", params={"bare": "true"}, json={"name": "bare-repo", "storage_namespace": "local://b"})
    raw.post("/repositories", json={"name": "other-repo", "storage_namespace": "local://o",
                                    "storage_id": "no-such-store"})  # 400
    list(lakefs.repositories(client=client))
    raw.get("/repositories/spec-repo/metadata")
    raw.get("/repositories/missing-repo")  # 404
    api = client.sdk_client.repositories_api
    api.set_branch_protection_rules("spec-repo", [lakefs_sdk.BranchProtectionRule(pattern="main")])
    api.get_branch_protection_rules("spec-repo")
    raw.post("/repositories/spec-repo/branches/main/objects", params={"path": "p"}, content=b"x")  # 403
    branch = repo.branch("feature").create("main")
    raw.post("/repositories/spec-repo/branches", json={"name": "feature", "source": "main"})  # 409
    list(repo.branches())
    repo.branch("tx-hidden").create("main", hidden=True)
    list(repo.branches(show_hidden=True))
    branch.object("data/a.csv").upload(b"a,b\n1,2\n", content_type="text/csv", metadata={"k": "v"})
    raw.post("/repositories/spec-repo/branches/feature/objects", params={"path": "form.txt"},
             files={"content": ("form.txt", b"multipart", "text/plain")})
    raw.post("/repositories/spec-repo/branches/feature/objects", params={"path": "data/a.csv"},
             headers={"If-None-Match": "*"}, content=b"again")  # 412
    branch.object("data/a.csv").stat()
    branch.object("data/a.csv").exists()
    branch.object("data/nope").exists()  # HEAD 404
    branch.object("data/a.csv").reader().read()
    raw.get("/repositories/spec-repo/refs/feature/objects", params={"path": "data/a.csv"},
            headers={"Range": "bytes=100-200"})  # 416
    raw.get("/repositories/spec-repo/refs/feature/objects", params={"path": "data/a.csv"},
            headers={"Range": "bytes=0-3"})  # 206
    raw.get("/repositories/spec-repo/refs/feature/objects", params={"path": "data/a.csv"})
    list(branch.objects(delimiter="/"))
    branch.object("data/a.csv").copy("feature", "data/b.csv")
    list(branch.uncommitted())
    branch.object("form.txt").delete()
    branch.delete_objects(["data/b.csv"])
    branch.reset_changes("object", "data/b.csv")
    first = branch.commit("add a", metadata={"dag_id": "d"}).get_commit()
    raw.post("/repositories/spec-repo/branches/feature/commits", json={"message": "empty"})  # 400
    list(branch.log(objects=["data/a.csv"]))
    list(repo.ref("main").diff("feature", type="two_dot"))
    raw.get("/repositories/spec-repo/refs/main/merge/feature")
    branch.merge_into(repo.branch("main"))
    raw.post("/repositories/spec-repo/refs/feature/merge/main", json={})  # 400 no changes
    repo.tag("v1").create(first.id)
    repo.tag("v1").get_commit()
    list(repo.tags())
    raw.get("/repositories/spec-repo/tags/nope")  # 404
    branch.object("data/a.csv").upload(b"changed")
    branch.commit("change a")
    branch.revert("feature")
    branch.cherry_pick("feature~1")
    picked = raw.post("/repositories/spec-repo/branches/feature/cherry-pick",
                      json={"ref": "feature~2", "commit_overrides": {"message": "picked", "metadata": {"k": "v"}}})
    assert picked.status_code == 201, picked.text
    branch.merge_into(repo.branch("main"), allow_empty=True)
    raw.put("/repositories/spec-repo/branches/feature/hard_reset", params={"ref": first.id})
    repo.tag("v1").delete()
    branch.delete()
    assert repo.branch("main").head.id
    api.set_branch_protection_rules("spec-repo", [])
    repo.delete()


@pytest.fixture(scope="module")
def scenario(served) -> tuple[list[Exchange], set[str]]:  # noqa: ANN001
    """Every exchange of one run of `drive_every_endpoint`, and the routes the emulator serves."""
    url, recorder, routes = served
    drive_every_endpoint(url)
    return recorder.exchanges, routes


@pytest.fixture()
def openapi_spec() -> OpenAPI:
    configured = os.environ.get(SPEC_ENV)
    if not configured:
        pytest.skip(f"{SPEC_ENV} not set: emulator answers were checked against the lakefs_sdk models only, not "
                    f"requests, headers and status codes against the full spec; point it at api/swagger.yml of "
                    f"lakeFS v{version('lakefs_sdk')} (github.com/treeverse/lakeFS) to check those too")
    assert Path(configured).is_file(), f"{SPEC_ENV}={configured} names no file"
    return OpenAPI.from_file_path(configured)


def test_the_scenario_reaches_every_route_and_status(scenario) -> None:  # noqa: ANN001
    exchanges, routes = scenario
    exercised = {f"{ex.method} {ex.route_path}" for ex in exchanges if ex.route_path}
    assert routes - exercised == set(), f"routes never exercised: {sorted(routes - exercised)}"
    assert {ex.status for ex in exchanges} >= {200, 201, 204, 206, 400, 401, 403, 404, 409, 412, 416}


def test_every_response_is_what_the_lakefs_sdk_accepts(scenario) -> None:  # noqa: ANN001
    exchanges, _ = scenario
    operations = sdk_operations()
    problems = []
    for ex in exchanges:
        key = operation_key(ex.method, ex.route_path or ex.path)
        if key not in operations:
            problems.append(f"{key}: the lakefs_sdk has no such operation")
        elif problem := response_problem(operations[key], ex.method, ex.status, ex.response_body):
            problems.append(f"{ex.method} {ex.path}?{ex.query} -> {ex.status}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the spec's own deprecated fields
def test_every_exchange_matches_the_lakefs_openapi_spec(scenario, openapi_spec: OpenAPI) -> None:  # noqa: ANN001
    exchanges, _ = scenario
    problems = []
    for ex in exchanges:
        request = MockRequest(
            "http://localhost", ex.method.lower(), ex.path,
            args={k: v[0] if len(v) == 1 else v for k, v in parse_qs(ex.query, keep_blank_values=True).items()},
            headers=ex.request_headers, data=ex.request_body,
            content_type=media_type(ex.request_headers, ex.path) if ex.request_body else None,
        )
        response = MockResponse(
            ex.response_body, status_code=ex.status,
            headers={k: v for k, v in ex.response_headers.items() if k not in UNCHECKED_RESPONSE_HEADERS},
            content_type=media_type(ex.response_headers, ex.path),
        )
        try:
            if ex.status != 401:  # the 401 probe sends no credentials on purpose
                openapi_spec.validate_request(request)
            openapi_spec.validate_response(request, response)
        except Exception as exc:  # noqa: BLE001 - collect all, report together
            detail = getattr(exc, "__cause__", None) or exc
            problems.append(f"{ex.method} {ex.path}?{ex.query} -> {ex.status}: {type(exc).__name__}: {detail}")
    assert not problems, "\n".join(problems)
