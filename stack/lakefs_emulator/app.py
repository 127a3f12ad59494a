"""The ASGI app: basic auth, lakeFS's error shape, server config, and the routers mounted under /api/v1."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .blobs import BlobStore
from .errors import ApiError
from .routes_objects import objects_router
from .routes_refs import refs_router
from .store import Store
from .versioning import Versioning

API_PREFIX = "/api/v1"
VERSION = "1.48.0-emulator"
USER_ID = "admin"
_OPEN_PATHS = {f"{API_PREFIX}/healthcheck", f"{API_PREFIX}/setup_lakefs"}


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def accepts(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.access_key_id) and secrets.compare_digest(
            password, self.secret_access_key
        )


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def create_app(data_dir: Path, credentials: Credentials) -> FastAPI:
    """Build the app over one data directory (metadata in lakefs.db, object data under blobs/)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "lakefs.db", committer=USER_ID)
    blobs = BlobStore(data_dir / "blobs")
    versioning = Versioning(store)
    app = FastAPI(title="lakeFS emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.on_shutdown.append(store.close)

    @app.middleware("http")
    async def basic_auth(request: Request, call_next):  # noqa: ANN001, ANN202 - starlette's signature
        path = request.url.path.rstrip("/")
        if path.startswith(API_PREFIX) and path not in _OPEN_PATHS:
            if not credentials.accepts(request.headers.get("authorization")):
                return error(401, "authentication required: basic auth with the emulator's access key")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return error(400, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.get(f"{API_PREFIX}/healthcheck", status_code=204)
    def healthcheck() -> Response:
        return Response(status_code=204)

    @app.get(f"{API_PREFIX}/setup_lakefs")
    def setup_state() -> dict:
        return {"state": "initialized", "comm_prefs_missing": False}

    @app.get(f"{API_PREFIX}/config")
    def config() -> dict:
        return {"version_config": version_config(), "storage_config": storage_config(blobs.root)}

    @app.get(f"{API_PREFIX}/config/version")
    def config_version() -> dict:
        return version_config()

    @app.get(f"{API_PREFIX}/config/storage")
    def config_storage() -> dict:
        return storage_config(blobs.root)

    @app.get(f"{API_PREFIX}/user")
    def current_user() -> dict:
        return {"user": {"id": USER_ID, "creation_date": 0}}

    app.include_router(refs_router(versioning), prefix=API_PREFIX)
    app.include_router(objects_router(versioning, blobs), prefix=API_PREFIX)
    return app


def version_config() -> dict:
    return {"version": VERSION, "upgrade_recommended": False}


def storage_config(root: Path) -> dict:
    """A local blockstore without pre-signed URLs, so clients send data through the API."""
    return {
        "blockstore_type": "local",
        "blockstore_namespace_example": f"local://{root}/example",
        "blockstore_namespace_ValidityRegex": "^local://",
        "pre_sign_support": False,
        "pre_sign_support_ui": False,
        "import_support": False,
        "import_validity_regex": "^local://",
    }
