#!/usr/bin/env bash
# The test command (CI runs exactly this through .ci/run). Set-up if needed, then the release matrix:
#   - the whole suite on the PyPI ComfyUI copy (notcomfy 0.1.0, Nov 2024) and on the newest release of the bundle;
#   - the compatibility suite (tests marked "compat") on every other release of the bundle
#     (scripts/comfyui_releases.sh checks them out outside the project).
# COMFYUI_PATH=/path/to/ComfyUI adds a whole-suite run on that tree. Extra arguments go to every pytest run.
# Prints one line per run (counts, seconds) and a closing "matrix:" line; fails if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
logs=$(mktemp -d)
summary=()
status=0

run_suite() {  # name, tree ("" = PyPI copy), suite ("full" or "compat"), pytest args...
  local name=$1 tree=$2 suite=$3; shift 3
  local select=() log="$logs/$(echo "$name" | tr -c 'A-Za-z0-9.\n' '_').log" start rc
  [ "$suite" = compat ] && select=(-m compat)
  echo "== $suite suite on $name${tree:+ ($tree)}"
  start=$(date +%s)
  if [ -n "$tree" ]; then
    COMFYUI_PATH="$tree" .venv/bin/python -m pytest -q -rs -p no:cacheprovider "${select[@]}" tests "$@" 2>&1 | tee "$log"
  else
    env -u COMFYUI_PATH .venv/bin/python -m pytest -q -rs -p no:cacheprovider "${select[@]}" tests "$@" 2>&1 | tee "$log"
  fi
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  summary+=("$(printf '%-28s %-7s %5ss  rc %s  %s' "$name" "$suite" "$(( $(date +%s) - start ))" "$rc" "$(tail -n 1 "$log")")")
}

releases=$(bash scripts/comfyui_releases.sh)
got=$?
if [ $got -ne 0 ]; then
  if [ "${CI:-}" = true ]; then echo "CI needs the ComfyUI release bundle"; exit 1; fi
  echo "!! no ComfyUI release bundle: only the PyPI copy is tested (the release matrix needs ../shared/comfyui)"
fi
newest=$(echo "$releases" | tail -n 1 | cut -d' ' -f1)

run_suite "PyPI copy (notcomfy 0.1.0)" "" full "$@"
while read -r tag tree; do
  [ -n "$tag" ] || continue
  if [ "$tag" = "$newest" ]; then run_suite "$tag" "$tree" full "$@"; else run_suite "$tag" "$tree" compat "$@"; fi
done <<< "$releases"
if [ -n "${COMFYUI_PATH:-}" ]; then run_suite "COMFYUI_PATH" "$COMFYUI_PATH" full "$@"; fi

echo
echo "== release matrix (runtime, suite, seconds, pytest's exit code, its closing line)"
printf '%s\n' "${summary[@]}"
printf '%s\n' "${summary[@]}" | awk '{
  for (i = 1; i <= NF; i++) { n = $i + 0; w = $(i + 1); gsub(/[^a-z]/, "", w)
    if (w == "passed") p += n; else if (w == "failed") f += n; else if (w == "skipped") s += n; else if (w == "error" || w == "errors") f += n } }
  END { printf "matrix: %d passed, %d failed, %d skipped\n", p, f, s }'
rm -rf "$logs"
exit $status
