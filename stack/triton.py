"""The Triton server bundled in nvidia-pytriton, run directly in explicit model-control mode on CPU."""

from __future__ import annotations

import os
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stack.config import HOST, StackConfig
from stack.process import pid_alive


def _dist() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def model_repository(cfg: StackConfig) -> Path:
    return cfg.home / "triton" / "models"


def prepare_backends(cfg: StackConfig) -> Path:
    """A backends dir whose python backend carries the stub built for this interpreter's version."""
    dist = _dist()
    python_backend = cfg.home / "triton" / "backends" / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    links = {entry.name: entry for entry in (dist / "backends" / "python").iterdir() if entry.is_file()}
    links["triton_python_backend_stub"] = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    for name, target in links.items():
        link = python_backend / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return python_backend.parent


def argv(cfg: StackConfig) -> list[str]:
    model_repository(cfg).mkdir(parents=True, exist_ok=True)
    return [
        str(_dist() / "bin" / "tritonserver"),
        f"--model-repository={model_repository(cfg)}",
        "--model-control-mode=explicit",
        f"--backend-directory={prepare_backends(cfg)}",
        f"--cache-directory={_dist() / 'caches'}",
        f"--http-address={HOST}",
        f"--http-port={cfg.triton_http_port}",
        f"--grpc-address={HOST}",
        f"--grpc-port={cfg.triton_grpc_port}",
        "--allow-metrics=true",
        f"--metrics-address={HOST}",
        f"--metrics-port={cfg.triton_metrics_port}",
        "--exit-on-error=false",
        # readiness means "serving": an unloaded or failed deploy candidate must not mark the whole server unready
        "--strict-readiness=false",
        "--log-verbose=0",
    ]


def env(cfg: StackConfig) -> dict[str, str]:
    """The stub must load this interpreter's libpython first, and see the venv's packages and our code."""
    from pytriton.utils.distribution import get_libs_path

    libdir = sysconfig.get_config_var("LIBDIR")
    site_packages = sysconfig.get_paths()["purelib"]
    repo = Path(__file__).resolve().parents[1]
    lib_path = [libdir, str(get_libs_path()), os.environ.get("LD_LIBRARY_PATH", "")]
    return {
        **os.environ,
        "LD_LIBRARY_PATH": ":".join(filter(None, lib_path)),
        "PYTHONPATH": ":".join(filter(None, [site_packages, str(repo), os.environ.get("PYTHONPATH", "")])),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def url(cfg: StackConfig) -> str:
    return f"http://{HOST}:{cfg.triton_http_port}"


@dataclass(frozen=True)
class Standalone:
    http: str
    grpc: str
    metrics: str
    repository_root: Path  # holds models/ (what tasks.serving.repository.ModelRepository takes)
    log: Path


@contextmanager
def standalone(home: Path, ready_timeout: float = 120) -> Iterator[Standalone]:
    """A Triton of its own on free ports under `home` (tests, benchmarks), stopped by PID when the block ends."""
    from stack.process import free_port, start_detached, stop_pid

    cfg = StackConfig(home=home, postgres_port=0, lakefs_port=0, mlflow_port=0, triton_http_port=free_port(),
                      triton_grpc_port=free_port(), triton_metrics_port=free_port(), airflow_port=0)
    log = home / "triton.log"
    pid = start_detached(argv(cfg), pid_file=home / "triton.pid", log_file=log, env=env(cfg))
    try:
        deadline = time.monotonic() + ready_timeout
        while not _ready(url(cfg)):
            if time.monotonic() > deadline or not pid_alive(pid):
                raise RuntimeError(f"Triton not ready after {ready_timeout:.0f} s; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Standalone(url(cfg), f"{HOST}:{cfg.triton_grpc_port}", f"http://{HOST}:{cfg.triton_metrics_port}/metrics",
                         model_repository(cfg).parent, log)
    finally:
        stop_pid(pid)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/v2/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
