"""Small real ComfyUI models for the tests: ComfyUI's own classes at small widths, initialised weights."""
from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.supported_models

def init_weights(module: torch.nn.Module, seed: int = 0):
    """ComfyUI's ops leave weights uninitialised; give every parameter a deterministic, sane value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.randn(p.shape, generator=g) * 0.02)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return module


def tiny_unet_config(context_dim=64, model_channels=32, adm_in_channels=None, **overrides):
    cfg = dict(
        use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=model_channels,
        num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
        transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, num_head_channels=16,
        context_dim=context_dim, use_linear_in_transformer=True, use_spatial_transformer=True,
        legacy=False, adm_in_channels=adm_in_channels, dtype=torch.float32,
    )
    if adm_in_channels is not None:
        cfg["num_classes"] = "sequential"
    cfg.update(overrides)
    return cfg


def tiny_unet_patcher(context_dim=64, seed=0, config_class=comfy.supported_models.SD15, **overrides):
    """A real SD-style ComfyUI MODEL (BaseModel + UNetModel inside a ModelPatcher) on the CPU."""
    config = config_class(tiny_unet_config(context_dim=context_dim, **overrides))
    model = config.get_model({})
    init_weights(model.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def text(seed, tokens=7, width=64, batch=1):
    return torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed))


def conditioning(seed, tokens=7, width=64, batch=1):
    return [[text(seed, tokens, width, batch), {}]]


def sample(model, positive, negative=None, steps=1, cfg=1.0, seed=0, batch=1, size=16, sampler="euler",
           scheduler="normal", denoise=1.0, callback=None):
    """One run of ComfyUI's own sampler (comfy.sample.sample, as KSampler calls it)."""
    latent = torch.zeros(batch, 4, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    if negative is None:
        negative = [[torch.zeros_like(positive[0][0][:1]), {}]]
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               denoise=denoise, callback=callback, disable_pbar=True, seed=seed)
