"""The pack inside ComfyUI itself: loaded the way ComfyUI loads a custom node folder, and real API-format graphs
run by ComfyUI's own executor (``execution.PromptExecutor``) with stock nodes around ours.

1. Loading (both runtimes). On a full tree (COMFYUI_PATH with nodes.py) ComfyUI's own loader,
   ``nodes.load_custom_node``, loads the repository through a symlink named like the published folder
   (``custom_nodes/comfyui-nasa``); both runtimes also import the folder with importlib as a package named after
   the folder, the way ComfyUI has always imported a custom node folder. The pack's nodes (the three NASA nodes
   among them) must be registered, and the load must produce no warning-level log record and no Python warning
   from the pack's files.
2. Execution (full tree only: the PyPI copy has no nodes.py or execution.py, so those tests skip). A small
   SD1.5 UNet file (model_channels 320, context 768, one level, one res block, transformer depth 1; ComfyUI's
   model detection sees SD15) and a random-initialised CLIP-L file (ComfyUI's own SD1 text encoder classes, full
   12 x 768 size) are written to a temporary models folder and loaded by the stock UNETLoader and CLIPLoader;
   the prompts go through stock CLIPTextEncode, ConditioningZeroOut (the sampler's negative, unused at cfg 1.0),
   EmptyLatentImage (64 x 64), KSampler (1 step, cfg 1.0, euler, normal) and SaveLatent, whose .latent file is
   read back. Prompts are validated with ``execution.validate_prompt`` and executed with
   ``PromptExecutor.execute`` as ComfyUI's server and prompt worker do. The only thing not from ComfyUI is
   ``MessageSink``, the object the executor sends its progress messages to (PromptServer's role); it records
   them.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

ROOT = Path(__file__).resolve().parents[1]
FOLDER_NAME = "comfyui-nasa"  # the folder name the pack is published and installed under
PACK_NODES = {"NASANegativeConditioning", "ApplyNASAModelPatch", "ApplyNASAModelPatchAdvanced"}  # at least these

UNET_FILE = "nasa_test_sd15_tiny.safetensors"
CLIP_FILE = "nasa_test_clip_l_random.safetensors"
POSITIVE_TEXT = "a photo of a cat sitting on a sofa"


def full_tree() -> Path | None:
    """The full ComfyUI tree COMFYUI_PATH points at (nodes.py, execution.py), else None (PyPI copy)."""
    path = os.environ.get("COMFYUI_PATH")
    if path and (Path(path) / "nodes.py").is_file() and (Path(path) / "execution.py").is_file():
        return Path(path).resolve()
    return None


def settled(result):
    """ComfyUI made its loader and validate_prompt coroutines in 2025 (v0.3.4x); older releases return values."""
    return asyncio.run(result) if inspect.isawaitable(result) else result


def validate(execution, prompt_id: str, prompt: dict):
    """execution.validate_prompt as the /prompt handler calls it on this release."""
    arity = len(inspect.signature(execution.validate_prompt).parameters)
    # (prompt) before mid-2025, (prompt_id, prompt) in v0.3.45, then a partial-execution list as well
    args = {1: (prompt,), 2: (prompt_id, prompt)}.get(arity, (prompt_id, prompt, None))
    return settled(execution.validate_prompt(*args))


def new_executor(execution, server):
    """A PromptExecutor with the classic cache and no LRU, whichever constructor this release has."""
    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})
    if "cache_type" in params:
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC)
    return execution.PromptExecutor(server)


def comfy_modules():
    """ComfyUI's nodes, execution and folder_paths modules from the full tree (never the pack's own nodes/)."""
    tree = full_tree()
    import execution
    import folder_paths
    import nodes
    for module in (nodes, execution, folder_paths):
        assert Path(module.__file__).resolve().parent == tree, f"imported the wrong {module.__name__}: {module.__file__}"
    return nodes, execution, folder_paths


# ---------------------------------------------------------------------------------------------------------------
# Loading helpers


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def capture_problems():
    """Collects every warning-level (and above) log record and every Python warning raised inside."""
    handler = _ListHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.records, caught
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def pack_folder(base: Path) -> Path:
    """``base/custom_nodes/comfyui-nasa``, a symlink to this repository (whose checkout folder may be named
    anything): ComfyUI names the module after the folder."""
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / FOLDER_NAME
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    return link


def from_pack(path: str, folder: Path) -> bool:
    p = Path(path)
    try:
        return p.resolve().is_relative_to(ROOT) or p.is_relative_to(folder)
    except (OSError, ValueError):
        return False


def assert_clean_load(records, caught, folder: Path):
    logged = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records]
    assert not logged, "loading the pack logged warnings:\n" + "\n".join(logged)
    ours = [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught if from_pack(w.filename, folder)]
    assert not ours, "loading the pack raised Python warnings:\n" + "\n".join(ours)


def declared_nodes() -> set:
    """Every node the pack defines (nodes.NODE_DEFS, as conftest imported the pack)."""
    import comfyui_nasa.nodes as pack_nodes
    declared = {d.node_id for d in pack_nodes.NODE_DEFS}
    assert declared == set(pack_nodes.NODE_CLASS_MAPPINGS)
    assert PACK_NODES <= declared, f"the pack does not declare {PACK_NODES - declared}"
    return declared


def exported_nodes(module):
    """(classes, display names) a loaded pack module gives ComfyUI: V1 mappings, else its V3 comfy_entrypoint."""
    if hasattr(module, "NODE_CLASS_MAPPINGS"):
        return module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS
    extension = settled(module.comfy_entrypoint())
    classes = settled(extension.get_node_list())
    schemas = [c.GET_SCHEMA() for c in classes]
    return {s.node_id: c for s, c in zip(schemas, classes)}, {s.node_id: s.display_name for s in schemas}


def v3_node_base():
    try:
        from comfy_api.latest import io
        return io.ComfyNode
    except ImportError:
        return None


def input_signature(cls) -> list:
    """(section, name, type, default, min, max, step, tooltip) of every input, in order; a combo's type is COMBO."""
    rows = []
    for section, inputs in cls.INPUT_TYPES().items():
        for name, spec in inputs.items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            kind = "COMBO" if isinstance(kind, list) else kind
            rows.append((section, name, kind) + tuple(opts.get(k) for k in ("default", "min", "max", "step", "tooltip")))
    return rows


