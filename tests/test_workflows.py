"""Validates every workflow in workflows/ against the real node specs: UI files (what ComfyUI's frontend saves
and loads by drag and drop) and API files (what POST /prompt takes).

Node specs: the pack's nodes are read live. ComfyUI's stock nodes are read live from a full tree's nodes.py
when COMFYUI_PATH points at one, else from tests/data/comfy_node_specs.json (the PyPI copy has no nodes.py),
which tests/data/make_comfy_node_specs.py regenerates and which the live run checks is still current."""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
DATA = Path(__file__).resolve().parent / "data"

_spec = importlib.util.spec_from_file_location("make_comfy_node_specs", DATA / "make_comfy_node_specs.py")
specs_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(specs_tool)

FILE_LIST = specs_tool.FILE_LIST
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # frontend-only nodes allowed in UI files
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROL = ("fixed", "increment", "decrement", "randomize")
MODEL_FILE_EXTENSIONS = (".safetensors", ".ckpt")


# ---------------------------------------------------------------- node specs

def live_comfy_nodes():
    """The full tree's nodes module when COMFYUI_PATH points at one, else None."""
    path = os.environ.get("COMFYUI_PATH")
    if not path or not (Path(path) / "nodes.py").is_file():
        return None
    import nodes
    assert Path(nodes.__file__).resolve().parent == Path(path).resolve(), f"imported the wrong nodes: {nodes.__file__}"
    return specs_tool.with_builtin_extra_nodes(nodes)


@functools.lru_cache(maxsize=None)
def load_specs() -> dict:
    """node type -> {"inputs": [[name, type, options, required], ...], "outputs": [type, ...]}."""
    from comfyui_nasa.nodes import NODE_CLASS_MAPPINGS as PACK
    nodes = live_comfy_nodes()
    if nodes is not None:
        stock = specs_tool.stock_specs(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_CLASS_MAPPINGS)
    else:
        stock = json.loads((DATA / "comfy_node_specs.json").read_text())["nodes"]
    return {**stock, **{name: specs_tool.node_spec(cls) for name, cls in PACK.items()}}


# ---------------------------------------------------------------- validator

def accepts(input_type: str, output_type: str) -> bool:
    return "*" in (input_type, output_type) or output_type in input_type.split(",")


def is_widget(kind: str, opts: dict) -> bool:
    return kind in WIDGET_TYPES and not opts.get("forceInput")


def has_seed_control(name: str, kind: str, opts: dict) -> bool:
    """The UI saves a control_after_generate value ("fixed", "randomize", ...) right after a seed widget."""
    return kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))


def value_problem(kind: str, opts: dict, value) -> str | None:
    """Why ``value`` is not valid for a widget of this type, or None."""
    if kind == "CONTROL":
        return None if value in SEED_CONTROL else f"{value!r} is not one of {SEED_CONTROL}"
    if kind == "COMBO":
        choices = opts.get("choices")
        if choices == FILE_LIST:  # a model file picker: lists the files of the install
            ok = isinstance(value, str) and value.endswith(MODEL_FILE_EXTENSIONS)
            return None if ok else f"{value!r} is not a model file name ({'/'.join(MODEL_FILE_EXTENSIONS)})"
        return None if value in choices else f"{value!r} is not one of the choices"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    numeric = int if kind == "INT" else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        return f"{value!r} is not {kind}"
    if "min" in opts and value < opts["min"]:
        return f"{value} is below the minimum {opts['min']}"
    if "max" in opts and value > opts["max"]:
        return f"{value} is above the maximum {opts['max']}"
    return None


def widget_slots(spec: dict) -> list:
    """(name, type, options) of each widgets_values entry of a UI node, in order."""
    slots = []
    for name, kind, opts, _ in spec["inputs"]:
        if is_widget(kind, opts):
            slots.append((name, kind, opts))
            if has_seed_control(name, kind, opts):
                slots.append((f"{name} control_after_generate", "CONTROL", {}))
    return slots


