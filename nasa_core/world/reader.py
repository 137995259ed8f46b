"""The pixel-level reader: what a generated image shows, attribute by attribute, and how clean it is.

Deterministic, from pixels only (images [N, 3, H, W] in [-1, 1]):

* background: palette colour nearest to the per-channel median of the 2-pixel border ring.
* foreground: on a 3x3 box-smoothed copy, pixels farther than 0.2 (RGB in [0, 1]) from that median are
  candidates; the median of their most distinct quarter is the foreground colour; a pixel is foreground when its projection on the
  background -> foreground axis is past the midpoint. The mask is opened with a 3x3 square (specks and
  one-pixel bridges go), then split into 8-connected components with ``scipy.ndimage.label``; components of
  at least a third of the smallest shape's area are the shapes. None found: every attribute but the
  background (and the noise measure) is None.
* shape (of the largest component), from its bounding box: a triangle narrows towards the top (mean width
  of the top quarter of its rows under 0.7 of the bottom quarter's: 0.15 for the world's triangles, about
  0.5 when their apex is cut off, 1 for circles and squares); otherwise a square fills its box (fill >= 0.88)
  and a circle does not (pi / 4 = 0.785). A soft disc is a circle, however square it was meant to be.
* size: the larger of half the box width (r for all three shapes, also when the top is cut off) and the
  radius of the read shape with the component's area (the anti-aliased corners of a triangle's base fall
  below the threshold, so its box is narrower than 2r), against the midpoint of the small and large radii. position: the box centre x against the midpoints of left / center / right;
  several components -> "sides" when the leftmost is left and the rightmost right, else None.
* colour: the hue of the median core pixel (projection > 0.8) nearest to a palette hue; a core with chroma
  (max - min channel) under 0.12 shows no colour (None).
* quality, from four measures (also returned, under private keys):
  ``_inside``: no shape has 3 or more pixels on the image's outermost rows and columns; ``_noise``: the
  mean absolute deviation from the median x 1.2533 (the std for Gaussian noise; mean over channels, [0, 1]
  units) of the background pixels more than 4 px from any shape; ``_edge``: edge width in px (pixels
  whose smoothed projection is between 0.2 and 0.8 within 3 px of the outline, per outline pixel);
  ``_saturation``: the core's chroma over the palette colour's. In that order the first failing one names
  the quality: "cut off" (touches the border), "noisy" (``_noise`` > NOISE_LIMIT), "blurry" (``_edge`` >
  EDGE_LIMIT), "washed out" (``_saturation`` < SATURATION_LIMIT), else "clean".

Thresholds were set on world-v2 images of seeds 1000-1999 (sampled, and passed through the block-DCT latent);
the tests and benchmarks read other seeds.
"""
from __future__ import annotations

import colorsys
import math

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .spec import ATTRIBUTES, DEFAULT_SPEC, PAIR_POSITION, Attributes, WorldSpec
from .spec import threads as _threads

NOISE_LIMIT = 0.015
EDGE_LIMIT = 2.65
SATURATION_LIMIT = 0.7
TAPER_LIMIT = 0.7
SQUARE_FILL = 0.88
MIN_CHROMA = 0.12
MEASURES = ("_inside", "_noise", "_edge", "_saturation")

_SQUARE3 = np.ones((3, 3), dtype=bool)


def _nearest(rgb: torch.Tensor, palette: Dict[str, tuple]) -> List[str]:
    """Name of the palette colour nearest (RGB, Euclidean) to each row of ``rgb`` [N, 3]."""
    names = list(palette)
    table = torch.tensor([palette[k] for k in names], dtype=rgb.dtype)
    return [names[j] for j in torch.cdist(rgb, table).argmin(1).tolist()]


def _chroma(rgb) -> float:
    return float(max(rgb) - min(rgb))


def _hue_name(rgb, palette: Dict[str, tuple]) -> Optional[str]:
    if _chroma(rgb) < MIN_CHROMA:
        return None
    h = colorsys.rgb_to_hsv(*[float(v) for v in rgb])[0]
    best, dist = None, 9.0
    for name, ref in palette.items():
        d = abs(h - colorsys.rgb_to_hsv(*ref)[0])
        d = min(d, 1.0 - d)
        if d < dist:
            best, dist = name, d
    return best


def _radius_of_area(shape: str, area: float) -> float:
    """Radius (circle), half-side (square) or half-base (triangle) of the shape with this area."""
    if shape == "circle":
        return math.sqrt(area / math.pi)
    if shape == "square":
        return math.sqrt(area) / 2.0
    return math.sqrt(area / 2.0)


