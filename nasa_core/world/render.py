"""Drawing the world: attribute sampling (with the spec's priors), rendering with anti-aliased edges, the
quality degradations of world v2, and perturbations that imitate a generator's failure modes (for testing the
reader). Pure torch, computed in float64 on the CPU, so the same attributes give bit-identical images.

Geometry (``WorldSpec`` holds every number): each image shows one or two flat shapes on a flat background.
Circle: radius r. Square: half-side r (axis-aligned). Triangle: isosceles, apex up, base 2r and height 2r,
centred on its bounding box (so all three have the same 2r x 2r box). A single shape's centre is at x = 1/4,
1/2 or 3/4 of the width (left, center, right), y at half the height; two shapes (identical: same shape, colour,
size) sit left and right. Jitter: centre x and y +-3 px (two shapes only move outwards, so they never touch),
radius +-1 px, each colour channel of shape and background +-10/255. Uncut shapes never touch the border.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .spec import (BACKGROUNDS, CATEGORICAL, CLEAN, COLOURS, DEFAULT_SPEC, PAIR_POSITION, POSITIONS, QUALITIES,
                   SHAPES, SIZES, SeedOrGenerator, WorldSpec)
from .spec import generator as _generator
from .spec import threads as _threads

_VALUES = {"shape": SHAPES, "colour": COLOURS, "background": BACKGROUNDS, "size": SIZES, "position": POSITIONS}


def _categorical(g: torch.Generator, n: int, values: Sequence, probs: Optional[Sequence[float]]) -> List:
    """n draws: uniform through ``torch.randint`` when ``probs`` is None (world v1's draws, kept bit for bit),
    else by the inverse CDF of one uniform number each."""
    if probs is None:
        return [values[int(i)] for i in torch.randint(len(values), (n,), generator=g)]
    cdf = torch.tensor(probs, dtype=torch.float64).cumsum(0)
    cdf = cdf / cdf[-1]
    u = torch.rand((n,), generator=g, dtype=torch.float64)
    idx = torch.searchsorted(cdf, u, right=True).clamp(max=len(values) - 1)
    return [values[int(i)] for i in idx]


def sample_attributes(generator_or_seed: SeedOrGenerator, n: int, spec: WorldSpec = DEFAULT_SPEC) -> List[dict]:
    """n attribute dicts drawn from the spec's priors, plus the jitter of each image under the private key
    ``"_jitter"`` and (world v2) the strength and noise seed of its degradation under ``"_degrade"``, so that
    ``render`` reproduces the exact image; the public keys are those of ``ATTRIBUTES``."""
    g = _generator(generator_or_seed)
    drawn = {k: _categorical(g, n, _VALUES[k], spec.prior(k)) for k in CATEGORICAL}
    p2 = spec.prior("count")[1] if spec.prior("count") else spec.p_count2
    count2 = torch.rand((n,), generator=g, dtype=torch.float64) < p2
    jitter = torch.rand((n, 11), generator=g, dtype=torch.float64) * 2.0 - 1.0  # dx1 dx2 dy1 dy2 dr rgb_fg rgb_bg
    if spec.has_quality:
        quality = _categorical(g, n, QUALITIES, spec.prior("quality"))
        strength = torch.rand((n,), generator=g, dtype=torch.float64)
        noise_seed = torch.randint(0, 2 ** 62, (n,), generator=g)
    out = []
    for i in range(n):
        two = bool(count2[i])
        a = {k: drawn[k][i] for k in CATEGORICAL}
        a.update(position=PAIR_POSITION if two else a["position"], count=2 if two else 1,
                 quality=quality[i] if spec.has_quality else CLEAN,
                 _jitter=tuple(float(v) for v in jitter[i]))
        if spec.has_quality:
            a["_degrade"] = (float(strength[i]), int(noise_seed[i]))
        out.append(a)
    return out


def _lerp(bounds: Tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _strength(attrs: dict) -> float:
    d = attrs.get("_degrade")
    return 0.5 if d is None else d[0]


def shape_layout(attrs: dict, spec: WorldSpec = DEFAULT_SPEC) -> List[Tuple[float, float, float]]:
    """(cx, cy, r) of each shape of one image, in pixel units (pixel i covers [i, i+1))."""
    j = attrs.get("_jitter") or (0.0,) * 11
    r = spec.radius(attrs["size"]) + spec.radius_jitter * j[4]
    size = spec.image_size
    lo, hi = r + spec.border_margin, size - r - spec.border_margin
    cy = size * spec.y_fraction
    if attrs["count"] == 2:
        # Outward-only x jitter: the two shapes' gap never shrinks below the unjittered one.
        xs = [spec.x_of("left") - spec.position_jitter * abs(j[0]),
              spec.x_of("right") + spec.position_jitter * abs(j[1])]
    else:
        xs = [spec.x_of(attrs["position"]) + spec.position_jitter * j[0]]
    ys = [cy + spec.position_jitter * j[2], cy + spec.position_jitter * j[3]]
    xs = [min(max(x, lo), hi) for x in xs]
    if attrs.get("quality") == "cut off":
        # The top 25-45% of each shape's 2r height lies above the image: its box starts at -2r * f.
        cut = _lerp(spec.cut_fraction, _strength(attrs))
        return [(x, r * (1.0 - 2.0 * cut), r) for x in xs]
    return [(x, min(max(y, lo), hi), r) for x, y in zip(xs, ys)]


def signed_distance(shape: str, dx: torch.Tensor, dy: torch.Tensor, r) -> torch.Tensor:
    """Signed distance (px, negative inside) to the outline of a shape centred at the origin."""
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - r
    # Triangle, apex (0, -r), base from (-r, r) to (r, r): inside where |dx| <= (dy + r) / 2 and dy <= r.
    return torch.maximum(dy - r, (2.0 * dx.abs() - dy - r) / math.sqrt(5.0))


def render(attrs_list: Sequence[dict], spec: WorldSpec = DEFAULT_SPEC, chunk: int = 256,
           threads: Optional[int] = 1) -> torch.Tensor:
    """Images [N, 3, H, W] float32 in [-1, 1] for attribute dicts (from ``sample_attributes``, or written by
    hand: without ``"_jitter"`` the shape sits exactly at its nominal place, size and colour; without
    ``"quality"`` the image is clean; a degradation without ``"_degrade"`` gets its middle strength and noise
    seed 0). ``threads``: torch CPU threads during the call (restored after; None leaves torch's setting)."""
    with _threads(threads):
        return _render(attrs_list, spec, chunk)


def _render(attrs_list: Sequence[dict], spec: WorldSpec, chunk: int) -> torch.Tensor:
    size = spec.image_size
    n = len(attrs_list)
    images = torch.empty(n, 3, size, size, dtype=torch.float32)
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)
    zero = (0.0,) * 11
    for start in range(0, n, chunk):
        part = attrs_list[start:start + chunk]
        m = len(part)
        jit = torch.tensor([a.get("_jitter") or zero for a in part], dtype=torch.float64)  # [m, 11]
        fg = torch.tensor([spec.colours[a["colour"]] for a in part], dtype=torch.float64)
        bg = torch.tensor([spec.backgrounds[a["background"]] for a in part], dtype=torch.float64)
        fg = (fg + spec.colour_jitter * jit[:, 5:8]).clamp(0, 1)
        bg = (bg + spec.colour_jitter * jit[:, 8:11]).clamp(0, 1)
        washed = torch.tensor([a.get("quality") == "washed out" for a in part])
        if washed.any():
            grey = (fg * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).sum(1, keepdim=True)
            fg[washed] = (grey + (fg - grey) * (1.0 - spec.washout))[washed]
        layout = [shape_layout(a, spec) for a in part]
        kind = torch.tensor([SHAPES.index(a["shape"]) for a in part])
        cover = torch.zeros(m, size, size, dtype=torch.float64)
        for slot in range(2):
            active = torch.tensor([int(a["count"]) > slot for a in part])
            cx, cy, r = (torch.tensor([lay[min(slot, len(lay) - 1)][k] for lay in layout], dtype=torch.float64)
                         for k in range(3))
            for j, shape in enumerate(SHAPES):
                idx = ((kind == j) & active).nonzero().flatten()
                if idx.numel() == 0:
                    continue
                sd = signed_distance(shape, xx - cx[idx].view(-1, 1, 1), yy - cy[idx].view(-1, 1, 1),
                                     r[idx].view(-1, 1, 1))
                cover[idx] = torch.maximum(cover[idx], (0.5 - sd).clamp(0.0, 1.0))
        cover = cover.unsqueeze(1)
        img = bg.view(m, 3, 1, 1) * (1.0 - cover) + fg.view(m, 3, 1, 1) * cover
        img = img * 2.0 - 1.0
        for i, a in enumerate(part):
            q = a.get("quality", CLEAN)
            if q == "blurry":
                img[i] = gaussian_blur(img[i:i + 1], _lerp(spec.blur_sigma, _strength(a)))[0]
            elif q == "noisy":
                d = a.get("_degrade") or (0.5, 0)
                noise = torch.randn(img[i].shape, generator=_generator(d[1]), dtype=torch.float64)
                img[i] = (img[i] + _lerp(spec.noise_sigma, d[0]) * noise).clamp(-1.0, 1.0)
        images[start:start + m] = img.float()
    return images


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of std ``sigma`` px (replicate padding), in the images' dtype."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def to_uint8_hwc(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] (or [3, H, W]) in [-1, 1] -> uint8 [N, H, W, 3] (or [H, W, 3]) for saving."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).contiguous()


# ----------------------------------------------------------------------------------------------------------
# Perturbations: what a generator's samples look like when it falls short (for testing the reader)

def perturb(images: torch.Tensor, noise_sigma: float = 0.0, blur: bool = False,
            generator: Optional[SeedOrGenerator] = None) -> torch.Tensor:
    """Images degraded the way a generator's output may be: a 3x3 box blur (replicate padding) when ``blur``,
    then Gaussian noise of std ``noise_sigma`` (in [-1, 1] units), clamped to [-1, 1]."""
    x = images.float()
    if blur:
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if noise_sigma > 0:
        g = _generator(0 if generator is None else generator)
        x = x + noise_sigma * torch.randn(x.shape, generator=g, dtype=torch.float32)
    return x.clamp(-1.0, 1.0)


def blocky_noise(images: torch.Tensor, sigma: float, block: int = 8, seed: int = 0) -> torch.Tensor:
    """Noise the way an undertrained model on the 8x8 block latent leaves it: every ``block`` x ``block`` block
    gets its own random offset and its own random horizontal and vertical ramp (std ``sigma`` each, [-1, 1]
    units), so the image carries visible block-sized patches."""
    g = _generator(seed)
    n, c, h, w = images.shape
    gh, gw = h // block, w // block
    coef = torch.randn(n, c, 3, gh, gw, generator=g) * sigma
    ramp = (torch.arange(block, dtype=torch.float32) + 0.5) / block * 2.0 - 1.0  # [-1, 1) across a block
    up = lambda t: t.repeat_interleave(block, -2).repeat_interleave(block, -1)  # noqa: E731
    ry = ramp.repeat(gh).view(1, 1, h, 1)
    rx = ramp.repeat(gw).view(1, 1, 1, w)
    noise = up(coef[:, :, 0]) + up(coef[:, :, 1]) * ry + up(coef[:, :, 2]) * rx
    return (images.float() + noise).clamp(-1.0, 1.0)


def soften(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft edges: a Gaussian blur of ``sigma`` px, as a model that has not learnt sharp outlines draws them."""
    return gaussian_blur(images.float(), sigma).clamp(-1.0, 1.0)


def fade(images: torch.Tensor, amount: float) -> torch.Tensor:
    """Every pixel pulled ``amount`` of the way to mid-grey (a low-contrast, "grey blur" sample)."""
    return images.float() * (1.0 - amount)
