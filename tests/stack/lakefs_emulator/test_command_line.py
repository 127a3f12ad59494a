"""The emulator's command line carries any generated key pair: token_urlsafe secrets start with "-" one time in 32."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.lakefs_emulator.__main__ import parse_args
from stack.lakefs_emulator.service import emulator_argv


@pytest.mark.parametrize("secret", ["-starts-with-a-dash", "--looks-like-an-option", "plain_secret"])
def test_every_generated_secret_reaches_the_emulator_unchanged(secret):
    argv = emulator_argv(Path("/data"), 18000, "-AKIAJ", secret)
    args = parse_args(argv[argv.index("stack.lakefs_emulator") + 1:])
    assert (args.access_key_id, args.secret_access_key, args.port) == ("-AKIAJ", secret, 18000)