def assert_loaded_as_this_release_expects(mapping: dict, display: dict):
    """V3 classes where this ComfyUI has comfy_api.latest, V1 elsewhere; either way the ids, display names and
    inputs (order, types, defaults, ranges, tooltips) of the V1 definitions."""
    import comfyui_nasa.nodes as pack_nodes
    base = v3_node_base()
    for name, v1 in pack_nodes.NODE_CLASS_MAPPINGS.items():
        cls = mapping[name]
        assert (base is not None and issubclass(cls, base)) == pack_nodes.V3 == (base is not None), name
        assert input_signature(cls) == input_signature(v1), name
        assert all(row[-1] for row in input_signature(cls)), f"{name}: an input without a tooltip"
        assert display[name] == pack_nodes.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert cls.DESCRIPTION, name


def assert_node_classes(mapping: dict, display: dict, names: set):
    for name in names:
        cls = mapping[name]
        types = cls.INPUT_TYPES()
        assert isinstance(types, dict) and "required" in types, name
        assert isinstance(cls.RETURN_TYPES, (tuple, list)) and cls.RETURN_TYPES, name  # V3: a list
        assert callable(getattr(cls, cls.FUNCTION)), name
        assert cls.CATEGORY.split("/")[0] == "NASA", name
        assert display.get(name), f"{name} has no display name"


def forget_modules(prefix: str):
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


