#!/usr/bin/env bash
# README command one: set-up if needed, then the embedded-default demo (no downloads, CPU is fine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/demo.py "$@"
