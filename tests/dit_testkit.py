"""Small real FLUX.1, SD3, PixArt and Wan models (ComfyUI's own classes and model configs) and an independent
plain-torch reference of NASA cross-attention for PixArt and Wan. PixArt and Wan need a release that has them."""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.supported_models

from nasa_testkit import init_weights


def patcher(model):
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


CPU = torch.device("cpu")


def flux_patcher(hidden=64, heads=4, ctx=32, vec=16, depth=2, single=2, seed=0, axes=(4, 6, 6)):
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=vec, context_in_dim=ctx,
               hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
               axes_dim=list(axes), theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False)
    import comfy.ldm.flux.model as flux_model
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(flux_model.FluxParams)}:
        cfg["txt_ids_dims"] = []  # the modern tree's FLUX.1 config (FLUX.2 puts positions on text tokens)
    model = comfy.supported_models.FluxSchnell(cfg).get_model({})
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def sd3_patcher(depth=2, ctx=48, adm=16, seed=0, num_blocks=None, xsa=()):
    cfg = {"in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "out_channels": 16,
           "depth": depth, "input_size": None, "adm_in_channels": adm, "num_patches": 256,
           "pos_embed_max_size": 16, "qk_norm": "rms", "x_block_self_attn_layers": list(xsa),
           "context_embedder_config": {"target": "torch.nn.Linear",
                                       "params": {"in_features": ctx, "out_features": 64 * depth}}}
    if num_blocks is not None:
        cfg["num_blocks"] = num_blocks
    model = comfy.supported_models.SD3(cfg).get_model({})
    init_weights(model.diffusion_model, seed)
    with torch.no_grad():  # a buffer made with torch.empty: garbage (sometimes NaN) unless filled
        model.diffusion_model.pos_embed.normal_(0, 0.02, generator=torch.Generator().manual_seed(seed))
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def pixart_patcher(hidden_size=96, num_heads=4, depth=3, caption_channels=32, seed=0, model_max_length=8):
    """PixArt-alpha (micro-conditioning on: hidden_size must divide by 3) through ComfyUI's PixArtAlpha config."""
    config = comfy.supported_models.PixArtAlpha({
        "image_model": "pixart_alpha", "hidden_size": hidden_size, "num_heads": num_heads, "depth": depth,
        "caption_channels": caption_channels, "patch_size": 2, "in_channels": 4,
        "model_max_length": model_max_length, "micro_condition": True})
    model = config.get_model({})
    init_weights(model.diffusion_model, seed)
    return patcher(model)


