"""A synthetic captioned-image world for training a tiny text-to-image model on the CPU, and a pixel-level
reader that scores what a generated image shows. Pure torch; deterministic by seed.

The world (``WorldSpec`` holds every number):

* Each image shows one or two flat shapes on a flat background, 64x64 RGB. Six attributes:
  ``shape`` (circle, square, triangle), ``colour`` (red, green, blue, yellow), ``background`` (black, white,
  gray), ``size`` (small: radius / half-side 7 px, large: 12 px), ``position`` (left, center, right: the
  shape's centre at x = 1/4, 1/2, 3/4 of the width, y at half the height) and ``count`` (1 or 2).
* Two shapes (``count`` 2) are identical (same shape, colour, size), one on the left and one on the right;
  their ``position`` is ``"sides"``. Every attribute is drawn uniformly and independently, the position of
  a single shape among left/center/right.
* Jitter keeps images from being identical while the classes stay far apart: centre x and y +-3 px (for two
  shapes x only moves outwards, so they never touch), radius +-1 px, each colour channel of shape and
  background +-10/255. Shapes never touch the image border. Edges are anti-aliased (coverage from the
  signed distance to the outline).
* Circle: radius r. Square: half-side r (axis-aligned). Triangle: isosceles, apex up, base 2r and height 2r,
  centred on its bounding box (so all three have the same 2r x 2r bounding box).
* Captions name each attribute independently with probability ``p_name`` (0.5), in one fixed phrasing:
  ``"[a|one|two] [small|large] [colour] [circle|square|triangle|shape][s] [on the left|on the right|in the
  center][,] [on a black|white|gray background]"`` (the comma only between a position and a background). An
  unnamed shape is a "shape". The count is always implied by the grammar ("a" / "one" = 1, "two" = 2); only
  "one" / "two" name it for ``attributes_of_prompt``. The position of two shapes ("sides") is never named. So
  "a shape" covers every shape, colour, background, size and position of single shapes.

Images are float tensors [N, 3, H, W] in [-1, 1]; ``to_uint8_hwc`` converts them for saving.

The reader (``read_attributes``) recovers the six attributes from pixels only, deterministically: background
= palette colour nearest to the median border pixel; on a 3x3-smoothed copy, foreground = pixels past the
midpoint between the background and the median far-from-background colour; 8-connected components (own label
propagation) of at least a third of the smallest shape's area are the shapes; shape = best IoU among a circle,
a square and a triangle of the component's area and centroid; size from that template's radius; position from
the centroid x; colour = palette colour nearest to the median core foreground pixel. Attributes it cannot
determine are None (no foreground: everything but the background). On the world's own images it is right
100% of the time, also with Gaussian noise (std 0.1) and a 3x3 blur (``benchmarks/reader_accuracy.py``).
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# Vocabulary

SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: Tuple[str, ...] = ("red", "green", "blue", "yellow")
BACKGROUNDS: Tuple[str, ...] = ("black", "white", "gray")
SIZES: Tuple[str, ...] = ("small", "large")
POSITIONS: Tuple[str, ...] = ("left", "center", "right")
PAIR_POSITION = "sides"  # the position of two shapes (one left, one right)
COUNTS: Tuple[int, ...] = (1, 2)
ATTRIBUTES: Tuple[str, ...] = ("shape", "colour", "background", "size", "position", "count")

VOCAB: Dict[str, Tuple] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "background": BACKGROUNDS,
    "size": SIZES,
    "position": POSITIONS + (PAIR_POSITION,),
    "count": COUNTS,
}

# RGB in [0, 1]. Shape colours and background colours are disjoint sets, so a colour word is never ambiguous.
COLOUR_RGB: Dict[str, Tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.12, 0.70, 0.16),
    "blue": (0.14, 0.26, 0.90),
    "yellow": (0.95, 0.85, 0.10),
}
BACKGROUND_RGB: Dict[str, Tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "gray": (0.5, 0.5, 0.5),
}

Attributes = Dict[str, Union[str, int, None]]
SeedOrGenerator = Union[int, torch.Generator]


@dataclass(frozen=True)
class WorldSpec:
    """Every number of the world. The reader takes the same spec to place its thresholds."""
    image_size: int = 64
    small_radius: float = 7.0
    large_radius: float = 12.0
    radius_jitter: float = 1.0
    position_fractions: Tuple[float, float, float] = (0.25, 0.5, 0.75)  # x of left, center, right
    y_fraction: float = 0.5
    position_jitter: float = 3.0
    colour_jitter: float = 10.0 / 255.0
    border_margin: float = 1.0  # shapes keep at least this many pixels from the image border
    p_count2: float = 0.5
    colours: Dict[str, Tuple[float, float, float]] = field(default_factory=lambda: dict(COLOUR_RGB), hash=False)
    backgrounds: Dict[str, Tuple[float, float, float]] = field(default_factory=lambda: dict(BACKGROUND_RGB),
                                                               hash=False)

    def radius(self, size: str) -> float:
        return self.small_radius if size == "small" else self.large_radius

    def x_of(self, position: str) -> float:
        return self.position_fractions[POSITIONS.index(position)] * self.image_size


DEFAULT_SPEC = WorldSpec()
WORLDS = {"v1": DEFAULT_SPEC}


def world_spec(name: str) -> "WorldSpec":
    """The world named ``name`` (what a trainer's ``--world`` takes)."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; known: {sorted(WORLDS)}")
    return WORLDS[name]


@contextlib.contextmanager
def _threads(n: Optional[int]):
    """torch's intra-op thread count set to ``n`` for the block (None: left alone), then restored. The world's
    tensors are small: on a busy 2-core machine one thread is 5-20x faster than two (no spin-waiting)."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generator(seed_or_generator: SeedOrGenerator) -> torch.Generator:
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    return torch.Generator().manual_seed(int(seed_or_generator) & 0xFFFF_FFFF_FFFF_FFFF)


def _mix(seed: int, step: int) -> int:
    """splitmix64 of (seed, step): distinct, well-spread generator seeds for each training step."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(step) + 0x632BE59BD9B4E019) & 0xFFFF_FFFF_FFFF_FFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFF_FFFF_FFFF_FFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFF_FFFF_FFFF_FFFF
    return (x ^ (x >> 31)) & 0x7FFF_FFFF_FFFF_FFFF


# ----------------------------------------------------------------------------------------------------------
# Sampling and rendering

def sample_attributes(generator: SeedOrGenerator, n: int, spec: WorldSpec = DEFAULT_SPEC) -> List[dict]:
    """n attribute dicts, plus the jitter of each image under the private key ``"_jitter"`` (so ``render``
    reproduces the exact image); the six public keys are those of ``ATTRIBUTES``."""
    g = _generator(generator)
    shape = torch.randint(len(SHAPES), (n,), generator=g)
    colour = torch.randint(len(COLOURS), (n,), generator=g)
    background = torch.randint(len(BACKGROUNDS), (n,), generator=g)
    size = torch.randint(len(SIZES), (n,), generator=g)
    position = torch.randint(len(POSITIONS), (n,), generator=g)
    count2 = torch.rand((n,), generator=g, dtype=torch.float64) < spec.p_count2
    jitter = torch.rand((n, 11), generator=g, dtype=torch.float64) * 2.0 - 1.0  # dx1 dx2 dy1 dy2 dr rgb_fg rgb_bg
    out = []
    for i in range(n):
        two = bool(count2[i])
        out.append({
            "shape": SHAPES[int(shape[i])],
            "colour": COLOURS[int(colour[i])],
            "background": BACKGROUNDS[int(background[i])],
            "size": SIZES[int(size[i])],
            "position": PAIR_POSITION if two else POSITIONS[int(position[i])],
            "count": 2 if two else 1,
            "_jitter": tuple(float(v) for v in jitter[i]),
        })
    return out


def _shape_layout(attrs: dict, spec: WorldSpec) -> List[Tuple[float, float, float]]:
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
    return [(min(max(x, lo), hi), min(max(y, lo), hi), r) for x, y in zip(xs, ys)]


def _signed_distance(shape: str, dx: torch.Tensor, dy: torch.Tensor, r) -> torch.Tensor:
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
    hand: without ``"_jitter"`` the shape sits exactly at its nominal place, size and colour). Computed in
    float64 on the CPU, so the same attributes give bit-identical images. ``threads``: torch CPU threads
    during the call (restored after; None leaves torch's setting alone)."""
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
        layout = [_shape_layout(a, spec) for a in part]
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
                sd = _signed_distance(shape, xx - cx[idx].view(-1, 1, 1), yy - cy[idx].view(-1, 1, 1),
                                      r[idx].view(-1, 1, 1))
                cover[idx] = torch.maximum(cover[idx], (0.5 - sd).clamp(0.0, 1.0))
        cover = cover.unsqueeze(1)
        img = bg.view(m, 3, 1, 1) * (1.0 - cover) + fg.view(m, 3, 1, 1) * cover
        images[start:start + m] = (img * 2.0 - 1.0).float()
    return images


def to_uint8_hwc(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] (or [3, H, W]) in [-1, 1] -> uint8 [N, H, W, 3] (or [H, W, 3]) for saving."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).contiguous()


def perturb(images: torch.Tensor, noise_sigma: float = 0.0, blur: bool = False,
            generator: Optional[SeedOrGenerator] = None) -> torch.Tensor:
    """Images degraded the way a generator's output may be: a 3x3 box blur (replicate padding) when ``blur``,
    then Gaussian noise of std ``noise_sigma`` (in [-1, 1] units), clamped to [-1, 1]. For the reader tests."""
    x = images.float()
    if blur:
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if noise_sigma > 0:
        g = _generator(0 if generator is None else generator)
        x = x + noise_sigma * torch.randn(x.shape, generator=g, dtype=torch.float32)
    return x.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Captions

_POSITION_PHRASE = {"left": "on the left", "right": "on the right", "center": "in the center"}


def _bernoulli(rng, p: float) -> bool:
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng, dtype=torch.float64)) < p
    return rng.random() < p


