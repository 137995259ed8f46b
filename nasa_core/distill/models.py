"""The ComfyUI side of the trainer: load the teacher (and the student's starting point) with ComfyUI's own
loaders, run a denoiser through ComfyUI's model code (NASA through the pack's adapters, exactly as in a
graph), and export the student as a file ComfyUI's stock loaders open."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.sd
import comfy.utils

from ..adapters import apply_nasa
from ..adapters.comfy_runtime import PROMPT_ALPHA_KEY, PROMPT_NEGATIVE_KEY
from .config import ConfigError


@dataclass
class Loaded:
    model: object        # ModelPatcher
    clip: object         # ComfyUI CLIP
    vae: object          # ComfyUI VAE (or the world's)


def _checked_load(what: str, path: str, fn):
    try:
        return fn()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except ConfigError:
        raise
    except Exception as e:  # a truncated file, a foreign format, a model ComfyUI does not know
        raise ConfigError(f"cannot load {what} {path}: {type(e).__name__}: {e}") from e


def load_models(cfg, path: Optional[str] = None, need_clip: bool = True) -> Loaded:
    """MODEL/CLIP/VAE from the configured teacher (or ``path``, same kind), through ComfyUI's loaders."""
    path = path or cfg.teacher
    if cfg.model_kind == "world":
        from ..world_model.model import load_world_checkpoint
        model, clip, vae = _checked_load("world checkpoint", path, lambda: load_world_checkpoint(path))
        return Loaded(model, clip, vae)
    if cfg.model_kind == "checkpoint":
        out = _checked_load("checkpoint", path, lambda: comfy.sd.load_checkpoint_guess_config(
            path, output_vae=True, output_clip=need_clip, embedding_directory=None))
        if out[0] is None:
            raise ConfigError(f"ComfyUI found no diffusion model in {path}")
        model, clip, vae = out[0], out[1], out[2]
        if need_clip and clip is None:
            raise ConfigError(f"{path} holds no text encoder: pass --model-kind diffusion_model with --text-encoder")
        return Loaded(model, clip, vae)
    model = _checked_load("diffusion model", path, lambda: comfy.sd.load_diffusion_model(path))
    clip = None
    if need_clip:
        kind = cfg.text_encoder_type.upper()
        if not hasattr(comfy.sd.CLIPType, kind):
            raise ConfigError(f"text_encoder_type {cfg.text_encoder_type!r} is not one of this ComfyUI's "
                              f"{[t.name.lower() for t in comfy.sd.CLIPType]}")
        clip = _checked_load("text encoder", ",".join(cfg.text_encoder), lambda: comfy.sd.load_clip(
            ckpt_paths=list(cfg.text_encoder), clip_type=getattr(comfy.sd.CLIPType, kind)))
    vae = None
    if cfg.vae:
        vae = _checked_load("VAE", cfg.vae, lambda: comfy.sd.VAE(sd=comfy.utils.load_torch_file(cfg.vae)))
    return Loaded(model, clip, vae)


# ---------------------------------------------------------------------------------------------------------
# Text