def wan_patcher(dim=64, num_heads=4, num_layers=3, text_dim=32, seed=0, i2v=False, ffn_dim=128, freq_dim=32,
                ti2v=False):
    """Wan 2.1 T2V (or I2V: 36 input channels and a CLIP-vision projection) through ComfyUI's WAN21 configs, which
    Wan 2.2's A14B experts also use; ``ti2v``: Wan 2.2 TI2V 5B's config (WAN22_T2V: 48-channel latent, a timestep
    per frame from the denoise mask)."""
    channels = 48 if ti2v else 16
    unet_config = {"image_model": "wan2.1", "model_type": "i2v" if i2v else "t2v", "dim": dim, "num_heads": num_heads,
                   "num_layers": num_layers, "ffn_dim": ffn_dim, "freq_dim": freq_dim, "text_dim": text_dim,
                   "in_dim": 36 if i2v else channels, "out_dim": channels, "patch_size": (1, 2, 2),
                   "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
    config_class = comfy.supported_models.WAN21_I2V if i2v else comfy.supported_models.WAN21_T2V
    if ti2v:
        config_class = comfy.supported_models.WAN22_T2V
    config = config_class(unet_config)
    model = config.get_model({})
    init_weights(model.diffusion_model, seed)
    with torch.no_grad():  # Wan's modulation tables start empty; small values keep the tiny model well scaled
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.diffusion_model.named_parameters():
            if name.endswith("modulation"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return patcher(model)


def clip_vision_output(seed=0, tokens=257, width=1280):
    """What CLIPVisionEncode hands Wan I2V (only penultimate_hidden_states is read)."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(penultimate_hidden_states=torch.randn(1, tokens, width, generator=g))


def sample_latent(model, positive, latent, negative=None, steps=1, cfg=1.0, seed=0, sampler="euler",
                  scheduler="simple"):
    noise = comfy.sample.prepare_noise(latent, seed)
    if negative is None:
        negative = [[torch.zeros_like(positive[0][0][:1]), {}]]
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               disable_pbar=True, seed=seed)


def video_latent(batch=1, frames=3, size=8, channels=16):
    return torch.zeros(batch, channels, frames, size, size)


class Capture:
    """Records the inputs and the output of a module's calls (forward hook)."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        self.calls.append((args, kwargs, output.detach().clone()))

    def close(self):
        self.handle.remove()


# ------------------------------------------------------------------------------------------------------------
# Plain-torch reference (float64), written from the equations and the layers' weights only


def _w(linear):
    return linear.weight.double(), None if linear.bias is None else linear.bias.double()


def linear(x, layer):
    return F.linear(x.double(), *_w(layer))


def rms_norm(x, norm):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()


def softmax_attention(q, k, v, heads):
    """softmax(Q K^T / sqrt(d)) V per head; [B, N, H*D] in and out."""
    b, n, inner = q.shape
    d = inner // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2)
    kh = k.reshape(k.shape[0], k.shape[1], heads, d).transpose(1, 2)
    vh = v.reshape(v.shape[0], v.shape[1], heads, d).transpose(1, 2)
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (weights @ vh).transpose(1, 2).reshape(b, n, inner)


def pixart_caption_embed(embedder, text):
    """CaptionEmbedder at inference: fc1 -> GELU(tanh) -> fc2."""
    mlp = embedder.y_proj
    return linear(F.gelu(linear(text, mlp.fc1), approximate="tanh"), mlp.fc2)


def pixart_reference(attn, x, cond, neg_embedded, alpha):
    """One PixArt MultiHeadCrossAttention with NASA: proj(softmax(QK+)V+ - alpha softmax(QK-)V-)."""
    width, heads = attn.d_model, attn.num_heads
    q = linear(x, attn.q_linear)
    kv = linear(cond.reshape(x.shape[0], -1, cond.shape[-1]), attn.kv_linear)
    kv_neg = linear(neg_embedded, attn.kv_linear).expand(x.shape[0], -1, -1)
    z = softmax_attention(q, kv[..., :width], kv[..., width:], heads) \
        - alpha * softmax_attention(q, kv_neg[..., :width], kv_neg[..., width:], heads)
    return linear(z, attn.proj)


def wan_text_embed(model, text):
    """Wan's text_embedding: Linear -> GELU(tanh) -> Linear."""
    return linear(F.gelu(linear(text, model.text_embedding[0]), approximate="tanh"), model.text_embedding[2])


def wan_reference(attn, x, context, neg_embedded, alpha, context_img_len=None):
    """One Wan cross-attention with NASA on the text part only; I2V's image tokens (the first context_img_len)
    attend through k_img/v_img and are added unchanged."""
    heads = attn.num_heads
    q = rms_norm(linear(x, attn.q), attn.norm_q)
    image = 0.0
    if context_img_len is not None:
        img, context = context[:, :context_img_len], context[:, context_img_len:]
        image = softmax_attention(q, rms_norm(linear(img, attn.k_img), attn.norm_k_img), linear(img, attn.v_img), heads)
    k, v = rms_norm(linear(context, attn.k), attn.norm_k), linear(context, attn.v)
    k_neg = rms_norm(linear(neg_embedded, attn.k), attn.norm_k).expand(x.shape[0], -1, -1)
    v_neg = linear(neg_embedded, attn.v).expand(x.shape[0], -1, -1)
    z = softmax_attention(q, k, v, heads) - alpha * softmax_attention(q, k_neg, v_neg, heads) + image
    return linear(z, attn.o)


# ------------------------------------------------------------------------------------------------------------
# Checks both cross-attention DiT families run (sample, cond and neg are each test file's own helpers)


class OffsetLayer(torch.nn.Module):
    """Someone else's object patch on a slot NASA also patches: the module it replaced, called as it was called, plus a
    constant; counts its calls."""

    def __init__(self, inner, offset):
        super().__init__()
        self.inner, self.offset, self.calls = inner, offset, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs) + self.offset


def record_block_calls(model_patcher, index: int) -> list:
    """Someone else's ("dit", "double_block", index) replace patch around a whole block: runs the block, and appends
    to the returned list at each call."""
    calls = []

    def block_patch(args, extra):
        calls.append(1)
        return extra["original_block"](args)

    model_patcher.set_model_patch_replace(block_patch, "dit", "double_block", index)
    return calls


def check_alpha_zero_is_the_unpatched_model(model, adapter_class, sample, cond, neg, width):
    """The family's adapter is chosen; alpha 0 and an empty negative (zeros) give the unpatched model bit for bit."""
    from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa
    from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch
    assert isinstance(adapter_for(model), adapter_class)
    pos = cond(1)
    base = sample(model, pos, steps=2)
    assert torch.equal(sample(apply_nasa(model, neg(2), 0.0), pos, steps=2), base)
    patched, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=[[torch.zeros(1, 5, width), {}]])
    assert torch.equal(sample(patched, pos, steps=2), base)
    return base