def _phrase(attrs: dict, named: Dict[str, bool]) -> str:
    two = attrs["count"] == 2
    words = ["two" if two else ("one" if named["count"] else "a")]
    if named["size"]:
        words.append(attrs["size"])
    if named["colour"]:
        words.append(attrs["colour"])
    noun = attrs["shape"] if named["shape"] else "shape"
    words.append(noun + ("s" if two else ""))
    text = " ".join(words)
    pos = named["position"] and not two
    if pos:
        text += " " + _POSITION_PHRASE[attrs["position"]]
    if named["background"]:
        text += (", on a " if pos else " on a ") + attrs["background"] + " background"
    return text


def caption(attrs: dict, rng=None, p_name: float = 0.5) -> str:
    """A caption naming each attribute independently with probability ``p_name``. ``rng``: a
    ``torch.Generator``, a ``random.Random`` or an int seed. The count is always implied ("a"/"two")."""
    if rng is None or isinstance(rng, int):
        rng = _generator(0 if rng is None else rng)
    named = {k: _bernoulli(rng, p_name) for k in ATTRIBUTES}
    return _phrase(attrs, named)


def caption_all(attrs: dict) -> str:
    """The caption that names every attribute (the position of two shapes stays implied by "two")."""
    return _phrase(attrs, {k: True for k in ATTRIBUTES})


