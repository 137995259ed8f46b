"""Both NASA nodes in a real ComfyUI graph on a 2025-2026 family: a small HunyuanVideo diffusion-model file
(ComfyUI's own classes, 128 wide: one head of 128, so ComfyUI's model detection reads the real head layout; a CLIP-L
pooled vector and a guidance input as the real checkpoint has them, which is how detection tells it from
HunyuanImage 2.1) loaded by the stock UNETLoader, EmptyHunyuanLatentVideo (loaded from comfy_extras as ComfyUI
loads it), the stock KSampler (cfg 1) and SaveLatent, run by ComfyUI's executor.
The text comes from a test-only node (the real text encoder is an 8B LLM; what is tested is the graph around the
model), registered for this module and removed after it."""
from __future__ import annotations

import uuid

import pytest
import torch

import comfy.ldm.modules.attention as comfy_attention

from test_executor import (MessageSink, capture_problems, comfy_modules, forget_modules, full_tree, load_with_comfyui,
                           new_executor, pack_folder, restored_registry, settled, validate)

pytestmark = pytest.mark.compat

UNET_FILE = "nasa_test_hunyuan_video_tiny.safetensors"
WIDTH = 32


class NASATestText:
    """A CONDITIONING from a seed, as a text encoder would hand it over (test only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31}),
                             "tokens": ("INT", {"default": 6, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, WIDTH, generator=g), {"pooled_output": torch.zeros(1, 768)}]],)


def write_hunyuan_video(path, seed=0):
    import comfy.supported_models
    import comfy.utils
    import comfy.ldm.hunyuan_video.model as hv
    from family_testkit import release_fields
    from nasa_testkit import init_weights
    cfg = {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
           "context_in_dim": WIDTH, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 2,
           "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 2, 2],
           "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
           "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
    model = comfy.supported_models.HunyuanVideo(release_fields(cfg, hv.HunyuanVideoParams)).get_model({})
    init_weights(model.diffusion_model, seed)
    comfy.utils.save_torch_file(model.diffusion_model.state_dict(), str(path))


def graph(nasa="none", alpha=0.5, model_alpha=0.1):
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_FILE, "weight_dtype": "default"}},
        "3": {"class_type": "NASATestText", "inputs": {"seed": 1, "tokens": 6}},
        "4": {"class_type": "NASATestText", "inputs": {"seed": 9, "tokens": 1}},  # the sampler's negative, unused
        "5": {"class_type": "NASATestText", "inputs": {"seed": 2, "tokens": 5}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                 "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 42, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "nasa_test/hv"}},
    }
    if nasa in ("model", "prompt"):
        inputs = {"model": ["1", 0], "alpha": alpha if nasa == "model" else model_alpha}
        if nasa == "model":
            inputs["nasa_negative"] = ["5", 0]
        p["10"] = {"class_type": "ApplyNASAModelPatch", "inputs": inputs}
        p["7"]["inputs"]["model"] = ["10", 0]
    if nasa in ("prompt", "prompt_alone"):
        p["11"] = {"class_type": "NASANegativeConditioning",
                   "inputs": {"positive": ["3", 0], "nasa_negative": ["5", 0], "alpha": alpha}}
        p["7"]["inputs"]["positive"] = ["11", 0]
    return p


@pytest.fixture(scope="module")
def run_graph(tmp_path_factory):
    if full_tree() is None:
        pytest.skip("needs a full ComfyUI tree (COMFYUI_PATH with nodes.py and execution.py)")
    if not hasattr(comfy_attention, "wrap_attn"):
        pytest.skip("no attention override (wrap_attn, v0.3.60+): NASA refuses the 2025-2026 joint families here")
    nodes, execution, folder_paths = comfy_modules()
    import comfy.model_management
    import safetensors.torch
    base = tmp_path_factory.mktemp("comfy_home_hv")
    unet_dir, output_dir = base / "diffusion_models", base / "output"
    unet_dir.mkdir()
    output_dir.mkdir()
    write_hunyuan_video(unet_dir / UNET_FILE)
    old_output = folder_paths.get_output_directory()
    with restored_registry(nodes):
        ok, records, _, module_name = load_with_comfyui(nodes, pack_folder(base))
        assert ok, "; ".join(r.getMessage() for r in records)
        nodes.NODE_CLASS_MAPPINGS["NASATestText"] = NASATestText
        extra = full_tree() / "comfy_extras" / "nodes_hunyuan.py"  # EmptyHunyuanLatentVideo, as ComfyUI loads it
        if "EmptyHunyuanLatentVideo" not in nodes.NODE_CLASS_MAPPINGS and extra.is_file():
            settled(nodes.load_custom_node(str(extra), module_parent="comfy_extras"))
        if "EmptyHunyuanLatentVideo" not in nodes.NODE_CLASS_MAPPINGS:
            pytest.skip("this ComfyUI has no EmptyHunyuanLatentVideo")
        folder_paths.add_model_folder_path("diffusion_models", str(unet_dir), is_default=True)
        folder_paths.set_output_directory(str(output_dir))
        executor = new_executor(execution, MessageSink())

        def run(prompt):
            prompt_id = str(uuid.uuid4())
            valid = validate(execution, prompt_id, prompt)
            assert valid[0], f"ComfyUI rejected the prompt: {valid[1]} {valid[3]}"
            executor.execute(prompt, prompt_id, {"client_id": "nasa-test"}, valid[2])
            errors = [d.get("exception_message") for event, d in executor.status_messages if event == "execution_error"]
            assert executor.success and not errors, errors
            saved = executor.history_result["outputs"]["8"]["latents"][0]
            return safetensors.torch.load_file(str(output_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"]

        try:
            yield run
        finally:
            folder_paths.set_output_directory(old_output)
            paths = folder_paths.folder_names_and_paths["diffusion_models"][0]
            if str(unet_dir) in paths:
                paths.remove(str(unet_dir))
            forget_modules(module_name)
            comfy.model_management.unload_all_models()
            comfy.model_management.soft_empty_cache()


def test_hunyuan_video_graph_both_nodes(run_graph):
    """The model patch removes the negative (the latent changes, alpha 0 is the plain graph); NASA Negative
    Conditioning with the patch, and alone (its conditioning hook), give what the patch's own negative gives;
    no NASA warning."""
    with capture_problems() as (records, _):
        plain = run_graph(graph("none"))
        zero = run_graph(graph("model", alpha=0.0))
        model_wide = run_graph(graph("model"))
        per_prompt = run_graph(graph("prompt"))
        alone = run_graph(graph("prompt_alone"))
    ours = [r.getMessage() for r in records if r.name == "comfyui-nasa" and r.levelname == "WARNING"]
    assert not ours, ours
    assert plain.shape[:2] == (1, 16) and torch.isfinite(plain).all()
    assert torch.equal(zero, plain)
    assert (model_wide - plain).abs().max() > 1e-4
    torch.testing.assert_close(per_prompt, model_wide, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, model_wide, atol=1e-5, rtol=1e-5)
