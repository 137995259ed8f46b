"""Weights stored in fp16/bf16/fp8 go through ComfyUI's ops; NASA's negative is cast to what the layer
computes in, on the layer's device."""
import pytest
import torch

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models

import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa


def patcher_with(weight_dtype, compute_dtype):
    config = comfy.supported_models.SD15(tk.tiny_unet_config())
    config.set_inference_dtype(weight_dtype, None if compute_dtype == weight_dtype else compute_dtype)
    model = config.get_model({})
    tk.init_weights(model.diffusion_model)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(), torch.device("cpu"))


@pytest.mark.parametrize("weight_dtype,compute_dtype", [
    (torch.float16, torch.float32), (torch.bfloat16, torch.float32),
    (torch.float8_e4m3fn, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_stored_and_compute_dtypes(weight_dtype, compute_dtype):
    model = patcher_with(weight_dtype, compute_dtype)
    assert next(model.model.diffusion_model.parameters()).dtype == weight_dtype
    pos = tk.conditioning(1)
    base = tk.sample(model, pos)
    assert torch.equal(tk.sample(apply_nasa(model, tk.text(2), 0.0), pos), base)
    patched = apply_nasa(model, tk.text(2), 0.5)  # the negative arrives in fp32 on the CPU
    cache = patched.model_options["model_function_wrapper"].cache
    dtypes = []  # read during sampling: ComfyUI's cleanup after it frees the cache
    with torch.inference_mode():
        out = tk.sample(patched, pos, callback=lambda *a: dtypes.extend(t.dtype for t in cache.tensors()))
    assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-2
    assert dtypes and set(dtypes) == {compute_dtype}