def validate_ui(graph: dict, specs: dict) -> list:
    """Problems of a UI-format workflow (empty when it is valid)."""
    problems = [f"missing top-level key {k!r}" for k in ("last_node_id", "last_link_id", "nodes", "links", "version")
                if k not in graph]
    nodes = {n["id"]: n for n in graph.get("nodes", [])}
    links = {link[0]: link for link in graph.get("links", []) if len(link) == 6}
    problems += [f"link {link} is not [id, from_node, from_slot, to_node, to_slot, type]"
                 for link in graph.get("links", []) if len(link) != 6]
    if len(nodes) != len(graph.get("nodes", [])) or len(links) != len(graph.get("links", [])):
        problems.append("duplicate node or link ids")
    if (nodes and max(nodes) > graph.get("last_node_id", 0)) or (links and max(links) > graph.get("last_link_id", 0)):
        problems.append("last_node_id / last_link_id below the highest id in use")

    for nid, node in nodes.items():
        where, spec = f"node {nid} {node['type']}", specs.get(node["type"])
        if node["type"] in FRONTEND_ONLY:
            if any(i.get("link") is not None for i in node.get("inputs", [])) or any(
                    o.get("links") for o in node.get("outputs", [])):
                problems.append(f"{where}: a frontend-only node has links")
            continue
        if spec is None:
            problems.append(f"{where}: unknown node type")
            continue
        declared = {name: (kind, opts, required) for name, kind, opts, required in spec["inputs"]}
        connected = set()
        for slot, inp in enumerate(node.get("inputs", [])):
            if inp.get("name") not in declared:
                problems.append(f"{where}: it has no input named {inp.get('name')!r}")
            elif not is_widget(*declared[inp["name"]][:2]) and inp.get("type") != declared[inp["name"]][0]:
                problems.append(f"{where}: input {inp['name']!r} is typed {inp.get('type')}, not "
                                f"{declared[inp['name']][0]}")
            elif inp.get("link") is not None:
                link = links.get(inp["link"])
                if link is None or link[3] != nid or link[4] != slot:
                    problems.append(f"{where}: input {inp['name']!r} names link {inp['link']}, which does not end there")
                connected.add(inp["name"])
        problems += [f"{where}: required input {name!r} is not connected" for name, (kind, opts, required)
                     in declared.items() if required and not is_widget(kind, opts) and name not in connected]
        outputs = node.get("outputs", [])
        if [o.get("type") for o in outputs] != spec["outputs"]:
            problems.append(f"{where}: outputs {[o.get('type') for o in outputs]} differ from {spec['outputs']}")
        for slot, out in enumerate(outputs):
            for lid in out.get("links") or []:
                if lid not in links or links[lid][1] != nid or links[lid][2] != slot:
                    problems.append(f"{where}: output {slot} names link {lid}, which does not start there")
        values, slots = node.get("widgets_values", []), widget_slots(spec)
        if not isinstance(values, list) or len(values) != len(slots):
            problems.append(f"{where}: widgets_values {values!r} do not fit the widgets {[s[0] for s in slots]}")
            continue
        for (name, kind, opts), value in zip(slots, values):
            if (why := value_problem(kind, opts, value)) is not None:
                problems.append(f"{where}: widget {name!r}: {why}")

    for lid, (_, src, src_slot, dst, dst_slot, kind) in links.items():
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid}: joins a node that does not exist")
            continue
        src_spec, dst_spec = specs.get(nodes[src]["type"]), specs.get(nodes[dst]["type"])
        if src_spec is not None:
            if not 0 <= src_slot < len(src_spec["outputs"]):
                problems.append(f"link {lid}: node {src} has no output slot {src_slot}")
            elif kind != src_spec["outputs"][src_slot]:
                problems.append(f"link {lid}: type {kind} but node {src} output {src_slot} is "
                                f"{src_spec['outputs'][src_slot]}")
        dst_inputs = nodes[dst].get("inputs", [])
        if not 0 <= dst_slot < len(dst_inputs):
            problems.append(f"link {lid}: node {dst} has no input slot {dst_slot}")
        elif dst_spec is not None:
            declared = {name: kind for name, kind, _, _ in dst_spec["inputs"]}
            name = dst_inputs[dst_slot].get("name")
            if name in declared and not accepts(declared[name], kind):
                problems.append(f"link {lid}: type {kind} into input {name!r} of node {dst}, which takes "
                                f"{declared[name]}")
    return problems


