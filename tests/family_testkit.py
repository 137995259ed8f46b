"""Small real models of the 2025-2026 families, built from ComfyUI's own configs and classes (modern tree) with
initialised random weights, for the joint-attention route (joint_rows.py)."""
from __future__ import annotations

import torch

import comfy.supported_models

from dit_testkit import CPU, patcher
from nasa_testkit import init_weights


def _build(config_class, unet_config, seed, buffers=()):
    model = config_class(unet_config).get_model({})
    init_weights(model.diffusion_model, seed)
    return patcher(model)


def chroma_patcher(hidden=64, heads=4, ctx=32, depth=2, single=2, seed=0, axes=(4, 6, 6)):
    cfg = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": ctx,
           "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": depth,
           "depth_single_blocks": single, "axes_dim": list(axes), "theta": 10000, "patch_size": 2, "qkv_bias": True,
           "in_dim": 64, "out_dim": hidden, "hidden_dim": 64, "n_layers": 2, "txt_ids_dims": [], "vec_in_dim": None}
    return _build(comfy.supported_models.Chroma, cfg, seed)


def flux2_patcher(hidden=64, heads=4, ctx=48, depth=2, single=2, seed=0, in_channels=32, axes=(4, 4, 4, 4)):
    """FLUX.2's config as ComfyUI detects it (global modulation, SiLU-gated MLP, no biases, text positions on axis 3,
    patch size 1), at a small width."""
    cfg = {"image_model": "flux2", "in_channels": in_channels, "out_channels": in_channels, "vec_in_dim": None,
           "context_in_dim": ctx, "hidden_size": hidden, "mlp_ratio": 3.0, "num_heads": heads, "depth": depth,
           "depth_single_blocks": single, "axes_dim": list(axes), "theta": 2000, "patch_size": 1,
           "qkv_bias": False, "ops_bias": False, "guidance_embed": False, "global_modulation": True,
           "mlp_silu_act": True, "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3]}
    return _build(comfy.supported_models.Flux2, cfg, seed)


def qwen_image_patcher(heads=4, head_dim=16, ctx=40, layers=3, seed=0, axes=(4, 6, 6)):
    cfg = {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
           "num_layers": layers, "attention_head_dim": head_dim, "num_attention_heads": heads,
           "joint_attention_dim": ctx, "axes_dims_rope": tuple(axes)}
    return _build(comfy.supported_models.QwenImage, cfg, seed)


def hunyuan_video15_patcher(hidden=64, heads=4, ctx=40, depth=2, single=2, seed=0, in_channels=65, axes=(4, 6, 6)):
    """HunyuanVideo 1.5's layout (cond-type embedding, byT5 glyph tokens, vision tokens for I2V), small; 65 input
    channels = 32 latent + 32 image condition + 1 mask, as HunyuanVideo15.concat_cond builds them."""
    cfg = {"image_model": "hunyuan_video", "in_channels": in_channels, "out_channels": 32, "vec_in_dim": None,
           "context_in_dim": ctx, "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": depth,
           "depth_single_blocks": single, "axes_dim": list(axes), "theta": 256, "patch_size": [1, 1, 1],
           "qkv_bias": True, "guidance_embed": False, "byt5": True, "meanflow": False,
           "use_cond_type_embedding": True, "vision_in_dim": None, "meanflow_sum": False}
    return _build(comfy.supported_models.HunyuanVideo15, cfg, seed)