@contextlib.contextmanager
def restored_registry(nodes):
    """Puts ComfyUI's node registry back as it was (the pack's nodes registered by a test are removed)."""
    saved = {d: dict(getattr(nodes, d)) for d in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS",
                                                  "LOADED_MODULE_DIRS", "EXTENSION_WEB_DIRS") if hasattr(nodes, d)}
    try:
        yield
    finally:
        for name, content in saved.items():
            registry = getattr(nodes, name)
            registry.clear()
            registry.update(content)


def load_with_comfyui(nodes, folder: Path):
    """ComfyUI's own custom node loader (as init_external_custom_nodes calls it for each folder)."""
    module_path = str(folder)
    before = set(sys.modules)
    with capture_problems() as (records, caught):
        ok = settled(nodes.load_custom_node(module_path))
    # the sys.modules name ComfyUI gives it: the path with "." as "_x_" (2025 on), the folder name before
    init = (folder / "__init__.py").resolve()
    names = [n for n in set(sys.modules) - before if "." not in n
             and getattr(sys.modules[n], "__file__", None) and Path(sys.modules[n].__file__).resolve() == init]
    return ok, records, caught, names[0] if names else module_path.replace(".", "_x_")


# ---------------------------------------------------------------------------------------------------------------
# 1. Loading


