"""The one interface every launcher implements, and the choice of launcher from platform config."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import yaml

from plugins.launchers.step import Step

REPO_ROOT = Path(__file__).resolve().parents[2]
PLATFORM_CONFIG = REPO_ROOT / "include" / "platform.yaml"
LAUNCHERS = ("local", "kubernetes")


class StepFailed(RuntimeError):
    """The step ran and failed; the message says which step and how."""


class Launcher(Protocol):
    def run(self, step: Step, context: Any, log: logging.Logger) -> None:
        """Run the step to completion, streaming its output to log; raise StepFailed on failure."""

    def kill(self) -> None:
        """Stop whatever run() started (called from the operator's on_kill)."""


def platform_config() -> dict[str, Any]:
    with open(PLATFORM_CONFIG) as config_file:
        return yaml.safe_load(config_file)


def launcher_name(config: dict[str, Any] | None = None) -> str:
    """`LLMOPS_LAUNCHER` wins over include/platform.yaml's `launcher`."""
    config = config if config is not None else platform_config()
    name = os.environ.get("LLMOPS_LAUNCHER") or config.get("launcher", "local")
    if name not in LAUNCHERS:
        raise ValueError(f"launcher {name!r} is not one of {', '.join(LAUNCHERS)} (LLMOPS_LAUNCHER / include/platform.yaml)")
    return name


def artifact_root(name: str | None = None) -> str:
    """Where steps keep checkpoints and dataset caches, as the step's process sees it: the shared data volume on
    Kubernetes (mounted at the same path in every pod), `LLMOPS_ARTIFACT_ROOT` (the stack sets it) locally."""
    config = platform_config()
    if (name or launcher_name(config)) == "kubernetes":
        return config["kubernetes"]["data_mount_path"]
    return os.environ.get("LLMOPS_ARTIFACT_ROOT", str(REPO_ROOT / ".stack" / "artifacts"))


def make_launcher(name: str | None = None) -> Launcher:
    config = platform_config()
    name = name or launcher_name(config)
    if name == "local":
        from plugins.launchers.local import LocalLauncher

        return LocalLauncher()
    if name == "kubernetes":
        from plugins.launchers.kubernetes import KubernetesLauncher

        return KubernetesLauncher(config["kubernetes"])
    raise ValueError(f"launcher {name!r} is not one of {', '.join(LAUNCHERS)}")