def sample_batch(seed_or_generator: SeedOrGenerator, n: int, spec: WorldSpec = DEFAULT_SPEC,
                 p_name: float = 0.5) -> Tuple[torch.Tensor, List[dict], List[str]]:
    """(images [n, 3, H, W] in [-1, 1], attribute dicts, captions), all from one generator."""
    g = _generator(seed_or_generator)
    attrs = sample_attributes(g, n, spec)
    captions = [caption(a, g, p_name) for a in attrs]
    return render(attrs, spec), attrs, captions


def batch_for_step(seed: int, step: int, n: int, spec: WorldSpec = DEFAULT_SPEC,
                   p_name: float = 0.5) -> Tuple[torch.Tensor, List[dict], List[str]]:
    """The training batch of ``step``: a function of (seed, step, n) only, so training resumes at any step."""
    return sample_batch(torch.Generator().manual_seed(_mix(seed, step)), n, spec, p_name)


def public(attrs: dict) -> Attributes:
    """The six public attributes of a dict (drops ``"_jitter"``)."""
    return {k: attrs.get(k) for k in ATTRIBUTES}


# ----------------------------------------------------------------------------------------------------------
# Prompt parsing

_WORDS: Dict[str, Tuple[str, Union[str, int]]] = {}
for _s in SHAPES:
    _WORDS[_s] = _WORDS[_s + "s"] = ("shape", _s)
