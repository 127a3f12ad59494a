"""The Triton model repository as deployments see it: immutable numbered versions, written atomically, one writer.

    <root>/models/<model>/config.pbtxt      version_policy pins the version(s) Triton may load
    <root>/models/<model>/<N>/              one deployment's files, complete before Triton can see them
    <root>/adapters/adapters.json           LoRA adapters: stable name -> {id, path, ...}, read per request
    <root>/adapters/<name>/<id>/            one adapter's PEFT files
    <root>/staging/                         where versions and adapters are assembled, then renamed into place

A version is assembled under staging/ and renamed into the model's directory (atomic on one filesystem), so Triton
never loads a half-written version; config files are replaced the same way. A file lock makes writers take turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def write_atomically(path: Path, text: str) -> None:
    """Replace path's content in one step: readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


class ModelRepository:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.adapters_dir = self.root / "adapters"
        self.adapters_index = self.adapters_dir / "adapters.json"
        self._staging = self.root / "staging"

    @contextlib.contextmanager
    def writer(self) -> Iterator[ModelRepository]:
        """Exclusive write access across processes (two deploys never interleave their writes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".writer.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def versions(self, model: str) -> list[int]:
        directory = self.models / model
        return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()) \
            if directory.is_dir() else []

    def version_dir(self, model: str, version: int) -> Path:
        return self.models / model / str(version)

    def add_version(self, model: str, populate: Callable[[Path], None]) -> int:
        """The next version number, its directory filled by `populate` in staging and then renamed into place."""
        version = max(self.versions(model), default=0) + 1
        self._staging.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=self._staging, prefix=f"{model}-{version}-"))
        try:
            populate(staged)
            (self.models / model).mkdir(parents=True, exist_ok=True)
            os.rename(staged, self.version_dir(model, version))
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return version

    def write_config(self, model: str, text: str) -> Path:
        path = self.models / model / "config.pbtxt"
        write_atomically(path, text)
        return path

    def read_config(self, model: str) -> str | None:
        path = self.models / model / "config.pbtxt"
        return path.read_text() if path.exists() else None

    def prune(self, model: str, keep: int, protect: set[int]) -> list[int]:
        """Delete the oldest versions beyond the newest `keep`, never one in `protect` (serving or candidate)."""
        old = [v for v in self.versions(model)[:-keep or None] if v not in protect] if keep else []
        for version in old:
            doomed = self._staging / f"pruned-{model}-{version}"
            os.rename(self.version_dir(model, version), doomed)  # out of Triton's sight first, then deleted
            shutil.rmtree(doomed)
        return old

    def adapters(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.adapters_index.read_text()) if self.adapters_index.exists() else {}

    def add_adapter(self, name: str, source: Path, lineage: dict[str, str]) -> dict[str, Any]:
        """Deploy a PEFT adapter under a stable name; a name keeps its id across updates, new names get new ids."""
        index = self.adapters()
        ids = [entry["id"] for entry in index.values()]
        entry_id = index[name]["id"] if name in index else max(ids, default=0) + 1
        revision = index[name]["revision"] + 1 if name in index else 1
        self._staging.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=self._staging, prefix=f"adapter-{name}-"))
        target = self.adapters_dir / name / str(revision)
        try:
            shutil.copytree(source, staged, dirs_exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, target)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        entry = {"id": entry_id, "revision": revision, "path": str(target), **lineage}
        write_atomically(self.adapters_index, json.dumps({**index, name: entry}, indent=2, sort_keys=True))
        return entry


def find_adapter(index_path: Path, name: str | None = None, adapter_id: int | None = None) -> dict[str, Any] | None:
    """An adapter's entry by name or by id, read fresh from the index (deploys add adapters while serving)."""
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for entry_name, entry in index.items():
        if entry_name == name or (adapter_id is not None and entry["id"] == adapter_id):
            return {"name": entry_name, **entry}
    return None