def test_comfyui_loader_registers_the_pack(tmp_path):
    """nodes.load_custom_node on custom_nodes/comfyui-nasa: the pack's nodes (the three NASA nodes among them)
    registered, nothing warned."""
    if full_tree() is None:
        pytest.skip("ComfyUI's loader lives in nodes.py, which only a full tree has (set COMFYUI_PATH); "
                    "the PyPI copy is covered by test_folder_imports_as_a_package")
    nodes, _, _ = comfy_modules()
    folder = pack_folder(tmp_path)
    declared = declared_nodes()
    with restored_registry(nodes):
        before = set(nodes.NODE_CLASS_MAPPINGS)
        assert not declared & before, "the pack's nodes were registered before the test loaded it"
        ok, records, caught, module_name = load_with_comfyui(nodes, folder)
        try:
            assert ok, "nodes.load_custom_node returned False: " + "; ".join(r.getMessage() for r in records)
            assert_clean_load(records, caught, folder)
            assert set(nodes.NODE_CLASS_MAPPINGS) - before == declared
            assert_node_classes(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS, declared)
            assert_loaded_as_this_release_expects(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
            for name in declared:
                cls = nodes.NODE_CLASS_MAPPINGS[name]
                assert cls.__module__.startswith(module_name + "."), cls.__module__  # loaded from the folder
                assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{FOLDER_NAME}"
            if hasattr(nodes, "LOADED_MODULE_DIRS"):  # v0.3.30 and later
                assert nodes.LOADED_MODULE_DIRS[FOLDER_NAME] == os.path.abspath(folder)
        finally:
            forget_modules(module_name)


def test_folder_imports_as_a_package(tmp_path):
    """importlib on the folder's __init__.py as a package named after the folder (how ComfyUI imports a custom
    node folder; the only loader the PyPI copy, which has no nodes.py, can be checked with)."""
    folder = pack_folder(tmp_path)
    spec = importlib.util.spec_from_file_location(FOLDER_NAME, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    assert FOLDER_NAME not in sys.modules
    sys.modules[FOLDER_NAME] = module
    try:
        with capture_problems() as (records, caught):
            spec.loader.exec_module(module)
        assert_clean_load(records, caught, folder)
        declared = declared_nodes()
        mapping, display = exported_nodes(module)
        assert set(mapping) == declared and set(display) == declared
        assert_node_classes(mapping, display, declared)
        assert_loaded_as_this_release_expects(mapping, display)
        for cls in mapping.values():
            assert cls.__module__.startswith(FOLDER_NAME + "."), cls.__module__
    finally:
        forget_modules(FOLDER_NAME)


# ---------------------------------------------------------------------------------------------------------------
# 2. Execution by ComfyUI's executor


class MessageSink:
    """The part of ComfyUI's PromptServer that PromptExecutor talks to: it records the progress messages the
    executor sends to the browser. Not a ComfyUI stand-in: the executor, the nodes and the models are ComfyUI's."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def write_sd15_unet(path: Path, seed: int = 0):
    """A real SD1.5-family UNet (ComfyUI's classes via comfy.supported_models.SD15), tiny in depth, as a
    diffusion-model safetensors file."""
    import comfy.supported_models
    import comfy.utils
    from nasa_testkit import init_weights, tiny_unet_config

    config = tiny_unet_config(context_dim=768, model_channels=320, num_res_blocks=[1], channel_mult=[1],
                              transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1,
                              use_linear_in_transformer=False, num_heads=8, num_head_channels=-1)
    model = comfy.supported_models.SD15(config).get_model({})
    init_weights(model.diffusion_model, seed)
    comfy.utils.save_torch_file(model.diffusion_model.state_dict(), str(path))


def write_clip_l(path: Path, seed: int = 1):
    """A random-initialised CLIP-L text encoder (ComfyUI's SD1 CLIP classes and config, 12 layers x 768), saved
    in the standalone text-encoder layout (text_model.*) that CLIPLoader reads; fp16 to halve the file."""
    import comfy.sd1_clip
    import comfy.utils
    from nasa_testkit import init_weights

    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    init_weights(clip.transformer, seed)
    state = {k: v.half() for k, v in clip.transformer.state_dict().items()}
    comfy.utils.save_torch_file(state, str(path))


def graph(nasa: str = "none", alpha: float = 0.5, negative: str = "blurry, low quality, watermark",
          model_alpha: float = 0.1, prefix: str = "nasa_test/latent") -> dict:
    """An API-format prompt. nasa: "none" (no NASA node), "model" (ApplyNASAModelPatch with the negative and
    ``alpha``), "prompt" (NASANegativeConditioning with the negative and ``alpha`` on the positive, the
    model through ApplyNASAModelPatch with no negative at ``model_alpha``), or "prompt_alone" (the same
    NASANegativeConditioning, the model not patched)."""
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_FILE, "type": "stable_diffusion"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE_TEXT, "clip": ["2", 0]}},
        "4": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}},  # unused at cfg 1.0
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 42, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": prefix}},
    }
    if nasa == "none":
        return p
    p["5"] = {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["2", 0]}}
    if nasa == "model":
        p["10"] = {"class_type": "ApplyNASAModelPatch",
                   "inputs": {"model": ["1", 0], "alpha": alpha, "nasa_negative": ["5", 0]}}
    elif nasa == "prompt":
        p["10"] = {"class_type": "ApplyNASAModelPatch", "inputs": {"model": ["1", 0], "alpha": model_alpha}}
        p["11"] = {"class_type": "NASANegativeConditioning",
                   "inputs": {"positive": ["3", 0], "nasa_negative": ["5", 0], "alpha": alpha}}
        p["7"]["inputs"]["positive"] = ["11", 0]
    elif nasa == "prompt_alone":  # NASANegativeConditioning only: the MODEL goes to the sampler unpatched
        p["11"] = {"class_type": "NASANegativeConditioning",
                   "inputs": {"positive": ["3", 0], "nasa_negative": ["5", 0], "alpha": alpha}}
        p["7"]["inputs"]["positive"] = ["11", 0]
        return p
    else:
        raise ValueError(nasa)
    p["7"]["inputs"]["model"] = ["10", 0]
    return p


class ComfyRun:
    """Validates and executes prompts as ComfyUI's /prompt handler and prompt worker do; reads SaveLatent's file.
    ``shared`` is one executor kept for the whole module, like the prompt worker's: ``result`` runs each distinct
    prompt once on it (CLIP-L encodes cost about a second each on a CPU)."""

    def __init__(self, execution, output_dir: Path):
        self.execution = execution
        self.output_dir = output_dir
        self.shared = self.executor()
        self._results: dict[str, torch.Tensor] = {}

    def executor(self):
        return new_executor(self.execution, MessageSink())

    def result(self, prompt: dict) -> torch.Tensor:
        key = json.dumps(prompt, sort_keys=True)
        if key not in self._results:
            self._results[key] = self(prompt, self.shared)
        return self._results[key]

    def __call__(self, prompt: dict, executor) -> torch.Tensor:
        import safetensors.torch

        prompt_id = str(uuid.uuid4())
        valid = validate(self.execution, prompt_id, prompt)
        assert valid[0], f"ComfyUI rejected the prompt: {valid[1]} {valid[3]}"
        executor.execute(prompt, prompt_id, {"client_id": "nasa-test"}, valid[2])
        errors = [{k: d.get(k) for k in ("node_type", "exception_type", "exception_message")}
                  for event, d in executor.status_messages if event == "execution_error"]
        assert executor.success and not errors, f"ComfyUI's executor failed: {errors}"
        assert any(event == "execution_success" for event, _ in executor.status_messages)
        saved = executor.history_result["outputs"]["8"]["latents"]
        assert len(saved) == 1
        path = self.output_dir / saved[0]["subfolder"] / saved[0]["filename"]
        latent = safetensors.torch.load_file(str(path))["latent_tensor"]
        assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all()
        return latent


@pytest.fixture(scope="module")
def comfy_run(tmp_path_factory):
    if full_tree() is None:
        pytest.skip("needs a full ComfyUI tree (COMFYUI_PATH with nodes.py and execution.py) for its executor and "
                    "stock nodes; the PyPI copy has neither")
    nodes, execution, folder_paths = comfy_modules()
    import comfy.model_management

    base = tmp_path_factory.mktemp("comfy_home")
    unet_dir, clip_dir, output_dir = base / "diffusion_models", base / "text_encoders", base / "output"
    for d in (unet_dir, clip_dir, output_dir):
        d.mkdir()
    write_sd15_unet(unet_dir / UNET_FILE)
    write_clip_l(clip_dir / CLIP_FILE)

    old_output = folder_paths.get_output_directory()
    with restored_registry(nodes):
        ok, records, _, module_name = load_with_comfyui(nodes, pack_folder(base))
        assert ok, "; ".join(r.getMessage() for r in records)
        folder_paths.add_model_folder_path("diffusion_models", str(unet_dir), is_default=True)
        folder_paths.add_model_folder_path("text_encoders", str(clip_dir), is_default=True)
        folder_paths.set_output_directory(str(output_dir))
        try:
            run = ComfyRun(execution, output_dir)
            run.pack = lambda sub: sys.modules[f"{module_name}.{sub}"]  # the pack's modules as ComfyUI loaded them
            yield run
        finally:
            folder_paths.set_output_directory(old_output)
            for kind, d in (("diffusion_models", unet_dir), ("text_encoders", clip_dir)):
                paths = folder_paths.folder_names_and_paths[kind][0]
                if str(d) in paths:
                    paths.remove(str(d))
            forget_modules(module_name)
            comfy.model_management.unload_all_models()
            comfy.model_management.soft_empty_cache()


@pytest.fixture
def no_nasa_warnings():
    """Fails the test if NASA logged a warning while ComfyUI ran the graphs (e.g. a negative no layer applied)."""
    with capture_problems() as (records, _):
        yield
    ours = [r.getMessage() for r in records if r.name == "comfyui-nasa"]
    assert not ours, ours


def test_alpha_zero_matches_the_graph_without_nasa(comfy_run, no_nasa_warnings):
    plain = comfy_run.result(graph("none"))
    off = comfy_run.result(graph("model", alpha=0.0))
    assert torch.equal(off, plain), (off - plain).abs().max()


def test_negative_changes_the_latent(comfy_run, no_nasa_warnings):
    plain = comfy_run.result(graph("none"))
    steered = comfy_run.result(graph("model", alpha=0.5))
    assert not torch.allclose(steered, plain, atol=1e-4), (steered - plain).abs().max()


def test_prompt_negative_matches_the_model_wide_negative(comfy_run, no_nasa_warnings):
    """NASANegativeConditioning's per-prompt negative (and its alpha, 0.5, over the patch's own 0.1) gives what
    ApplyNASAModelPatch's model-wide negative at 0.5 gives."""
    model_wide = comfy_run.result(graph("model", alpha=0.5))
    per_prompt = comfy_run.result(graph("prompt", alpha=0.5, model_alpha=0.1))
    assert torch.allclose(per_prompt, model_wide, atol=1e-5, rtol=1e-5), (per_prompt - model_wide).abs().max()
    assert not torch.allclose(per_prompt, comfy_run.result(graph("none")), atol=1e-4)


@pytest.mark.parametrize("nasa", ["model", "prompt"])
def test_second_prompt_on_the_same_executor_matches_a_fresh_one(comfy_run, no_nasa_warnings, nasa):
    """Two prompts queued one after the other on one executor (the module's, which may have run others before),
    differing only in the negative's text: the executor's cache serves the loaders and the positive and reruns the
    negative's encoder, the sampler and (model-wide) the NASA patch, while a per-prompt negative reuses the cached
    patched MODEL with its NASA state. The second gives what a fresh executor running it alone gives."""
    first = graph(nasa, negative="blurry, low quality, watermark")
    second = graph(nasa, negative="text, signature, jpeg artifacts")
    a = comfy_run(first, comfy_run.shared)
    b = comfy_run(second, comfy_run.shared)
    cached = {n for event, d in comfy_run.shared.status_messages if event == "execution_cached" for n in d["nodes"]}
    assert {"1", "2", "3"} <= cached and not {"5", "7", "8"} & cached, cached  # the second prompt really ran
    assert ("10" in cached) == (nasa == "prompt"), cached  # per-prompt: the same patched MODEL serves both
    assert not torch.allclose(a, b, atol=1e-4), "the two negatives should give different latents"
    alone = comfy_run(second, comfy_run.executor())
    assert torch.equal(b, alone), (b - alone).abs().max()


@pytest.mark.parametrize("name, checkpoint", [("nasa_world_1step", None), ("nasa_world_student_1step", None),
                                              ("nasa_world_1step", "nasa_world_flux.safetensors")],
                         ids=["teacher", "nasa_t_student", "flux_joint_attention"])
def test_bundled_world_workflow_runs_in_comfyuis_executor(comfy_run, no_nasa_warnings, name, checkpoint):
    """The shipped API-format graph with a bundled world model (the UNet teacher, the one-step NASA-T student, or
    the world model built from ComfyUI's FLUX classes, which takes NASA through the joint-attention adapter):
    Load NASA World Model, CLIP Text Encode, Apply NASA Model Patch, KSampler, VAE Decode, Save Image, validated
    and executed by ComfyUI's own executor; the saved PNGs are read back by the world's pixel reader."""
    import numpy as np
    from PIL import Image
    from comfyui_nasa.nasa_core import world
    prompt = json.loads((Path(__file__).resolve().parents[1] / "workflows" / f"{name}.api.json").read_text())
    save = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    prompt[save]["inputs"]["filename_prefix"] = f"nasa_test/{name}"
    if checkpoint:
        loader = next(k for k, v in prompt.items() if v["class_type"] == "LoadNASAWorldModel")
        prompt[loader]["inputs"]["checkpoint"] = checkpoint
    executor = comfy_run.executor()
    prompt_id = str(uuid.uuid4())
    valid = validate(comfy_run.execution, prompt_id, prompt)
    assert valid[0], f"ComfyUI rejected {name}: {valid[1]} {valid[3]}"
    executor.execute(prompt, prompt_id, {"client_id": "nasa-test"}, valid[2])
    assert executor.success, [d for e, d in executor.status_messages if e == "execution_error"]
    images = executor.history_result["outputs"][save]["images"]
    assert len(images) == 4
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(comfy_run.output_dir / i["subfolder"] / i["filename"])))
                          for i in images]).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert pixels.shape == (4, 3, 64, 64)
    reads = world.read_attributes(pixels)
    assert all(r["background"] in world.VOCAB["background"] for r in reads)  # a world scene, not noise