class TextCache:
    """Encodes prompts once with the frozen text encoder (CLIP Text Encode's path) and batches them."""

    def __init__(self, clip, limit: int = 20000):
        self.clip = clip
        self.limit = limit
        self.cache: Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]] = {}

    def one(self, text: str):
        hit = self.cache.get(text)
        if hit is None:
            with torch.no_grad():
                cond, pooled = self.clip.encode_from_tokens(self.clip.tokenize(text), return_pooled=True)
            hit = (cond.float().cpu(), None if pooled is None else pooled.float().cpu())
            if len(self.cache) >= self.limit:
                self.cache.clear()
            self.cache[text] = hit
        return hit

    def batch(self, texts: Sequence[str], device) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        items = [self.one(t) for t in texts]
        lengths = [c.shape[1] for c, _ in items]
        lcm = 1
        for n in lengths:
            lcm = lcm * n // math.gcd(lcm, n)
        # different token counts: repeat each to the common multiple, which leaves softmax attention unchanged
        conds = torch.cat([c.repeat(1, lcm // c.shape[1], 1) for c, _ in items]).to(device)
        pooled = None if items[0][1] is None else torch.cat([p for _, p in items]).to(device)
        return conds, pooled


# ---------------------------------------------------------------------------------------------------------
# Running a denoiser


def noise_form(model_patcher):
    """'flow' for rectified-flow models (x_t = (1-s) x0 + s eps), else 've' (x_t = x0 + s eps)."""
    sampling = model_patcher.get_model_object("model_sampling")
    return "flow" if isinstance(sampling, comfy.model_sampling.CONST) else "ve"


def coefficients(form: str, sigma: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) with x_t = a_t x0 + s_t eps."""
    return (1 - sigma if form == "flow" else torch.ones_like(sigma)), sigma


def sigmas_for(model_patcher, u: torch.Tensor) -> torch.Tensor:
    """The noise level at diffusion-time fractions ``u`` (0 clean, 1 pure noise) of the model's schedule."""
    sampling = model_patcher.get_model_object("model_sampling")
    return torch.tensor([sampling.percent_to_sigma(1.0 - float(x)) for x in u], dtype=torch.float32)


def sigma_max(model_patcher) -> float:
    return float(model_patcher.get_model_object("model_sampling").sigma_max)


def student_input(model_patcher, z: torch.Tensor) -> torch.Tensor:
    """What ComfyUI's one-step sampler feeds the model from noise z at full denoise."""
    sampling = model_patcher.get_model_object("model_sampling")
    s = torch.tensor(sigma_max(model_patcher), dtype=z.dtype, device=z.device)
    return sampling.noise_scaling(s, z, torch.zeros_like(z), max_denoise=True)


def model_conds(model_patcher, context: torch.Tensor, pooled: Optional[torch.Tensor], x: torch.Tensor,
                spatial: int = 8) -> dict:
    """The keyword arguments ComfyUI's sampler gives apply_model for this text (c_crossattn, SDXL's y, ...)."""
    base = model_patcher.model
    kwargs = dict(cross_attn=context, noise=x, device=x.device)
    if pooled is not None:
        kwargs["pooled_output"] = pooled
    if x.dim() == 4:
        kwargs.update(width=x.shape[-1] * spatial, height=x.shape[-2] * spatial)
    conds = base.extra_conds(**kwargs)
    return {k: v.process_cond(batch_size=x.shape[0], device=x.device, area=None).cond for k, v in conds.items()}


def predict_x0(model_patcher, x: torch.Tensor, sigma: torch.Tensor, conds: dict,
               negative: Optional[torch.Tensor] = None, alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The model's x0 prediction, through the ModelPatcher's call wrapper (NASA's, when installed) and
    transformer_options, as ComfyUI's sampler runs it; ``negative``/``alpha`` travel as NASA Negative
    Conditioning's per-prompt keys."""
    base = model_patcher.model
    c = dict(conds)
    c["transformer_options"] = dict(model_patcher.model_options.get("transformer_options", {}))
    if negative is not None:
        c[PROMPT_NEGATIVE_KEY] = negative
        c[PROMPT_ALPHA_KEY] = alpha.reshape(-1, 1).float()
    sigma = sigma.to(x.device, torch.float32)
    wrapper = model_patcher.model_options.get("model_function_wrapper")
    if wrapper is not None:
        return wrapper(base.apply_model, {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": [0]})
    if negative is not None:
        raise RuntimeError("a negative was given for a model without NASA installed")
    return base.apply_model(x, sigma, **c)


def with_nasa(model_patcher, reference: Optional[torch.Tensor] = None):
    """A clone with NASA installed for per-prompt negatives only (the trainer passes them per sample), each measured
    from ``reference`` when given (apply_nasa's reference)."""
    return apply_nasa(model_patcher, negative=None, alpha=0.0, reference=reference)


# ---------------------------------------------------------------------------------------------------------
# Export


def export_student(cfg, loaded: Loaded, unet_state: Dict[str, torch.Tensor], path: str, metadata: Dict[str, str]):
    """Write the student where ComfyUI's stock loaders open it: a world checkpoint (Load NASA World Model),
    an all-in-one checkpoint (Load Checkpoint), or a diffusion-model file (Load Diffusion Model)."""
    import os
    tmp = f"{path}.tmp"
    if cfg.model_kind == "world":
        from ..world_model.model import checkpoint_metadata, save_world_checkpoint
        encoder = loaded.clip.cond_stage_model.encoder
        # The loader rebuilds a world model from its file's metadata (architecture, world, per-channel latent
        # scale, Flux config), and the student is the teacher's model: without these a student of a world-v2
        # teacher loaded as a v1 UNet on the raw latent scale. Step, command and training config are the student's.
        own = ("step", "command", "nasa_world_train_config")
        inherited = {k: v for k, v in checkpoint_metadata(cfg.teacher).items() if k not in own}
        save_world_checkpoint(path, unet_state, encoder.state_dict(), metadata={**inherited, **metadata})
        return
    if cfg.model_kind == "checkpoint":
        # ComfyUI writes a whole checkpoint from a loaded model: put the student's weights in for the write and
        # give the model its own back after (it may be the frozen teacher a LoRA student is merged from)
        unet = loaded.model.model.diffusion_model
        own = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        unet.load_state_dict(unet_state)
        try:
            comfy.sd.save_checkpoint(tmp, loaded.model, clip=loaded.clip, vae=loaded.vae, metadata=metadata)
        finally:
            unet.load_state_dict(own)
    else:
        comfy.utils.save_torch_file({k: v.contiguous() for k, v in unet_state.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)
