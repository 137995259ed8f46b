"""A joint-attention world model built from ComfyUI's own FLUX classes (``comfy.ldm.flux.model.Flux`` inside
``comfy.model_base.Flux``, configured like ``comfy.supported_models.FluxSchnell``) at a small width, on the
same fixed block-DCT latent (48 channels, 8x8) and the same small text encoder as the UNet world teacher.

* Patchify: Flux packs 2x2 latent positions into one token (its output unpacking is written for patch 2),
  so ``in_channels`` is the latent's 48 and the image is 4x4 = 16 tokens of 192 values.
* Text: the world encoder's tokens are the joint-attention text stream (``context_in_dim`` = its width) and
  their mean is the pooled vector ``y`` (``vec_in_dim``), which ComfyUI's CLIP object already returns as
  ``pooled_output`` (``WorldClipModel``), so the stock CLIP Text Encode node feeds both.
* Text length: the world's captions are at most 14 CLIP tokens, so the tokenizer pads to ``TEXT_TOKENS``
  (32) instead of 77. Every image token attends over all text tokens, padding included, so 77 tokens
  would make the joint sequence 93 long instead of 48, about twice the CPU time per step for nothing.
  Longer prompts are split into 32-token chunks, as ComfyUI does with 77.
* Objective: v-prediction in continuous time (``ModelType.V_PREDICTION_CONTINUOUS``, ComfyUI's
  ``ModelSamplingContinuousV``: sigma in [0.002, 80], timestep = atan(sigma) * 2 / pi in [0, 1), the range
  Flux's timestep embedding is built for) with ``sigma_data`` 0.25. Why: at patch 2 each token holds 192
  noise values and a 128-wide model cannot pass them through, so the target must not contain much noise.
  FLUX's own rectified flow (target noise - x0) contains all of it at every time: tried first, after 1000
  steps at batch 64 even one-step samples were the input noise. v-prediction with sigma_data 1 (the UNet
  teacher's choice) still asks for 0.4 x noise at sigma 2.3 (a 4-step sample's second step): one-step
  samples were right (a flat mean image) but 4- and 20-step samples stayed noisy after 500 steps. With
  sigma_data s the v target is (s noise - sigma x0 / s) / sqrt(sigma^2 + s^2): mostly -x0 / s once sigma
  is a few s, and the noise it leaves in ComfyUI's denoised estimate when the model cannot produce the
  noise part is about s^2 / sigma of it (0.027 at sigma 2.3). No guidance embedding (schnell-style): CFG,
  when wanted, is ComfyUI's.
* ``prediction="x0"`` (new runs, ``--prediction x0``): the network's output is the denoised latent itself
  (``X0ContinuousV``: ComfyUI's ModelSamplingContinuousV with x0 as the model output), trained with the v
  loss's weighting. Why: below sigma ~ s every v (or eps, or flow) target is mostly the noise, and a 128-wide
  token cannot carry the 192 noise values of its patch, so the v model leaves the noise in: at step 12,000 it
  removes almost none of it at sigma 0.05 (docs/world_ablations.md). x0 is flat shapes, which a token can carry.
  The same argument as Li and He, "Back to Basics: Let Denoising Generative Models Denoise" (JiT, 2025).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, Optional

import torch
from torch import nn

import comfy.ldm.flux.model
import comfy.model_base
import comfy.model_sampling
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base

from . import model as wm

TEXT_TOKENS = 32

# The architecture, as Flux's constructor takes it. Saved in each exported checkpoint's metadata.
FLUX_WORLD_CONFIG = dict(
    in_channels=wm.LATENT_CHANNELS, out_channels=wm.LATENT_CHANNELS, vec_in_dim=wm.TEXT_WIDTH,
    context_in_dim=wm.TEXT_WIDTH, hidden_size=128, mlp_ratio=4.0, num_heads=4, depth=3, depth_single_blocks=3,
    axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False,
)


def unet_config(arch: Optional[Dict] = None) -> Dict:
    """``arch`` (default FLUX_WORLD_CONFIG) as this ComfyUI's Flux takes it: the modern tree also wants
    ``txt_ids_dims`` (empty for FLUX.1: text positions are all zero), the November-2024 copy does not."""
    cfg = dict(FLUX_WORLD_CONFIG if arch is None else arch)
    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    if "txt_ids_dims" in fields:
        cfg.setdefault("txt_ids_dims", [])
    unknown = set(cfg) - fields
    if unknown:
        raise ValueError(f"this ComfyUI's Flux does not take {sorted(unknown)}")
    return dict(cfg, image_model="flux", dtype=torch.float32)


class WorldFluxTokenizer(comfy.sd1_clip.SDTokenizer):
    """ComfyUI's CLIP tokenizer for the world encoder, padded to TEXT_TOKENS instead of 77."""

    def __init__(self, embedding_directory=None, tokenizer_data={}, **kwargs):
        super().__init__(tokenizer_path=wm.clip_tokenizer_path(), max_length=TEXT_TOKENS,
                         embedding_directory=embedding_directory, embedding_size=wm.TEXT_WIDTH,
                         embedding_key="nasa_world", tokenizer_data=tokenizer_data)

    ids = wm.WorldTokenizer.ids


