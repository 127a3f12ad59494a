"""Content-addressed object data on local disk, written so a crash never leaves a half-written blob visible."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredBlob:
    """Where a blob landed and what lakeFS reports about it (hex MD5 checksum, as lakeFS's local adapter)."""

    sha256: str
    md5: str
    size: int
    path: Path


class BlobStore:
    """Blobs are named by their SHA-256; a write goes to tmp/, is fsynced, then renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.data = root / "data"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():  # uploads interrupted by a crash; never referenced
            leftover.unlink(missing_ok=True)

    def path_of(self, sha256: str) -> Path:
        return self.data / sha256[:2] / sha256

    async def write_stream(self, chunks: AsyncIterator[bytes]) -> StoredBlob:
        """Stream an upload body to disk while hashing it, then publish it atomically."""
        md5, sha = hashlib.md5(), hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                    md5.update(chunk)
                    sha.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._publish(Path(tmp_name), sha.hexdigest(), md5.hexdigest(), size)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _publish(self, tmp_path: Path, sha256: str, md5: str, size: int) -> StoredBlob:
        final = self.path_of(sha256)
        final.parent.mkdir(exist_ok=True)
        if final.exists():
            tmp_path.unlink()
        else:
            os.replace(tmp_path, final)
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return StoredBlob(sha256=sha256, md5=md5, size=size, path=final)
