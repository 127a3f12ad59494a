"""Start and stop the emulator as a detached process (for `stack up` and the tests), tracked by PID."""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack.process import start_detached, stop_pid, wait_until


@dataclass(frozen=True)
class EmulatorProcess:
    pid: int
    url: str
    access_key_id: str
    secret_access_key: str
    log_file: Path

    def stop(self) -> None:
        stop_pid(self.pid, timeout=15.0)


def healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/api/v1/healthcheck", timeout=2) as response:
        return response.status == 204


def emulator_argv(data_dir: Path, port: int, access_key_id: str, secret_access_key: str,
                  host: str = "127.0.0.1") -> list[str]:
    # key=value: a generated secret may start with "-", which argparse would take for an option
    return [sys.executable, "-m", "stack.lakefs_emulator", "--host", host, "--port", str(port),
            "--data-dir", str(data_dir), f"--access-key-id={access_key_id}", f"--secret-access-key={secret_access_key}"]


def start_emulator(
    data_dir: Path,
    port: int,
    access_key_id: str,
    secret_access_key: str,
    *,
    run_dir: Path,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
) -> EmulatorProcess:
    """Start `python -m stack.lakefs_emulator` and return once its healthcheck answers."""
    log_file = run_dir / "lakefs-emulator.log"
    argv = emulator_argv(data_dir, port, access_key_id, secret_access_key, host)
    repo_root = Path(__file__).resolve().parents[2]
    pid = start_detached(argv, pid_file=run_dir / "lakefs-emulator.pid", log_file=log_file, cwd=repo_root)
    url = f"http://{host}:{port}"
    process = EmulatorProcess(pid, url, access_key_id, secret_access_key, log_file)
    try:
        wait_until(lambda: healthy(url), timeout=timeout, what=f"lakeFS emulator on {url}", log_file=log_file)
    except TimeoutError:
        process.stop()
        raise
    return process