def test_a_bad_input_fails_that_prompt_and_the_same_executor_serves_the_next(comfy_run):
    """A refused input (here a nasa_negative made by Conditioning (Combine): two entries) fails that prompt with
    NASA's message through ComfyUI's own error path; the executor then runs the next prompt exactly as a fresh one."""
    bad = graph("model", alpha=0.5)
    bad["12"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["5", 0], "conditioning_2": ["3", 0]}}
    bad["10"]["inputs"]["nasa_negative"] = ["12", 0]
    executor = comfy_run.executor()
    prompt_id = str(uuid.uuid4())
    valid = validate(comfy_run.execution, prompt_id, bad)
    assert valid[0], valid[1]
    executor.execute(bad, prompt_id, {"client_id": "nasa-test"}, valid[2])
    errors = [d for event, d in executor.status_messages if event == "execution_error"]
    assert not executor.success and len(errors) == 1, executor.status_messages
    assert errors[0]["node_type"] == "ApplyNASAModelPatch"
    assert "the nasa_negative CONDITIONING has 2 entries" in errors[0]["exception_message"]
    good = graph("model", alpha=0.5)
    assert torch.equal(comfy_run(good, executor), comfy_run(good, comfy_run.executor()))


def test_an_interrupt_mid_sampling_leaves_the_next_prompt_exact(comfy_run):
    """Cancel pressed after the first of three steps (ComfyUI's progress hook raises the interrupt, as main.py's
    does): the executor reports the interruption, and the next prompt on it equals a fresh executor's."""
    import comfy.model_management
    import comfy.utils
    prompt = graph("model", alpha=0.5)
    prompt["7"]["inputs"]["steps"] = 3

    def cancel_after_first_step(value, total, *args, **kwargs):
        if value >= 1:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    executor = comfy_run.executor()
    previous_hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(cancel_after_first_step)
    try:
        prompt_id = str(uuid.uuid4())
        valid = validate(comfy_run.execution, prompt_id, prompt)
        executor.execute(prompt, prompt_id, {"client_id": "nasa-test"}, valid[2])
    finally:
        comfy.utils.set_progress_bar_global_hook(previous_hook)
        comfy.model_management.interrupt_current_processing(False)
    assert any(event == "execution_interrupted" for event, _ in executor.status_messages), executor.status_messages
    assert torch.equal(comfy_run(prompt, executor), comfy_run(prompt, comfy_run.executor()))


