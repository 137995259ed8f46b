"""Sampling the world model through ComfyUI (comfy.sample, as KSampler does), with none / CFG / NASA."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import torch

import comfy.sample

from . import model as wm


def encode(clip, text: str):
    """CONDITIONING for ``text``, as CLIP Text Encode makes it."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def sample_latents(model, positive, negative, steps: int, cfg: float, seed: int, batch: int,
                   sampler: str = "euler", scheduler: str = "normal") -> torch.Tensor:
    size = wm.IMAGE_SIZE // wm.FOLD
    latent = torch.zeros(batch, wm.LATENT_CHANNELS, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               disable_pbar=True, seed=seed)


def images_from_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, 3, 64, 64] in [-1, 1]."""
    return wm.from_latent(latents.float().cpu()).clamp(-1, 1)


def sample_images(checkpoint, prompts: Sequence[str], steps: int = 20, cfg: float = 3.0, seed: int = 0,
                  per_prompt: int = 1) -> torch.Tensor:
    """Images for ``prompts`` from a world checkpoint path (or a loaded (MODEL, CLIP, VAE) triple)."""
    model, clip, _ = wm.load_world_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    empty = encode(clip, "")
    out = [images_from_latents(sample_latents(model, encode(clip, p), empty, steps, cfg, seed + i, per_prompt))
           for i, p in enumerate(prompts)]
    return torch.cat(out)


def save_grid(images: torch.Tensor, path, columns: int, scale: int = 2, labels: Optional[List[str]] = None):
    """Write [N, 3, H, W] images in [-1, 1] as a PNG grid."""
    from PIL import Image
    n, _, h, w = images.shape
    rows = (n + columns - 1) // columns
    grid = Image.new("RGB", (columns * w * scale, rows * h * scale), (255, 255, 255))
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for i in range(n):
        tile = Image.fromarray(arr[i]).resize((w * scale, h * scale), Image.NEAREST)
        grid.paste(tile, ((i % columns) * w * scale, (i // columns) * h * scale))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
