#!/usr/bin/env bash
# The test command: set-up if needed, then the suite on the PyPI ComfyUI copy, and again on the modern
# ComfyUI tree when COMFYUI_PATH points at one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== tests on the PyPI ComfyUI copy (notcomfy 0.1.0)"
env -u COMFYUI_PATH .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
if [ -n "${COMFYUI_PATH:-}" ]; then
  echo "== tests on the modern ComfyUI tree at $COMFYUI_PATH"
  .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
fi
