"""A checkpoint store that never hands back a half-written checkpoint.

Layout of a store (a local folder here, a PVC mount in production):
    step-00000050/              megatron-core dist_checkpointing files of every rank
    step-00000050/manifest.json written last, by rank 0, after every rank's shards are on disk: the commit marker
    archive/<time>/             checkpoints set aside by resume_policy=restart
A step folder without its manifest is a crashed save: it is ignored and swept by the next save. Retention keeps the
newest `keep` committed checkpoints, pruned only after a newer one is committed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tasks.training.config import ConfigError

MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointUnusable(RuntimeError):
    """Committed checkpoints exist but none can be loaded: resuming from step 0 would silently lose training."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    manifest: dict[str, Any]


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class CheckpointStore:
    def __init__(self, root: Path | str, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = keep

    def step_dir(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def _step_dirs(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
        return sorted(found)

    def committed(self) -> list[Checkpoint]:
        """Committed checkpoints, oldest first. An unreadable manifest is listed with an empty one, to be refused."""
        out = []
        for step, path in self._step_dirs():
            marker = path / MANIFEST
            if marker.is_file():
                try:
                    manifest = json.loads(marker.read_text())
                except (OSError, ValueError):
                    manifest = {}
                out.append(Checkpoint(step, path, manifest))
        return out

    def partial(self) -> list[Path]:
        return [path for _, path in self._step_dirs() if not (path / MANIFEST).is_file()]

    def save(self, step: int, sharded_state_dict: dict, manifest: dict[str, Any]) -> Checkpoint:
        """Collective: every rank writes its shards, then rank 0 commits the manifest by rename, then prunes."""
        from megatron.core import dist_checkpointing

        target = self.step_dir(step)
        if _rank() == 0:
            shutil.rmtree(target, ignore_errors=True)  # a crashed save of this same step
            target.mkdir(parents=True)
        _barrier()
        dist_checkpointing.save(sharded_state_dict, str(target))
        _fsync_tree(target)
        _barrier()
        if _rank() == 0:
            pending = target / f".{MANIFEST}.pending"
            pending.write_text(json.dumps({**manifest, "step": step}, indent=2, sort_keys=True))
            with open(pending, "rb") as handle:
                os.fsync(handle.fileno())
            pending.rename(target / MANIFEST)
            _fsync_tree(target)
            self._prune()
        _barrier()
        return Checkpoint(step, target, json.loads((target / MANIFEST).read_text()))

    def _prune(self) -> None:
        committed = self.committed()
        for old in committed[: max(0, len(committed) - self.keep)]:
            shutil.rmtree(old.path, ignore_errors=True)
        for crashed in self.partial():
            shutil.rmtree(crashed, ignore_errors=True)

    def archive(self, keep_run_id: str) -> list[Path]:
        """Set aside (never delete) committed checkpoints made by other runs; rank 0 only."""
        moved = []
        others = [c for c in self.committed() if c.manifest.get("run_id") != keep_run_id]
        if others:
            destination = self.root / "archive" / time.strftime("%Y%m%dT%H%M%S")
            destination.mkdir(parents=True, exist_ok=True)
            for checkpoint in others:
                moved.append(Path(shutil.move(str(checkpoint.path), destination / checkpoint.path.name)))
        return moved

    def load_latest(self, config_hash: str, load: Callable[[Checkpoint], None],
                    log: Callable[[str], None] = print) -> Checkpoint | None:
        """Load the newest committed checkpoint that works, falling back to older ones; None when there is none.

        A checkpoint of another config is refused (ConfigError naming resume_policy); committed checkpoints that
        all fail to load raise CheckpointUnusable instead of starting over.
        """
        committed = self.committed()
        for ignored in self.partial():
            log(f"checkpoint: ignoring {ignored.name}, a save that never committed (no {MANIFEST})")
        if not committed:
            return None
        newest = committed[-1]
        if newest.manifest and newest.manifest.get("config_hash") != config_hash:
            raise ConfigError(
                f"resume_policy: the latest checkpoint {newest.path} was made with another model / parallel layout / "
                f"batch shape (config hash {newest.manifest.get('config_hash')} != {config_hash}); set "
                "resume_policy=restart to archive it and start over, or use the settings it was made with"
            )
        failures = []
        for checkpoint in reversed(committed):
            try:
                if not checkpoint.manifest:
                    raise ValueError(f"{MANIFEST} is unreadable")
                load(checkpoint)
                return checkpoint
            except BaseException as error:  # torch's CheckpointException is a BaseException
                if isinstance(error, KeyboardInterrupt | SystemExit):
                    raise
                failures.append(f"{checkpoint.path.name}: {error}")
                log(f"checkpoint: cannot load {checkpoint.path.name}: {error}")
        raise CheckpointUnusable(
            f"{len(committed)} committed checkpoint(s) in {self.root}, none loads ({'; '.join(failures)}); refusing to "
            "start from step 0. Fix or move them, or set resume_policy=restart to archive them and start over."
        )


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
