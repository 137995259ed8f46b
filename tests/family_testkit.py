"""Small real models of the 2025-2026 families, built from ComfyUI's own configs and classes (modern tree) with
initialised random weights, for the joint-attention route (joint_rows.py)."""
from __future__ import annotations

import dataclasses

import torch

import comfy.supported_models

from dit_testkit import patcher
from nasa_testkit import init_weights


def release_fields(cfg, params_class):
    """The config without the keys this release's params dataclass does not have yet (fields later releases added:
    FLUX.2's text position dims, HunyuanVideo 1.5's meanflow_sum, ...)."""
    fields = {f.name for f in dataclasses.fields(params_class)} | {"image_model"}
    return {k: v for k, v in cfg.items() if k in fields}


def _build(config_class, unet_config, seed):
    model = config_class(unet_config).get_model({})
    init_weights(model.diffusion_model, seed)
    return patcher(model)


def chroma_patcher(hidden=64, heads=4, ctx=32, depth=2, single=2, seed=0, axes=(4, 6, 6)):
    cfg = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": ctx,
           "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": depth,
           "depth_single_blocks": single, "axes_dim": list(axes), "theta": 10000, "patch_size": 2, "qkv_bias": True,
           "in_dim": 64, "out_dim": hidden, "hidden_dim": 64, "n_layers": 2, "txt_ids_dims": [], "vec_in_dim": None}
    import comfy.ldm.chroma.model as chroma_model
    return _build(comfy.supported_models.Chroma, release_fields(cfg, chroma_model.ChromaParams), seed)


def flux2_patcher(hidden=64, heads=4, ctx=48, depth=2, single=2, seed=0, in_channels=32, axes=(4, 4, 4, 4)):
    """FLUX.2's config as ComfyUI detects it (global modulation, SiLU-gated MLP, no biases, text positions on axis 3,
    patch size 1), at a small width."""
    cfg = {"image_model": "flux2", "in_channels": in_channels, "out_channels": in_channels, "vec_in_dim": None,
           "context_in_dim": ctx, "hidden_size": hidden, "mlp_ratio": 3.0, "num_heads": heads, "depth": depth,
           "depth_single_blocks": single, "axes_dim": list(axes), "theta": 2000, "patch_size": 1,
           "qkv_bias": False, "ops_bias": False, "guidance_embed": False, "global_modulation": True,
           "mlp_silu_act": True, "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3]}
    import comfy.ldm.flux.model as flux_model
    return _build(comfy.supported_models.Flux2, release_fields(cfg, flux_model.FluxParams), seed)


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
    import comfy.ldm.hunyuan_video.model as hunyuan_model
    return _build(comfy.supported_models.HunyuanVideo15, release_fields(cfg, hunyuan_model.HunyuanVideoParams), seed)


def z_image_patcher(dim=256, heads=4, ctx=32, layers=2, refiner=1, seed=0, axes=(16, 24, 24), z_image=True,
                    kv_heads=None):
    """Z-Image's NextDiT layout as ComfyUI detects it (z_image_modulation, caption and image padded to multiples of 32
    with learned pad tokens), or Lumina 2's (``z_image=False``), small."""
    cfg = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": dim, "n_layers": layers,
           "n_refiner_layers": refiner, "n_heads": heads, "n_kv_heads": kv_heads or heads, "qk_norm": True, "cap_feat_dim": ctx,
           "axes_dims": list(axes), "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
           "ffn_dim_multiplier": 8.0 / 3.0}
    import inspect
    from comfy.ldm.lumina.model import NextDiT
    accepted = set(inspect.signature(NextDiT.__init__).parameters) | {"image_model"}
    cfg = {k: v for k, v in cfg.items() if k in accepted}  # older releases: no rope_theta, ffn multiplier, ...
    config_class = comfy.supported_models.Lumina2
    if z_image:
        cfg.update(z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32)
        config_class = getattr(comfy.supported_models, "ZImage", comfy.supported_models.Lumina2)
    model = config_class(cfg).get_model({})
    init_weights(model.diffusion_model, seed)
    return patcher(model)


def hidream_patcher(heads=4, head_dim=16, t5=32, llama=24, double=2, single=2, llama_states=3, seed=0,
                    axes=(8, 4, 4), experts=2):
    """HiDream-I1's layout (double and single blocks with MoE image FFNs; per-block projected Llama layers; T5), small.
    ``llama_layers`` maps the blocks onto ``llama_states`` Llama layers, the last ones repeated, as the real
    config repeats layer 31."""
    blocks = double + single
    layers = [min(i, llama_states - 1) for i in range(blocks)]
    cfg = {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": double,
           "num_single_layers": single, "attention_head_dim": head_dim, "num_attention_heads": heads,
           "caption_channels": [t5, llama], "text_emb_dim": 16, "num_routed_experts": experts,
           "num_activated_experts": 1, "axes_dims_rope": list(axes), "max_resolution": [32, 32],
           "llama_layers": layers}
    model = comfy.supported_models.HiDream(cfg).get_model({})
    init_weights(model.diffusion_model, seed)
    return patcher(model)


def hidream_conditioning(seed, tokens=6, t5=32, llama=24, llama_states=3, llama_tokens=4):
    """What the HiDream text encoders hand over: T5 states as the tensor, pooled CLIP-L+G, and every Llama layer."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, t5, generator=g),
             {"pooled_output": torch.randn(1, 16, generator=g),
              "conditioning_llama3": torch.randn(1, llama_states, llama_tokens, llama, generator=g)}]]


def hunyuan_image21_patcher(hidden=64, heads=4, ctx=40, depth=2, single=2, seed=0, axes=(8, 8)):
    """HunyuanImage 2.1's layout (HunyuanVideo's class with a 2-D patch, a 64-channel latent, byT5 glyph tokens),
    small."""
    cfg = {"image_model": "hunyuan_video", "in_channels": 64, "out_channels": 64, "vec_in_dim": None,
           "context_in_dim": ctx, "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": depth,
           "depth_single_blocks": single, "axes_dim": list(axes), "theta": 256, "patch_size": [1, 1],
           "qkv_bias": True, "guidance_embed": False, "byt5": True, "meanflow": False,
           "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
    import comfy.ldm.hunyuan_video.model as hunyuan_model
    config_class = getattr(comfy.supported_models, "HunyuanImage21")
    return _build(config_class, release_fields(cfg, hunyuan_model.HunyuanVideoParams), seed)