def _frame_pixels(component: np.ndarray) -> int:
    """How many of a component's pixels lie on the image's outermost rows and columns."""
    return int(component[0].sum() + component[-1].sum() + component[1:-1, 0].sum() + component[1:-1, -1].sum())


def default_min_area(spec: WorldSpec, width: int) -> int:
    r_small = (spec.small_radius - spec.radius_jitter) * width / spec.image_size
    return max(4, int(2.0 * r_small * r_small / 3.0))  # a third of the smallest triangle


def read_attributes(images: torch.Tensor, spec: WorldSpec = DEFAULT_SPEC, min_area: Optional[int] = None,
                    smooth: bool = True, threads: Optional[int] = 1) -> List[Attributes]:
    """The attributes of each image [N, 3, H, W] (or [3, H, W]) in [-1, 1], read from pixels (None where
    undetermined), plus the quality measures under ``MEASURES`` keys. ``smooth``: make the foreground
    decisions on a 3x3 box-smoothed copy (robust to noise; off only for diagnostics). ``threads``: torch CPU
    threads during the call. Images of another size than ``spec.image_size`` are read with the spec's
    geometry scaled to their width."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if min_area is None:
        min_area = default_min_area(spec, images.shape[-1])
    with _threads(threads):
        return [r for s in range(0, images.shape[0], 256) for r in _read(images[s:s + 256], spec, min_area, smooth)]


def _read(images: torch.Tensor, spec: WorldSpec, min_area: int, smooth: bool) -> List[Attributes]:
    from scipy import ndimage

    x = ((images.detach().float().cpu() + 1.0) * 0.5).clamp(0, 1)  # [N, 3, H, W] in [0, 1]
    n, _, h, w = x.shape
    scale = w / spec.image_size
    size_cut = (spec.small_radius + spec.large_radius) / 2.0 * scale  # the midpoint of the two radii
    px = [f * w for f in spec.position_fractions]
    x_cuts = ((px[0] + px[1]) / 2.0, (px[1] + px[2]) / 2.0)

    border = torch.ones(h, w, dtype=torch.bool)
    border[2:-2, 2:-2] = False
    bg = x[:, :, border].median(dim=2).values  # [N, 3]
    xs_ = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) if smooth else x
    diff = xs_ - bg.view(n, 3, 1, 1)
    candidate = (diff * diff).sum(1) > 0.2 ** 2  # [N, H, W]
    flat = xs_.flatten(2)
    nan = torch.tensor(float("nan"))
    # The foreground colour: the median of the candidates' most distinct quarter (a soft edge's halo, which
    # lies between background and shape, would pull a plain median towards the background).
    dist = (diff * diff).sum(1).flatten(1)  # [N, HW]
    far_cut = torch.where(candidate.flatten(1), dist, nan).nanquantile(0.75, dim=1, keepdim=True)
    strong = candidate.flatten(1) & (dist >= far_cut.nan_to_num(float("inf")))
    fg = torch.where(strong.unsqueeze(1), flat, nan).nanmedian(dim=2).values  # nan if none
    axis = fg - bg
    t = (diff * axis.view(n, 3, 1, 1)).sum(1) / (axis * axis).sum(1).clamp_min(1e-6).view(n, 1, 1)
    has_fg = candidate.flatten(1).sum(1) >= min_area
    masks = (t > 0.5) & has_fg.view(n, 1, 1)
    core = (t > 0.8) & masks
    core_rgb = torch.where(core.flatten(1).unsqueeze(1), flat, nan).nanmedian(dim=2).values
    fg_rgb = torch.where(torch.isnan(core_rgb), fg, core_rgb).nan_to_num(0.0)

    bg_names = _nearest(bg, spec.backgrounds)
    x_np, t_np, masks_np, fg_np = x.numpy(), t.numpy(), masks.numpy(), fg_rgb.numpy()

    def where(c: float) -> str:
        return "left" if c < x_cuts[0] else ("right" if c > x_cuts[1] else "center")

    out: List[Attributes] = []
    for i in range(n):
        read: Attributes = {k: None for k in ATTRIBUTES}
        read["background"] = bg_names[i]
        mask = ndimage.binary_opening(masks_np[i], structure=_SQUARE3) if masks_np[i].any() else masks_np[i]
        labels, k = ndimage.label(mask, structure=_SQUARE3)
        comps = []
        if k:
            areas = np.bincount(labels.ravel(), minlength=k + 1)
            for j, sl in enumerate(ndimage.find_objects(labels), start=1):
                if sl is None or areas[j] < min_area:
                    continue
                sub = labels[sl] == j
                bh, bw = sub.shape
                widths = sub.sum(1).astype(np.float64)
                q = max(1, int(round(bh / 4.0)))
                comps.append({"id": j, "area": int(areas[j]), "fill": areas[j] / float(bh * bw),
                              "taper": widths[:q].mean() / max(widths[-q:].mean(), 1.0), "width": bw,
                              "cx": (sl[1].start + sl[1].stop) / 2.0,
                              "touches": _frame_pixels(labels == j) >= 3})
        kept = np.isin(labels, [c["id"] for c in comps]) if comps else np.zeros_like(mask)
        # noise: background pixels more than 4 px from any foreground
        fore = masks_np[i] | kept
        far = ~ndimage.binary_dilation(fore, structure=_SQUARE3, iterations=4) if fore.any() else np.ones_like(mask)
        if far.sum() < 32:
            far = np.ones_like(mask)
        vals = x_np[i][:, far]  # [3, P]
        dev = np.abs(vals - np.median(vals, axis=1, keepdims=True)).mean(axis=1)
        read["_noise"] = float(1.2533 * dev.mean())
        read["_inside"] = None
        read["_edge"] = None
        read["_saturation"] = None
        if comps:
            big = max(comps, key=lambda c: c["area"])
            read["count"] = len(comps)
            rgb = fg_np[i]
            read["colour"] = _hue_name(rgb, spec.colours)
            if big["taper"] < TAPER_LIMIT:
                read["shape"] = "triangle"
            else:
                read["shape"] = "square" if big["fill"] >= SQUARE_FILL else "circle"
            read["size"] = "large" if max(big["width"] / 2.0, _radius_of_area(read["shape"], big["area"])) > size_cut \
                else "small"
            if len(comps) == 1:
                read["position"] = where(big["cx"])
            else:
                order = sorted(c["cx"] for c in comps)
                if where(order[0]) == "left" and where(order[-1]) == "right":
                    read["position"] = PAIR_POSITION
            # quality measures
            outline = kept & ~ndimage.binary_erosion(kept, structure=_SQUARE3, border_value=1)
            ring = ndimage.binary_dilation(outline, structure=_SQUARE3, iterations=3)
            band = ring & (t_np[i] > 0.2) & (t_np[i] < 0.8)
            read["_edge"] = float(band.sum()) / max(1.0, float(outline.sum()))
            read["_inside"] = not any(c["touches"] for c in comps)
            ref = spec.colours.get(read["colour"]) if read["colour"] else None
            read["_saturation"] = _chroma(rgb) / (_chroma(ref) if ref else max(_chroma(v) for v in spec.colours.values()))
            read["quality"] = quality_of(read)
        out.append(read)
    return out


def quality_of(read: Attributes) -> Optional[str]:
    """The quality a read image shows, from its measures (None when it shows no shape)."""
    if read.get("_inside") is None:
        return None
    if not read["_inside"]:
        return "cut off"
    if read["_noise"] > NOISE_LIMIT:
        return "noisy"
    if read["_edge"] > EDGE_LIMIT:
        return "blurry"
    if read["_saturation"] < SATURATION_LIMIT:
        return "washed out"
    return "clean"


def quality_score(read: Attributes) -> float:
    """One number in [0, 1] for how clean an image is (1: clean by every measure; 0: no shape). The mean of
    four parts: inside the frame (0 or 1), noise (1 at 0, 0 at twice NOISE_LIMIT), edge (1 at 1 px, 0 at
    twice EDGE_LIMIT) and saturation (its value, capped at 1)."""
    if read.get("_inside") is None:
        return 0.0
    parts = [1.0 if read["_inside"] else 0.0,
             1.0 - min(1.0, read["_noise"] / (2 * NOISE_LIMIT)),
             1.0 - min(1.0, max(0.0, read["_edge"] - 1.0) / (2 * EDGE_LIMIT - 1.0)),
             min(1.0, max(0.0, read["_saturation"]))]
    return sum(parts) / len(parts)


__all__ = ["EDGE_LIMIT", "MEASURES", "NOISE_LIMIT", "SATURATION_LIMIT", "quality_of", "quality_score",
           "read_attributes"]