def test_negative_conditioning_alone_in_a_graph(comfy_run):
    """CLIP Text Encode -> NASA Negative Conditioning -> stock KSampler, no model patch (cfg 1, one step): where
    this ComfyUI has conditioning hooks the negative is removed exactly as Apply NASA Model Patch removes it;
    where it has none the console says this ComfyUI needs Apply NASA Model Patch, and the latent is the plain one."""
    from comfyui_nasa.nasa_core.adapters import prompt_hook
    # the warning comes once per 30 s; the copy of the pack that warns is the one ComfyUI's loader imported
    comfy_run.pack("nasa_core.adapters.comfy_runtime")._unclaimed_warned[0] = -1e9
    with capture_problems() as (records, _):
        alone = comfy_run.result(graph("prompt_alone", alpha=0.5))
        import gc
        gc.collect()
    warned = [r.getMessage() for r in records if r.name == "comfyui-nasa"]
    if prompt_hook.hooks_api() is not None:
        assert not warned, warned
        model_wide = comfy_run.result(graph("model", alpha=0.5))
        assert torch.allclose(alone, model_wide, atol=1e-5, rtol=1e-5), (alone - model_wide).abs().max()
        assert not torch.allclose(alone, comfy_run.result(graph("none")), atol=1e-4)
    else:
        assert len(warned) == 1 and "no conditioning hooks" in warned[0], warned
        assert torch.equal(alone, comfy_run.result(graph("none")))