SIGMA_MIN, SIGMA_MAX, SIGMA_DATA = 0.002, 80.0, 0.25
PREDICTIONS = ("v", "x0")
X0_WEIGHT_SIGMA = 0.01  # x0 loss: the v loss's weight, capped at its value here (sigma_min would weigh 25x more)


class X0ContinuousV(comfy.model_sampling.ModelSamplingContinuousV, comfy.model_sampling.EPS):
    """ComfyUI's continuous-time schedule and input scaling (ModelSamplingContinuousV, EPS's calculate_input
    x / sqrt(sigma^2 + s^2)) with the model's output taken as the denoised latent. The releases before late
    2025 have no x0 model type of their own; this is that, on every release."""

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_output


class NASAWorldFlux(comfy.supported_models.FluxSchnell):
    """ComfyUI model config of the joint-attention world model: FluxSchnell's model class (``model_base.Flux``,
    no guidance embedding) with continuous-time v-prediction, on the world's block-DCT latent and text encoder."""

    unet_config = {"image_model": "flux", "guidance_embed": False}
    unet_extra_config = {}
    sampling_settings = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "sigma_data": SIGMA_DATA}
    latent_format = wm.BlockDCT
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float32]

    prediction = "v"  # or "x0" (build_flux_model)

    def get_model(self, state_dict={}, prefix="", device=None):
        model = comfy.model_base.Flux(self, model_type=comfy.model_base.ModelType.V_PREDICTION_CONTINUOUS, device=device)
        if self.prediction == "x0":
            model.model_sampling = X0ContinuousV(self)
        return model

    def inpaint_model(self):
        return False

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(WorldFluxTokenizer, wm.WorldClipModel)


def build_flux_model(seed: Optional[int] = None, arch: Optional[Dict] = None, latent_std=None, prediction: str = "v"):
    """A fresh ComfyUI ``model_base.Flux`` (``ldm.flux.model.Flux`` inside) with the world config; random
    init when seeded. ``latent_std``: per-channel latent scale (see model.BlockDCT); ``prediction``: what the
    network outputs, "v" or "x0" (the module docstring)."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, not {prediction!r}")
    config = NASAWorldFlux(unet_config(arch))
    config.latent_format = wm.BlockDCT(latent_std)
    config.prediction = prediction
    model = config.get_model({})
    if seed is not None:
        init_flux(model.diffusion_model, seed)
    return model


def init_flux(flux: nn.Module, seed: int):
    """ComfyUI's ops skip weight init. Linear weights ~ N(0, 1/fan_in), biases 0, norm scales 1; then
    adaLN-Zero as in DiT: every modulation and the output layer start at zero, so each block starts as the
    identity and the model's first output is 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in flux.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.zeros_like(p) if name.endswith("bias") else torch.ones_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(1.0 / p[0].numel()))
        for name, m in flux.named_modules():
            if isinstance(m, nn.Linear) and (name.endswith("mod.lin") or name.endswith("modulation.lin")
                                             or name.endswith("adaLN_modulation.1") or name == "final_layer.linear"):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)