_WORDS.update({"circular": ("shape", "circle"), "round": ("shape", "circle"), "disc": ("shape", "circle"),
               "discs": ("shape", "circle"), "disk": ("shape", "circle"), "disks": ("shape", "circle"),
               "triangular": ("shape", "triangle"), "squared": ("shape", "square")})
for _c in COLOURS:
    _WORDS[_c] = ("colour", _c)
for _b in BACKGROUNDS:
    _WORDS[_b] = ("background", _b)
_WORDS.update({"grey": ("background", "gray")})
_WORDS.update({"small": ("size", "small"), "little": ("size", "small"), "tiny": ("size", "small"),
               "large": ("size", "large"), "big": ("size", "large"), "huge": ("size", "large")})
_WORDS.update({"left": ("position", "left"), "right": ("position", "right"), "center": ("position", "center"),
               "centre": ("position", "center"), "middle": ("position", "center"),
               "centered": ("position", "center"), "centred": ("position", "center"),
               "sides": ("position", PAIR_POSITION)})
_WORDS.update({"one": ("count", 1), "single": ("count", 1), "1": ("count", 1), "two": ("count", 2),
               "2": ("count", 2), "pair": ("count", 2)})


def attributes_of_prompt(text: str) -> Dict[str, Union[str, int, Tuple]]:
    """Which attributes a prompt (or negative prompt) names: {"colour": "red", "shape": "circle", ...}.

    Words are matched whole and case-insensitively, with a few synonyms (grey, centre/middle, big/little,
    round/disc, single/pair). Shape colours and background colours are disjoint, so "black", "white", "gray"
    always name the background, with or without the word "background"; a shape colour followed by
    "background" ("red background") names no attribute, since no background has that colour. "left and right"
    (or "both sides") is the position of two shapes. An attribute named with two different values gets a tuple
    of them in order of appearance ("red or blue" -> {"colour": ("red", "blue")}): ``matches`` and ``shows``
    read a tuple as "any of". Words the world does not know (including "a", "shape", "background") are ignored.
    """
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    found: Dict[str, list] = {}
    for i, tok in enumerate(tokens):
        hit = _WORDS.get(tok)
        if hit is None:
            continue
        key, value = hit
        if key == "colour" and i + 1 < len(tokens) and tokens[i + 1] in ("background", "backdrop", "backgrounds"):
            continue
        found.setdefault(key, [])
        if value not in found[key]:
            found[key].append(value)
    pos = found.get("position")
    if pos and "left" in pos and "right" in pos:
        rest = [p for p in pos if p not in ("left", "right", PAIR_POSITION)]
        found["position"] = [PAIR_POSITION] + rest
    return {k: (v[0] if len(v) == 1 else tuple(v)) for k, v in found.items()}


# ----------------------------------------------------------------------------------------------------------
# Reader

