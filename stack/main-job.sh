#!/usr/bin/env bash
# README command one: install, bring the embedded stack up, run the main job end to end, say where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
bash stack/install.sh
exec .venv/bin/python -m stack main-job "$@"
