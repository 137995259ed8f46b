#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: a venv with torch, the test needs, and the PyPI copy
# of ComfyUI in .deps/comfy_pypi, and what the 2025-2026 ComfyUI releases of the test matrix import besides.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || pip_install "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -c "import pytest, torchsde, transformers, kornia, spandrel" 2>/dev/null || pip_install -r requirements-dev.txt
[ -d .deps/comfy_pypi/comfy ] || pip_install --no-deps --target .deps/comfy_pypi "notcomfy==0.1.0"
# CLIP's BPE data for the world model's tokenizer where ComfyUI's copy lacks it (the PyPI copy); data only, no deps
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('open_clip') is None)" 2>/dev/null || \
  pip_install --no-deps "open_clip_torch==3.3.0"
.venv/bin/python -c "import av, alembic, sqlalchemy, comfy_kitchen, pydantic_settings, requests" 2>/dev/null || \
  pip_install "av>=14.2.0" alembic SQLAlchemy "comfy-kitchen>=0.2.3" "pydantic~=2.0" "pydantic-settings~=2.0" requests
# comfy-cli (the Comfy Registry's client) in a venv of its own, for the test that runs `comfy node validate`
[ -x .venv-cli/bin/comfy ] || { "$PY" -m venv .venv-cli && .venv-cli/bin/python -m pip install -q --disable-pip-version-check "comfy-cli==1.23.0"; }
