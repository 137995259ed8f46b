"""Regenerates comfy_node_specs.json: the input and output specs of exactly the stock ComfyUI node types that
the workflows in ../../workflows use, read live from a full ComfyUI tree (one with nodes.py). The workflow
tests use this snapshot on runtimes without nodes.py (the PyPI copy), and on a full tree they check that it
still matches.

    COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python tests/data/make_comfy_node_specs.py

Only what validation needs is kept (type, default, min, max, choices, seed control); combo lists that list
model files on disk (checkpoints, LoRAs, ...) depend on the install and become the FILE_LIST marker."""
from __future__ import annotations

import enum
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKFLOWS = ROOT / "workflows"
SNAPSHOT = HERE / "comfy_node_specs.json"

FILE_LIST = "<model files on disk>"
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}  # UI-only nodes: no Python class
KEPT_OPTIONS = ("default", "min", "max", "control_after_generate", "forceInput")


def _plain(value):
    """ComfyUI's IO enum members and tuples as plain JSON values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def node_spec(cls, is_file_list=lambda choices: False) -> dict:
    """{"inputs": [[name, type, options, required], ...] in INPUT_TYPES order, "outputs": [type, ...]}.
    Combos get type "COMBO" and options["choices"]; hidden inputs are left out."""
    types = cls.INPUT_TYPES()
    inputs = []
    for section in ("required", "optional"):
        for name, entry in (types.get(section) or {}).items():
            kind = _plain(entry[0])
            options = dict(entry[1]) if len(entry) > 1 and entry[1] else {}
            kept = {k: _plain(options[k]) for k in KEPT_OPTIONS if k in options}
            if isinstance(kind, list) or kind == "COMBO":
                choices = kind if isinstance(kind, list) else _plain(options.get("options", []))
                kind, kept["choices"] = "COMBO", FILE_LIST if is_file_list(choices) else choices
            inputs.append([name, kind, kept, section == "required"])
    return {"inputs": inputs, "outputs": [_plain(t) for t in cls.RETURN_TYPES]}


def file_list_check():
    """A predicate telling a combo of model files (equal to some models folder's listing) from a fixed one."""
    import folder_paths
    listings = [folder_paths.get_filename_list(name) for name in folder_paths.folder_names_and_paths
                if name != "custom_nodes"]
    vae_files = folder_paths.get_filename_list("vae")

    def check(choices):
        choices = list(choices)
        if any(choices == listing for listing in listings):
            return True
        # VAELoader lists the vae folder plus ComfyUI's built-in decoders (taesd*, taef1, pixel_space)
        return "pixel_space" in choices and [c for c in choices if c != "pixel_space" and not c.startswith("tae")] \
            == vae_files
    return check


def workflow_node_types(directory: Path = WORKFLOWS) -> set:
    """Every node type named in the workflow files (UI "type" and API "class_type")."""
    found = set()
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if "nodes" in data:
            found.update(node["type"] for node in data["nodes"])
        else:
            found.update(node["class_type"] for node in data.values())
    return found


def stock_specs(node_classes: dict, types) -> dict:
    check = file_list_check()
    return {t: node_spec(node_classes[t], check) for t in sorted(types) if t in node_classes}


def dump_snapshot(version: str, specs: dict) -> str:
    """JSON with one input per line, so that a ComfyUI update shows up as a readable diff."""
    blocks = []
    for name, spec in specs.items():
        inputs = ",\n    ".join(json.dumps(i) for i in spec["inputs"])
        blocks.append(f'  {json.dumps(name)}: {{"outputs": {json.dumps(spec["outputs"])}, "inputs": [\n    {inputs}]}}')
    return (f'{{"comfyui_version": {json.dumps(version)}, "file_list_marker": {json.dumps(FILE_LIST)}, "nodes": {{\n'
            + ",\n".join(blocks) + "\n}}\n")


def with_builtin_extra_nodes(nodes):
    """Register ComfyUI's built-in comfy_extras nodes (SamplerCustom, ManualSigmas, EmptyHunyuanLatentVideo, ...)
    next to nodes.py's own, once; no custom or API nodes. Extras whose dependencies are missing are skipped by
    ComfyUI with a warning and then count as unknown to the workflow validator."""
    if "KSamplerSelect" not in nodes.NODE_CLASS_MAPPINGS:
        import asyncio
        asyncio.run(nodes.init_builtin_extra_nodes())
    return nodes


def load_comfy_nodes(comfy_path: str):
    """Import a full ComfyUI tree's nodes.py (CPU arguments, as in tests/conftest.py)."""
    sys.path.insert(0, str(Path(comfy_path).resolve()))
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import nodes
    finally:
        sys.argv = argv
    return with_builtin_extra_nodes(nodes)


def main():
    comfy_path = os.environ.get("COMFYUI_PATH") or (sys.argv[1] if len(sys.argv) > 1 else None)
    if not comfy_path or not (Path(comfy_path) / "nodes.py").is_file():
        sys.exit("set COMFYUI_PATH (or pass the path) to a full ComfyUI tree, one with nodes.py")
    nodes = load_comfy_nodes(comfy_path)
    try:
        from comfyui_version import __version__ as version
    except ImportError:
        version = "unknown"
    # Types that nodes.py does not define (the pack's own, frontend-only ones) are not snapshotted.
    specs = stock_specs(nodes.NODE_CLASS_MAPPINGS, workflow_node_types())
    SNAPSHOT.write_text(dump_snapshot(version, specs))
    print(f"wrote {SNAPSHOT.relative_to(ROOT)}: {len(specs)} node types from ComfyUI {version}")


if __name__ == "__main__":
    main()