def validate_api(prompt: dict, specs: dict) -> list:
    """Problems of an API-format workflow (empty when it is valid)."""
    problems = []
    for nid, node in prompt.items():
        where, spec = f"node {nid} {node.get('class_type')}", specs.get(node.get("class_type"))
        if spec is None:
            kind = "a frontend-only node, not allowed in API format" if node.get("class_type") in FRONTEND_ONLY else ""
            problems.append(f"{where}: unknown node type{' (' + kind + ')' if kind else ''}")
            continue
        inputs = node.get("inputs", {})
        declared = {name for name, _, _, _ in spec["inputs"]}
        problems += [f"{where}: it has no input named {name!r}" for name in inputs if name not in declared]
        for name, kind, opts, required in spec["inputs"]:
            if name not in inputs:
                if required:
                    problems.append(f"{where}: required input {name!r} is missing")
                continue
            value = inputs[name]
            if isinstance(value, list):  # a link: [source node id, output slot]
                if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
                    problems.append(f"{where}: input {name!r}: {value!r} is not a link [node_id, slot]")
                    continue
                source = prompt.get(value[0])
                source_spec = specs.get(source.get("class_type")) if source else None
                if source is None:
                    problems.append(f"{where}: input {name!r} links to node {value[0]}, which does not exist")
                elif source_spec is None:
                    continue  # reported at the source node
                elif not 0 <= value[1] < len(source_spec["outputs"]):
                    problems.append(f"{where}: input {name!r} links to slot {value[1]} of node {value[0]}, "
                                    f"which has {len(source_spec['outputs'])} outputs")
                elif not accepts(kind, source_spec["outputs"][value[1]]):
                    problems.append(f"{where}: input {name!r} takes {kind} but gets "
                                    f"{source_spec['outputs'][value[1]]} from node {value[0]}")
            elif kind in WIDGET_TYPES:
                if (why := value_problem(kind, opts, value)) is not None:
                    problems.append(f"{where}: input {name!r}: {why}")
            else:
                problems.append(f"{where}: input {name!r} takes {kind} and must be a link")
    return problems


def ui_to_api(graph: dict, specs: dict) -> dict:
    """The API prompt that ComfyUI's frontend would queue for a (valid) UI workflow."""
    links = {link[0]: link for link in graph["links"]}
    prompt = {}
    for node in graph["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        slots = widget_slots(specs[node["type"]])
        inputs = {name: value for (name, kind, _), value in zip(slots, node.get("widgets_values", []))
                  if kind != "CONTROL"}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# ---------------------------------------------------------------- the shipped workflows

UI_FILES = sorted(p for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".api.json"))
API_FILES = sorted(WORKFLOWS.glob("*.api.json"))


def read(path: Path):
    return json.loads(path.read_text())


def api_twin(path: Path) -> Path:
    return path.with_name(path.name[:-len(".json")] + ".api.json")


