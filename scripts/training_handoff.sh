#!/usr/bin/env bash
# Carries long world-model training runs from one session's machine to the next: nothing under runs/ survives a
# session, and a run needs several. `save RUN...` copies each run's exact-resume state (runs/RUN/checkpoint.pt
# and the run's settings and log: config.json and loss.csv for a world teacher, run.json and log.csv for a
# `python -m nasa_core.distill` student) into training/RUN/, to be committed; `restore RUN...` puts it back under runs/RUN/, after
# which the run's own command with --resume continues it bit for bit. training/ is left out of the published
# pack (.comfyignore). NASA_RUNS_DIR and NASA_TRAINING_DIR move the two folders (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${NASA_RUNS_DIR:-runs} kept=${NASA_TRAINING_DIR:-training}
what=${1:-}; shift || true
[ "$what" = save ] || [ "$what" = restore ] && [ $# -gt 0 ] || { echo "usage: $0 save|restore RUN..." >&2; exit 2; }
for run in "$@"; do
  if [ "$what" = save ]; then src=$runs/$run dst=$kept/$run; else src=$kept/$run dst=$runs/$run; fi
  [ -f "$src/checkpoint.pt" ] || { echo "no checkpoint at $src/checkpoint.pt" >&2; exit 1; }
  mkdir -p "$dst"
  for f in checkpoint.pt loss.csv config.json run.json log.csv; do
    if [ -f "$src/$f" ]; then cp "$src/$f" "$dst/$f.tmp" && mv "$dst/$f.tmp" "$dst/$f"; fi
  done
  echo "$what $run: $src -> $dst ($(du -h "$dst/checkpoint.pt" | cut -f1))"
done
