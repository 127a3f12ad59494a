"""Serve the lakeFS emulator until SIGTERM: `python -m stack.lakefs_emulator --help`."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import uvicorn

from .app import Credentials, create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stack.lakefs_emulator",
        description="Serve lakeFS's REST API (/api/v1) from a local data directory, for the embedded stack. "
        "Point the `lakefs` SDK or lakectl at http://HOST:PORT with the same key pair.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (only this one); default 127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="where metadata (lakefs.db, SQLite WAL) and object data (blobs/) live; "
                        "reused across restarts")
    parser.add_argument("--access-key-id", default=os.environ.get("LAKEFS_EMULATOR_ACCESS_KEY_ID"),
                        help="basic-auth user every /api/v1 call must present "
                        "(default: $LAKEFS_EMULATOR_ACCESS_KEY_ID)")
    parser.add_argument("--secret-access-key", default=os.environ.get("LAKEFS_EMULATOR_SECRET_ACCESS_KEY"),
                        help="basic-auth password (default: $LAKEFS_EMULATOR_SECRET_ACCESS_KEY)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level; default warning")
    args = parser.parse_args(argv)
    if not args.access_key_id or not args.secret_access_key:
        parser.error("--access-key-id and --secret-access-key are required (or set the LAKEFS_EMULATOR_* env)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    app = create_app(args.data_dir.resolve(), Credentials(args.access_key_id, args.secret_access_key))
    # uvicorn turns SIGTERM into a graceful shutdown (closing the store), then re-raises the signal to the
    # handler that was there before it; a no-op one there makes that shutdown exit with status 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