def test_every_workflow_comes_in_both_formats():
    assert len(UI_FILES) >= 6
    assert sorted(api_twin(p) for p in UI_FILES) == API_FILES


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_is_valid(path):
    graph = read(path)
    assert graph["version"] == 0.4 and isinstance(graph["groups"], list)
    assert validate_ui(graph, load_specs()) == []


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_valid(path):
    assert validate_api(read(path), load_specs()) == []


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_and_api_files_describe_the_same_graph(path):
    api = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in read(api_twin(path)).items()}
    assert ui_to_api(read(path), load_specs()) == api


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_note_names_the_model_files_and_a_starting_alpha(path):
    graph = read(path)
    notes = [n["widgets_values"][0] for n in graph["nodes"] if n["type"] in FRONTEND_ONLY]
    assert notes, "every UI workflow carries a Note for the user"
    files = [v for n in graph["nodes"] for v in n.get("widgets_values", []) if isinstance(v, str)
             and v.endswith(MODEL_FILE_EXTENSIONS)]
    assert files and all(f in notes[0] for f in files)
    bundled = any(n["type"] == "LoadNASAWorldModel" for n in graph["nodes"])
    assert ("models/ folder" if bundled else "huggingface.co/") in notes[0] and "Alpha: " in notes[0]


SAMPLERS = ("KSampler", "SamplerCustom", "KSamplerAdvanced", "SamplerCustomAdvanced")
MODEL_LOADERS = ("CheckpointLoaderSimple", "UNETLoader", "LoadNASAWorldModel")
# MODEL -> MODEL nodes allowed between a loader and the NASA patch (few-step LoRAs, the family's sampling shift)
MODEL_STEPS = ("LoraLoaderModelOnly", "ModelSamplingAuraFlow", "ModelSamplingSD3")


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_sampler_gets_a_nasa_patched_model_and_a_nasa_negative(path):
    """Every sampler (KSampler, SamplerCustom, each KSamplerAdvanced of a two-expert graph, or the guider of a
    SamplerCustomAdvanced) samples a model that went through a NASA patch last, from a loader through LoRAs and
    model-sampling shifts only, with one NASA negative from a CLIP Text Encode; all samplers of a graph share it."""
    prompt = read(path)

    def source(node, name):
        return prompt[node["inputs"][name][0]]

    samplers = [n for n in prompt.values() if n["class_type"] in SAMPLERS]
    assert samplers, "no sampler"
    patches, negatives_seen = [], []
    for sampler in samplers:
        if sampler["class_type"] == "SamplerCustomAdvanced":
            guider = source(sampler, "guider")
            assert guider["class_type"] in ("BasicGuider", "CFGGuider")
            patch = source(guider, "model")
            positive = source(guider, "conditioning" if guider["class_type"] == "BasicGuider" else "positive")
        else:
            patch, positive = source(sampler, "model"), source(sampler, "positive")
        assert patch["class_type"] in ("ApplyNASAModelPatch", "ApplyNASAModelPatchAdvanced")
        model = source(patch, "model")
        while model["class_type"] in MODEL_STEPS:
            model = source(model, "model")
        assert model["class_type"] in MODEL_LOADERS, model["class_type"]
        negatives = [source(n, "nasa_negative") for n in (patch, positive) if "nasa_negative" in n["inputs"]]
        assert len(negatives) == 1, "one NASA negative: model-wide or carried by the prompt, not both or neither"
        assert negatives[0]["class_type"] == "CLIPTextEncode" and negatives[0]["inputs"]["text"].strip()
        patches.append(id(patch))
        negatives_seen.append(id(negatives[0]))
    assert len(set(patches)) == len(samplers), "each sampler (each expert) gets its own NASA patch"
    assert len(set(negatives_seen)) == 1, "the samplers of one graph remove the same negative"


def test_snapshot_of_stock_node_specs_is_current():
    nodes = live_comfy_nodes()
    if nodes is None:
        pytest.skip("needs a full ComfyUI tree (COMFYUI_PATH)")
    snapshot = read(DATA / "comfy_node_specs.json")["nodes"]
    live = specs_tool.stock_specs(nodes.NODE_CLASS_MAPPINGS, specs_tool.workflow_node_types())
    assert snapshot == live, "rerun: COMFYUI_PATH=... python tests/data/make_comfy_node_specs.py"


