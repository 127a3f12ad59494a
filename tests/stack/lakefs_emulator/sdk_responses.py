"""What the `lakefs_sdk` the platform installs expects back from each lakeFS operation, so emulator answers can be
checked with nothing outside the clone. The SDK is generated from lakeFS's OpenAPI spec: every operation's
`call_api(path, method, ..., response_types_map=...)` names a response type per status, and its pydantic models
are strict on required fields and types (StrictStr, StrictInt, ...). Parsing an answer the way the SDK does is
therefore a check against the spec's response schemas."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import lakefs_sdk
from lakefs_sdk.api_client import ApiClient

API_PREFIX = "/api/v1"
PATH_PARAMETER = re.compile(r"\{[^}]*\}")
# Types the SDK does not parse: the body is handed over as bytes or not read at all.
UNPARSED = {"bytearray", None}
_SDK_CLIENT = ApiClient()  # only its deserialize() is used: no request is ever sent

ResponseTypes = dict[str, str | None]


def _operations(source: str) -> dict[tuple[str, str], ResponseTypes]:
    """(METHOD, path) -> {status: type name} from one generated API module."""
    table: dict[tuple[str, str], ResponseTypes] = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef):
            continue
        types = call = None
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "_response_types_map" for t in node.targets):
                types = ast.literal_eval(node.value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "call_api":
                call = node
        if types is not None and call is not None:
            path, method = (ast.literal_eval(arg) for arg in call.args[:2])
            table[(method, path)] = types
    return table


def operation_key(method: str, path: str) -> str:
    """`GET /repositories/{}/commits/{}`: path parameters are named differently here and there (commit_id, commitId)."""
    return f"{method} {PATH_PARAMETER.sub('{}', path.removeprefix(API_PREFIX))}"


def sdk_operations() -> dict[str, ResponseTypes]:
    """Every operation of the installed SDK, by `operation_key`."""
    table: dict[str, ResponseTypes] = {}
    for module in sorted((Path(lakefs_sdk.__file__).parent / "api").glob("*_api.py")):
        table.update({operation_key(*key): types for key, types in _operations(module.read_text()).items()})
    return table


def response_problem(types: ResponseTypes, method: str, status: int, body: bytes) -> str | None:
    """Why the SDK would not accept this answer, or None.

    A declared status is parsed as its type, as the SDK parses it. Some operations declare no map at all (the
    generator leaves out bodiless 204s and, for those, the errors too): there an error must still be lakeFS's
    `Error` (what the SDK's ApiException carries) and any other answer must be empty, since nothing would read it.
    An answer to HEAD has no body by HTTP's rules, whatever the status.
    """
    if method == "HEAD":
        return f"an answer to HEAD has a body: {body[:200]!r}" if body else None
    key = next((k for k in (str(status), f"{str(status)[0]}XX") if k in types), None)
    if key is None and status < 400:
        return f"status {status} is not declared, yet it has a body: {body[:200]!r}" if body else None
    type_name = types[key] if key else "Error"
    if type_name in UNPARSED:
        return None
    if not body:
        return f"status {status} must carry a {type_name}, the body is empty"
    try:
        parsed = _SDK_CLIENT.deserialize(SimpleNamespace(data=body.decode()), type_name)
    except Exception as exc:  # noqa: BLE001 - pydantic's and the SDK's own errors both mean "not accepted"
        return f"not a {type_name}: {exc}"
    return None if parsed is not None else f"not a {type_name}: null"