def _run_max(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every pixel of each horizontal run of foreground pixels takes the run's maximum label ([N, H, W])."""
    m = mask.reshape(-1)
    left = torch.zeros_like(mask)
    left[:, :, 1:] = mask[:, :, :-1]
    rid = torch.cumsum((mask & ~left).reshape(-1), 0)[m] - 1
    vals = labels.reshape(-1)[m]
    runmax = torch.zeros(int(rid[-1]) + 1 if rid.numel() else 0, dtype=labels.dtype)
    runmax = runmax.scatter_reduce(0, rid, vals, "amax", include_self=False)
    out = labels.clone().reshape(-1)
    out[m] = runmax[rid]
    return out.view_as(labels)


def _connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-neighbour connected components of a bool mask [N, H, W]: int64 labels (0 = background), each
    component labelled by the largest flat index + 1 of its pixels. Label propagation until nothing changes:
    each round spreads the maximum label along horizontal runs, along vertical runs, then to the 8 neighbours
    (a 3x3 max-pool restricted to the mask); a convex shape settles in two or three rounds."""
    n, h, w = mask.shape
    full = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w) * mask
    rows, cols = mask.any(2).any(0).nonzero().flatten(), mask.any(1).any(0).nonzero().flatten()
    if rows.numel() == 0:
        return full.long()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    mask = mask[:, y0:y1, x0:x1].contiguous()  # the work is on the rows and columns that have foreground
    fg = mask.unsqueeze(1).float()
    labels = full[:, y0:y1, x0:x1].contiguous()
    while True:
        new = _run_max(labels, mask)
        new = _run_max(new.transpose(1, 2).contiguous(), mask.transpose(1, 2).contiguous()).transpose(1, 2)
        new = (F.max_pool2d(new.unsqueeze(1), 3, stride=1, padding=1) * fg).squeeze(1)
        if torch.equal(new, labels):
            full[:, y0:y1, x0:x1] = labels
            return full.long()
        labels = new


def _nearest(rgb: torch.Tensor, palette: Dict[str, Tuple[float, float, float]]) -> List[str]:
    """Name of the palette colour nearest (RGB, Euclidean) to each row of ``rgb`` [N, 3]."""
    names = list(palette)
    table = torch.tensor([palette[k] for k in names], dtype=rgb.dtype)
    return [names[j] for j in torch.cdist(rgb, table).argmin(1).tolist()]


def _template_iou(masks: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """IoU of each component mask [K, H, W] with a circle, a square and a triangle (apex up) of the same area
    and centroid: [K, 3]. The radius of each template is returned by ``_radius_of_area``."""
    k, h, w = masks.shape
    yy = (torch.arange(h, dtype=torch.float32) + 0.5).view(1, h, 1)
    xx = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, 1, w)
    cx, cy = cx.view(k, 1, 1), cy.view(k, 1, 1)
    out = []
    for shape in SHAPES:
        r = _radius_of_area(shape, area).view(k, 1, 1)
        centre_y = cy - r / 3.0 if shape == "triangle" else cy  # a triangle's centroid is r/3 below its box centre
        tmpl = _signed_distance(shape, xx - cx, yy - centre_y, r) < 0
        inter = (tmpl & masks).sum((1, 2)).float()
        union = (tmpl | masks).sum((1, 2)).float()
        out.append(inter / union.clamp_min(1.0))
    return torch.stack(out, 1)


def _radius_of_area(shape: str, area: torch.Tensor) -> torch.Tensor:
    """Radius (circle), half-side (square) or half-base (triangle) of the shape with this area."""
    area = area.float()
    if shape == "circle":
        return torch.sqrt(area / math.pi)
    if shape == "square":
        return torch.sqrt(area) / 2.0
    return torch.sqrt(area / 2.0)


def read_attributes(images: torch.Tensor, spec: WorldSpec = DEFAULT_SPEC, min_area: Optional[int] = None,
                    smooth: bool = True, threads: Optional[int] = 1) -> List[Attributes]:
    """The six attributes of each image [N, 3, H, W] in [-1, 1], read from pixels; None where undetermined.

    * background: palette colour nearest to the per-channel median of the 2-pixel border ring.
    * foreground: pixels farther than 0.25 (RGB in [0, 1]) from that median are candidates; their median is the
      foreground colour; a pixel is foreground when its projection on the background->foreground axis is past
      the midpoint. colour: palette colour nearest to the median of the core (projection > 0.8) pixels.
    * count: 8-connected foreground components of at least ``min_area`` pixels (default: a third of the smallest
      shape's area); no component -> every attribute but the background is None.
    * shape (of the largest component): the best intersection-over-union with a circle, a square and an
      apex-up triangle of the component's area and centroid. size: that template's radius against the
      midpoint of the small and large radii. position: centroid x of a single component against the midpoints
      of the left/center/right positions; several components -> "sides" when the leftmost is left and the
      rightmost right, else None. "sides" is a value of its own: it does not match "left" or "right".

    ``smooth``: make the decisions on a 3x3 box-smoothed copy (robust to noise; off only for diagnostics).
    ``threads``: torch CPU threads during the call (restored after; None leaves torch's setting alone).
    Images of another size than ``spec.image_size`` are read with the spec's geometry scaled to their width.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if min_area is None:
        r_small = (spec.small_radius - spec.radius_jitter) * images.shape[-1] / spec.image_size
        min_area = max(4, int(2.0 * r_small * r_small / 3.0))  # a third of the smallest triangle
    with _threads(threads):
        # Chunks: bounded memory, and faster than one big batch.
        return [r for s in range(0, images.shape[0], 256) for r in _read(images[s:s + 256], spec, min_area, smooth)]


def _read(images: torch.Tensor, spec: WorldSpec, min_area: int, smooth: bool) -> List[Attributes]:
    x = ((images.detach().float().cpu() + 1.0) * 0.5).clamp(0, 1)  # [N, 3, H, W] in [0, 1]
    n, _, h, w = x.shape
    scale = w / spec.image_size
    size_cut = (spec.small_radius + spec.large_radius) / 2.0 * scale
    px = [f * w for f in spec.position_fractions]
    x_cuts = ((px[0] + px[1]) / 2.0, (px[1] + px[2]) / 2.0)

    border = torch.ones(h, w, dtype=torch.bool)
    border[2:-2, 2:-2] = False
    bg = x[:, :, border].median(dim=2).values  # [N, 3]
    # Decisions on a 3x3 box-smoothed copy (noise std / 3); the straight edges stay where they are.
    xs_ = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) if smooth else x
    diff = xs_ - bg.view(n, 3, 1, 1)
    candidate = (diff * diff).sum(1) > 0.25 ** 2  # [N, H, W]
    flat = xs_.flatten(2)  # [N, 3, HW]
    nan = torch.tensor(float("nan"))
    fg = torch.where(candidate.flatten(1).unsqueeze(1), flat, nan).nanmedian(dim=2).values  # [N, 3], nan if none
    axis = fg - bg
    t = (diff * axis.view(n, 3, 1, 1)).sum(1) / (axis * axis).sum(1).clamp_min(1e-6).view(n, 1, 1)
    has_fg = candidate.flatten(1).sum(1) >= min_area
    masks = (t > 0.5) & has_fg.view(n, 1, 1)
    core = (t > 0.8) & masks
    core_rgb = torch.where(core.flatten(1).unsqueeze(1), flat, nan).nanmedian(dim=2).values
    fg_rgb = torch.where(torch.isnan(core_rgb), fg, core_rgb)

    labels = _connected_components(masks).flatten(1)  # [N, HW]
    hw = h * w
    gid = (torch.arange(n).view(n, 1) * (hw + 1) + labels)[labels > 0]
    ys = (torch.arange(hw) // w).float().expand(n, hw)[labels > 0] + 0.5
    xs = (torch.arange(hw) % w).float().expand(n, hw)[labels > 0] + 0.5
    comp_ids, inverse, areas = torch.unique(gid, return_inverse=True, return_counts=True)
    k_all = comp_ids.numel()
    cx = torch.zeros(k_all).index_add_(0, inverse, xs) / areas.clamp_min(1)
    cy = torch.zeros(k_all).index_add_(0, inverse, ys) / areas.clamp_min(1)
    keep = areas >= min_area
    comp_ids, areas, cx, cy = comp_ids[keep], areas[keep], cx[keep], cy[keep]
    img_of = comp_ids // (hw + 1)
    lab_of = comp_ids % (hw + 1)

    shape_idx = torch.zeros(comp_ids.numel(), dtype=torch.long)
    radius = torch.zeros(comp_ids.numel())
    for s in range(0, comp_ids.numel(), 512):
        sl = slice(s, s + 512)
        cm = (labels[img_of[sl]] == lab_of[sl].view(-1, 1)).view(-1, h, w)
        iou = _template_iou(cm, cx[sl], cy[sl], areas[sl])
        shape_idx[sl] = iou.argmax(1)
    for j, shape in enumerate(SHAPES):
        sel = shape_idx == j
        radius[sel] = _radius_of_area(shape, areas[sel])

    per_image: List[list] = [[] for _ in range(n)]
    for k, i in enumerate(img_of.tolist()):
        per_image[i].append(k)
    area_l, cx_l, shape_l, radius_l = areas.tolist(), cx.tolist(), shape_idx.tolist(), radius.tolist()

    def where(c: float) -> str:
        return "left" if c < x_cuts[0] else ("right" if c > x_cuts[1] else "center")

    bg_names = _nearest(bg, spec.backgrounds)
    fg_names = _nearest(fg_rgb.nan_to_num(0.0), spec.colours)
    out: List[Attributes] = []
    for i in range(n):
        read: Attributes = {k: None for k in ATTRIBUTES}
        read["background"] = bg_names[i]
        comps = per_image[i]
        if comps:
            big = max(comps, key=lambda k: area_l[k])
            read["count"] = len(comps)
            read["colour"] = fg_names[i]
            read["shape"] = SHAPES[shape_l[big]]
            read["size"] = "large" if radius_l[big] > size_cut else "small"
            if len(comps) == 1:
                read["position"] = where(cx_l[big])
            else:
                order = sorted(cx_l[k] for k in comps)
                if where(order[0]) == "left" and where(order[-1]) == "right":
                    read["position"] = PAIR_POSITION
        out.append(read)
    return out


def _as_options(value) -> tuple:
    return value if isinstance(value, (tuple, list, set, frozenset)) else (value,)


def matches(read: Attributes, wanted: dict) -> bool:
    """True when the read image has every attribute in ``wanted`` (a tuple value: any of its values).
    An attribute the reader could not determine (None) does not match."""
    return all(read.get(k) is not None and read.get(k) in _as_options(v) for k, v in wanted.items()
               if not k.startswith("_"))


def shows(read: Attributes, attribute_dict: dict) -> bool:
    """True when the read image shows ANY of the attributes in ``attribute_dict`` (e.g. those a negative
    prompt names): "free of the negative" is ``not shows(read, attributes_of_prompt(negative))``. An attribute
    the reader could not determine (None) is not shown; an empty dict is never shown."""
    return any(read.get(k) is not None and read.get(k) in _as_options(v) for k, v in attribute_dict.items()
               if not k.startswith("_"))


def attribute_accuracy(reads: Sequence[Attributes], truths: Sequence[dict]) -> Dict[str, float]:
    """Per-attribute share of reads equal to the truth, plus ``"all"`` (every attribute right)."""
    n = max(1, len(truths))
    acc = {k: sum(r.get(k) == t.get(k) for r, t in zip(reads, truths)) / n for k in ATTRIBUTES}
    acc["all"] = sum(all(r.get(k) == t.get(k) for k in ATTRIBUTES) for r, t in zip(reads, truths)) / n
    return acc


__all__ = [
    "ATTRIBUTES", "BACKGROUNDS", "BACKGROUND_RGB", "COLOURS", "COLOUR_RGB", "COUNTS", "DEFAULT_SPEC",
    "PAIR_POSITION", "POSITIONS", "SHAPES", "SIZES", "VOCAB", "WorldSpec", "attribute_accuracy",
    "attributes_of_prompt", "batch_for_step", "caption", "caption_all", "matches", "perturb", "public",
    "read_attributes", "render", "sample_attributes", "sample_batch", "shows", "to_uint8_hwc",
]
