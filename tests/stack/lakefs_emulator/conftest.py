"""The emulator as a real subprocess on a free port in a tmp dir, stopped by PID; SDK clients to talk to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import lakefs
import pytest

from stack.lakefs_emulator.service import EmulatorProcess, start_emulator
from stack.process import free_port, pid_alive

ACCESS_KEY = "AKIAEMULATORTEST"
SECRET_KEY = "emulator-test-secret"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    root = tmp_path_factory.mktemp("lakefs-emulator")
    process = start_emulator(root / "data", free_port(), ACCESS_KEY, SECRET_KEY, run_dir=root / "run")
    yield process
    process.stop()
    assert not pid_alive(process.pid), "emulator still running after stop"


@pytest.fixture()
def client(emulator: EmulatorProcess) -> lakefs.Client:
    return lakefs.Client(host=emulator.url, username=ACCESS_KEY, password=SECRET_KEY)


@pytest.fixture()
def repo(client: lakefs.Client) -> lakefs.Repository:
    name = f"test-{uuid.uuid4().hex[:12]}"
    return lakefs.Repository(name, client=client).create(storage_namespace=f"local://{name}")