# ---------------------------------------------------------------- the validator catches mistakes

def reported(problems, *parts):
    return any(all(part in p for part in parts) for p in problems)


def test_validator_reports_each_problem_of_a_broken_ui_workflow():
    graph = copy.deepcopy(read(WORKFLOWS / "sd_turbo_1step.json"))
    nodes = {n["type"]: n for n in graph["nodes"]}
    model_link = next(lk for lk in graph["links"] if lk[5] == "MODEL" and lk[3] == nodes["KSampler"]["id"])
    model_link[5] = "LATENT"                                   # bad link type
    nodes["KSampler"]["widgets_values"][2] = 0                 # steps below its minimum of 1
    nodes["KSampler"]["widgets_values"][4] = "no_such_sampler"  # combo value not in the list
    nodes["ApplyNASAModelPatch"]["widgets_values"] = [9.0]     # alpha above its maximum of 5
    nodes["EmptyLatentImage"]["widgets_values"].pop()          # a widget value missing
    nodes["VAEDecode"]["type"] = "VAEDecodeTypo"               # unknown node type
    problems = validate_ui(graph, load_specs())
    ks, patch = nodes["KSampler"]["id"], nodes["ApplyNASAModelPatch"]["id"]
    assert reported(problems, f"link {model_link[0]}", "type LATENT", "output 0 is MODEL")
    assert reported(problems, f"link {model_link[0]}", "into input 'model'", "takes MODEL")
    assert reported(problems, f"node {ks} KSampler", "'steps'", "below the minimum 1")
    assert reported(problems, f"node {ks} KSampler", "'sampler_name'", "not one of the choices")
    assert reported(problems, f"node {patch} ApplyNASAModelPatch", "'alpha'", "above the maximum 5")
    assert reported(problems, "EmptyLatentImage", "do not fit the widgets")
    assert reported(problems, "VAEDecodeTypo", "unknown node type")
    assert len(problems) == 7, problems


def test_validator_reports_each_problem_of_a_broken_api_workflow():
    prompt = copy.deepcopy(read(WORKFLOWS / "sd_turbo_1step.api.json"))
    ids = {n["class_type"]: nid for nid, n in prompt.items()}
    sampler = prompt[ids["KSampler"]]["inputs"]
    sampler["model"] = [ids["EmptyLatentImage"], 0]            # bad link type: LATENT into MODEL
    sampler["positive"] = [ids["CLIPTextEncode"], 3]           # slot out of range
    sampler["cfg"] = 1000.0                                    # above its maximum of 100
    sampler["seed"] = "42"                                     # not an INT
    del sampler["latent_image"]                                # required input missing
    prompt[ids["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] = "sd_turbo"  # not a model file name
    prompt[ids["ApplyNASAModelPatch"]]["inputs"]["alpha"] = -0.5               # below its minimum of 0
    prompt[ids["VAEDecode"]]["class_type"] = "VAEDecodeTypo"                   # unknown node type
    prompt["99"] = {"class_type": "Note", "inputs": {"text": "UI only"}}        # frontend-only node
    problems = validate_api(prompt, load_specs())
    where = f"node {ids['KSampler']} KSampler"
    assert reported(problems, where, "'model' takes MODEL but gets LATENT")
    assert reported(problems, where, "'positive' links to slot 3")
    assert reported(problems, where, "'cfg'", "above the maximum 100")
    assert reported(problems, where, "'seed'", "is not INT")
    assert reported(problems, where, "'latent_image' is missing")
    assert reported(problems, "CheckpointLoaderSimple", "'ckpt_name'", "not a model file name")
    assert reported(problems, "ApplyNASAModelPatch", "'alpha'", "below the minimum 0")
    assert reported(problems, "VAEDecodeTypo", "unknown node type")
    assert reported(problems, "node 99 Note", "frontend-only")
    assert len(problems) == 9, problems