def _noised_call(flux: nn.Module, x0, context, u, noise):
    """The network's output at ``u`` in [0, 1) spread uniformly over the model's timestep range (the spacing
    ComfyUI's "normal" scheduler samples at), called the way ``BaseModel.apply_model`` calls it with
    ModelSamplingContinuousV (sigma_data s): input x / sqrt(sigma^2 + s^2), timestep atan(sigma) * 2 / pi,
    y = the pooled text. Returns (output, sigma, 1 / sqrt(sigma^2 + s^2))."""
    t_min, t_max = (math.atan(v) * 2 / math.pi for v in (SIGMA_MIN, SIGMA_MAX))
    t = t_min + u * (t_max - t_min)
    sigma = torch.tan(t * math.pi / 2).view(-1, 1, 1, 1)
    scale = (sigma ** 2 + SIGMA_DATA ** 2).rsqrt()
    return flux((x0 + sigma * noise) * scale, t, context=context, y=context.mean(dim=1), guidance=None), sigma, scale


def _mean(err2: torch.Tensor, channel_weight: Optional[torch.Tensor]) -> torch.Tensor:
    return err2.mean() if channel_weight is None else (err2 * channel_weight).mean()


def v_loss(flux: nn.Module, x0: torch.Tensor, context: torch.Tensor, u: torch.Tensor,
           noise: torch.Tensor, channel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """v-prediction loss: the output must make ComfyUI's V_PREDICTION denoised equal x0. ``channel_weight``:
    [1, C, 1, 1] weights of the latent channels (train.channel_weights; None: equal)."""
    pred, sigma, scale = _noised_call(flux, x0, context, u, noise)
    s = SIGMA_DATA
    return _mean((pred - (s * noise - sigma * x0 / s) * scale) ** 2, channel_weight)


def x0_loss(flux: nn.Module, x0: torch.Tensor, context: torch.Tensor, u: torch.Tensor,
            noise: torch.Tensor, channel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x0-prediction loss (X0ContinuousV): the output is the denoised latent, its error weighted as the v loss
    weighs it (v error = x0 error * sqrt(sigma^2 + s^2) / (sigma s)), capped at sigma X0_WEIGHT_SIGMA."""
    pred, sigma, scale = _noised_call(flux, x0, context, u, noise)
    sig = sigma.clamp(min=X0_WEIGHT_SIGMA)
    weight = (sig ** 2 + SIGMA_DATA ** 2).sqrt() / (sig * SIGMA_DATA)
    return _mean(((pred - x0) * weight) ** 2, channel_weight)


def loss(prediction: str, flux: nn.Module, x0, context, u, noise, channel_weight=None) -> torch.Tensor:
    return (x0_loss if prediction == "x0" else v_loss)(flux, x0, context, u, noise, channel_weight)


def u_of_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """The ``u`` of v_loss that gives noise level ``sigma`` (clamped to the model's range)."""
    t_min, t_max = (math.atan(v) * 2 / math.pi for v in (SIGMA_MIN, SIGMA_MAX))
    t = torch.atan(sigma.clamp(SIGMA_MIN, SIGMA_MAX)) * 2 / math.pi
    return ((t - t_min) / (t_max - t_min)).clamp(0, 1)


def metadata(arch: Optional[Dict] = None, prediction: str = "v") -> Dict[str, str]:
    """What load_world_checkpoint needs to rebuild this model."""
    return {"arch": "flux", "flux_config": json.dumps(dict(FLUX_WORLD_CONFIG if arch is None else arch)),
            "text_tokens": str(TEXT_TOKENS), "prediction": prediction}


def load(sd_model: Dict[str, torch.Tensor], meta: Dict[str, str], path: str, latent_std=None):
    """The ComfyUI BaseModel of a flux world checkpoint's 'model.*' tensors."""
    arch = json.loads(meta["flux_config"]) if "flux_config" in meta else None
    if int(meta.get("text_tokens", TEXT_TOKENS)) != TEXT_TOKENS:
        raise ValueError(f"{path} was trained with {meta['text_tokens']} text tokens; this code pads to {TEXT_TOKENS}")
    prediction = meta.get("prediction", "v")  # files written before x0 runs existed are v-prediction
    if prediction not in PREDICTIONS:
        raise ValueError(f"{path} predicts {prediction!r}; this code knows {PREDICTIONS}")
    model = build_flux_model(arch=arch, latent_std=latent_std, prediction=prediction)
    missing, unexpected = model.diffusion_model.load_state_dict(sd_model, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the flux world model: missing {missing[:3]}..., "
                         f"unexpected {unexpected[:3]}...")
    return model
