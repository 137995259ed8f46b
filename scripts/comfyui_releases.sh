#!/usr/bin/env bash
# Checks out every ComfyUI release of the bundle (../shared/comfyui/comfyui-versions.bundle, one tagged commit per
# release) into a folder outside the project, once, and prints "TAG PATH" per release, oldest first.
# NASA_COMFYUI_BUNDLE and NASA_COMFYUI_RELEASES override where the bundle is and where the trees go.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${NASA_COMFYUI_BUNDLE:-$(pwd)/../shared/comfyui/comfyui-versions.bundle}
dest=${NASA_COMFYUI_RELEASES:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/comfyui-nasa/releases}
if [ ! -f "$bundle" ]; then
  echo "no ComfyUI release bundle at $bundle (set NASA_COMFYUI_BUNDLE)" >&2
  exit 3
fi
mkdir -p "$dest"
repo="$dest/.bundle.git"
if [ ! -d "$repo" ]; then
  git clone -q --bare "$bundle" "$repo.tmp" && mv "$repo.tmp" "$repo"
else
  git -C "$repo" fetch -q "$bundle" '+refs/tags/*:refs/tags/*'
fi
for tag in $(git -C "$repo" tag --sort=v:refname); do
  tree="$dest/$tag"
  if [ ! -f "$tree/nodes.py" ] || [ "$(git -C "$tree" rev-parse HEAD 2>/dev/null)" != "$(git -C "$repo" rev-parse "$tag^{commit}")" ]; then
    rm -rf "$tree"
    git -C "$repo" worktree prune
    git -C "$repo" worktree add -q --detach "$tree" "$tag" 2>/dev/null
  fi
  echo "$tag $tree"
done
