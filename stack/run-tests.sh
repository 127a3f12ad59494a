#!/usr/bin/env bash
# README command two (and .ci/run): install, then run the whole test suite, slow end-to-end tests included.
# Skip the slow ones locally with: bash stack/run-tests.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash stack/install.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
