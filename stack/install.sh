#!/usr/bin/env bash
# Create .venv with Python 3.11 and install requirements.txt into it; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found. Install Python 3.11 with venv (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "==> installing requirements.txt into .venv (first time: ~5 min)"
  started=$SECONDS
  # (this machine's pip config names index folders that may not exist; their warnings are noise)
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then :; else
    echo "error: a CUDA build of torch got into .venv; requirements.txt must keep torch==2.13.0 (CPU)" >&2
    exit 1
  fi
  echo "$wanted" > "$stamp"
  echo "==> installed in $((SECONDS - started))s; .venv is $(du -sh .venv | cut -f1)"
fi

# The browser test (tests/dags/test_trigger_forms_browser.py) drives Debian's chromium through Playwright, with no
# browser download. Installed here when missing and we may (root, or sudo without a password); else that test skips.
install_chromium() {
  command -v chromium >/dev/null && return 0
  local as_root=()
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then as_root=(sudo -n); else
      echo "==> chromium missing and no root here: the browser test will skip (apt-get install chromium to run it)"
      return 0
    fi
  fi
  command -v apt-get >/dev/null || { echo "==> chromium missing and no apt-get: the browser test will skip"; return 0; }
  echo "==> installing chromium (apt-get) for the browser test"
  local install=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)
  "${install[@]}" >/dev/null || { "${as_root[@]}" apt-get update -qq && "${install[@]}" >/dev/null; } \
    || echo "warning: apt-get could not install chromium; the browser test will skip" >&2
}
install_chromium