def check_every_layer_is_patched_and_the_model_restored(model, patch_class, paths, stock_name, sample, cond, neg):
    """Every layer at ``paths`` holds NASA's ``patch_class``. Three steps apply it three times, with the negative
    through the text embedder once and each layer's K-/V- projected once (cached across the steps). The MODEL,
    loaded again, has its stock modules (class ``stock_name``) back and gives its own output, and each patch shows
    ComfyUI the same weights under the same names (LoRA keys keep matching), nothing more."""
    import comfy.utils
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    pos = cond(1)
    base = sample(model, pos, steps=2)
    patched = apply_nasa(model, neg(2), 0.5)
    assert sorted(k for k, v in patched.object_patches.items() if isinstance(v, patch_class)) == sorted(paths)
    run = patched.model_options["model_function_wrapper"]
    out = sample(patched, pos, steps=3)
    assert (out - base).abs().max() > 1e-3
    assert run.calls_applied == 3
    assert (run.cache.embedded, run.cache.computed) == (1, len(paths))
    assert torch.equal(sample(model, pos, steps=2), base)
    for path in paths:
        stock = comfy.utils.get_attr(model.model, path)
        assert type(stock).__name__ == stock_name
        assert dict(patched.object_patches[path].named_parameters()) == dict(stock.named_parameters())


def check_per_prompt_equals_model_wide(model, sample, cond, neg):
    """NASA Negative Conditioning on an enabled model gives what Apply NASA Model Patch's negative gives."""
    from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning
    pos, negative = cond(1), [[neg(2), {}]]
    model_wide, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=negative)
    enabled, = ApplyNASAModelPatch().patch(model, 0.5)
    positive, = NASANegativeConditioning().attach(pos, negative, 0.5)
    a, b = sample(model_wide, pos, steps=2), sample(enabled, positive, steps=2)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, sample(model, pos, steps=2), atol=1e-4)


def check_negative_conditioning_alone(model, sample, cond, neg):
    """NASA Negative Conditioning on the unpatched MODEL of an object-patch family: its hook puts NASA's object patches
    into the live model for the prompt's calls only, so it gives what Apply NASA Model Patch gives and leaves the live
    modules as they were; with the patch too, the prompt's negative is applied once; under CFG too. Before conditioning hooks
    (v0.3.10) it is ignored (the console says so: tests/test_release_compat.py)."""
    from comfyui_nasa.nasa_core.adapters import prompt_hook
    from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning
    pos = cond(1)
    carried, = NASANegativeConditioning().attach(pos, [[neg(2), {}]], 0.7)
    if prompt_hook.hooks_api() is None:
        assert torch.equal(sample(model, carried, steps=2), sample(model, pos, steps=2))
        return
    comfy.model_management.load_models_gpu([model])  # the live modules as sampling this MODEL loads them
    modules = {n: id(m) for n, m in model.model.named_modules()}
    alone = sample(model, carried, steps=2)
    assert {n: id(m) for n, m in model.model.named_modules()} == modules
    patched, = ApplyNASAModelPatch().patch(model, 0.7, nasa_negative=[[neg(2), {}]])
    torch.testing.assert_close(alone, sample(patched, pos, steps=2), atol=1e-5, rtol=1e-5)
    assert (alone - sample(model, pos, steps=2)).abs().max() > 1e-3
    enabled, = ApplyNASAModelPatch().patch(model, 0.7)
    torch.testing.assert_close(sample(enabled, carried, steps=2), alone, atol=1e-5, rtol=1e-5)
    # Under CFG a hooked prompt runs as its own call beside the plain uncond (ComfyUI batches only equal hooks), so
    # alone is exactly what the patch does to the same hooked prompt; the model-wide patch batches cond and uncond,
    # equal up to float order
    uncond = cond(9)
    alone_cfg = sample(model, carried, steps=2, negative=uncond, cfg=3.0)
    assert torch.equal(alone_cfg, sample(enabled, carried, steps=2, negative=uncond, cfg=3.0))
    plain_cfg = sample(model, pos, steps=2, negative=uncond, cfg=3.0)
    torch.testing.assert_close(alone_cfg, sample(patched, pos, steps=2, negative=uncond, cfg=3.0),
                               atol=1e-5 * plain_cfg.abs().max().item(), rtol=1e-4)
    assert (alone_cfg - plain_cfg).abs().max() > 1e-3 * plain_cfg.abs().max()


def check_cfg_leaves_uncond_alone(model, sample, cond, neg, patch=None):
    """Under CFG the model-wide negative acts on the cond branch only: the uncond prediction is bit-identical.
    ``patch(model)``: how NASA is applied (default: apply_nasa with ``neg(2)`` at alpha 0.8)."""
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    captured = {}

    def capture(tag):
        def cfg_fn(args):
            captured[tag] = (args["cond_denoised"].clone(), args["uncond_denoised"].clone())
            return args["uncond_denoised"] + (args["cond_denoised"] - args["uncond_denoised"]) * args["cond_scale"]
        return cfg_fn

    plain = model.clone()
    plain.set_model_sampler_cfg_function(capture("plain"))
    nasa = patch(plain) if patch is not None else apply_nasa(plain, neg(2), 0.8)
    nasa.set_model_sampler_cfg_function(capture("nasa"))
    for m in (plain, nasa):
        sample(m, cond(1), negative=cond(9), cfg=4.0)
    assert torch.equal(captured["plain"][1], captured["nasa"][1])
    assert (captured["plain"][0] - captured["nasa"][0]).abs().max() > 1e-3
