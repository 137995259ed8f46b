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


def _font(size: int):
    """DejaVu Sans from matplotlib's own data (no system fonts needed), else PIL's default font."""
    from PIL import ImageFont
    try:
        import matplotlib
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def save_labelled_grid(cells, row_labels: List[str], col_labels: List[str], path, scale: int = 2,
                       notes: Optional[List[List[str]]] = None, title: str = "", group: int = 0):
    """A grid a person reads at a glance: ``cells[r][c]`` is a batch [n, 3, H, W] in [-1, 1] drawn side by side,
    row labels on the left (lines split on newlines), column labels on top, an optional note under each cell
    (e.g. "2/2 free"), and a thicker gap every ``group`` rows."""
    from PIL import Image, ImageDraw
    n, _, h, w = cells[0][0].shape
    tile_w, tile_h, pad = w * scale, h * scale, 6
    cell_w, note_h = n * tile_w + (n - 1) * 2, (18 if notes else 0)
    label_w, head_h, title_h = 230, 34, (30 if title else 0)
    rows, cols = len(cells), len(cells[0])
    gaps = [(12 if group and r and r % group == 0 else 0) for r in range(rows)]
    width = label_w + cols * (cell_w + pad) + pad
    height = title_h + head_h + sum(tile_h + note_h + pad + g for g in gaps) + pad
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    big, small = _font(16), _font(13)
    if title:
        draw.text((pad, 6), title, fill=(0, 0, 0), font=big)
    for c, label in enumerate(col_labels):
        draw.text((label_w + c * (cell_w + pad) + pad, title_h + 8), label, fill=(0, 0, 0), font=big)
    y = title_h + head_h
    for r in range(rows):
        y += gaps[r]
        lines = row_labels[r].split("\n")
        for i, line in enumerate(lines):
            draw.text((pad, y + 6 + i * 18), line, fill=(0, 0, 0) if i < len(lines) - 1 else (90, 90, 90), font=small)
        for c in range(cols):
            x = label_w + c * (cell_w + pad) + pad
            arr = ((cells[r][c].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            for i in range(arr.shape[0]):
                tile = Image.fromarray(arr[i]).resize((tile_w, tile_h), Image.NEAREST)
                grid.paste(tile, (x + i * (tile_w + 2), y))
            if notes:
                draw.text((x, y + tile_h + 2), notes[r][c], fill=(60, 60, 60), font=small)
        y += tile_h + note_h + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
