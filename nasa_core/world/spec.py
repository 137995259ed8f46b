"""The world's vocabulary, its priors and every number of its geometry (``WorldSpec``), and the named worlds.

Two worlds are defined:

* ``"v1"``: the world the models bundled before issue 12 learnt. Every attribute uniform and independent,
  shapes of radius 7 / 12 px, no quality attribute (every image clean), and the article "a" names nothing.
* ``"v2"`` (the default): a world with the biases real data has, so that a plain prompt leaves the unwanted
  feature in most images (as "a photo of a person" mostly gives a man). Each attribute a caption leaves out
  follows a skewed prior, independent of the others:

  ========== ======================================================= =================================
  attribute  prior                                                    the benchmark negative it feeds
  ========== ======================================================= =================================
  shape      circle 0.6, square 0.2, triangle 0.2                     "circle"
  colour     red 0.6, green / blue / yellow 0.4 / 3 each              "red"
  background black 0.6, white 0.2, gray 0.2                           "black background"
  size       large 0.6, small 0.4                                     "large"
  position   (one shape) center 0.6, left 0.2, right 0.2              "in the center"
  count      two 0.6, one 0.4                                         "two shapes"
  quality    clean 0.4, blurry 0.2, noisy 0.15, washed out 0.15,      "low quality, blurry, ..."
             cut off 0.1 (0.6 degraded)
  ========== ======================================================= =================================

  So a model that learnt the world shows each benchmark negative in about 60% of plain samples (the issue
  asks for 55-80%; the paper's plain models keep the unwanted feature in 56-77%). Shapes are larger (radius
  8 / 12.5 px +-1, at least 2 px from the border: a small shape is 14-18 px wide, a large one 23-27 px; two
  large shapes keep a gap of at least 5 px), and a share of the
  images is degraded the way real training data is (``render`` applies it):

  * blurry: a Gaussian blur of sigma 2-2.8 px;
  * noisy: Gaussian pixel noise of std 0.25-0.35 (in [-1, 1] units; about half of it survives the latent);
  * washed out: the shape's colour mixed half-way to its own grey (luminance); backgrounds are grey levels
    already and stay as they are;
  * cut off: the shapes moved up so that 25-45% of their height lies above the top edge.

  Captions name quality like the other attributes (probability ``p_name``): "high quality" for a clean
  image; for a degraded one its own word ("blurry", "noisy", "washed out", "cut off"), "low quality",
  "worst quality", or both (", blurry, low quality"). With the count left out the caption has no article
  ("red circle on a white background"); "a" / "one" name one shape, "two" names two.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import torch

# ----------------------------------------------------------------------------------------------------------
# Vocabulary

SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: Tuple[str, ...] = ("red", "green", "blue", "yellow")
BACKGROUNDS: Tuple[str, ...] = ("black", "white", "gray")
SIZES: Tuple[str, ...] = ("small", "large")
POSITIONS: Tuple[str, ...] = ("left", "center", "right")
PAIR_POSITION = "sides"  # the position of two shapes (one left, one right)
COUNTS: Tuple[int, ...] = (1, 2)
CLEAN = "clean"
DEGRADATIONS: Tuple[str, ...] = ("blurry", "noisy", "washed out", "cut off")
QUALITIES: Tuple[str, ...] = (CLEAN,) + DEGRADATIONS
ATTRIBUTES: Tuple[str, ...] = ("shape", "colour", "background", "size", "position", "count", "quality")

VOCAB: Dict[str, Tuple] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "background": BACKGROUNDS,
    "size": SIZES,
    "position": POSITIONS + (PAIR_POSITION,),
    "count": COUNTS,
    "quality": QUALITIES,
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

# The attributes drawn from a categorical prior (count is a Bernoulli draw; quality only where the world has it).
CATEGORICAL = ("shape", "colour", "background", "size", "position")

V2_PRIORS: Dict[str, Tuple[float, ...]] = {
    "shape": (0.6, 0.2, 0.2),
    "colour": (0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3),
    "background": (0.6, 0.2, 0.2),
    "size": (0.4, 0.6),                 # small, large
    "position": (0.2, 0.6, 0.2),        # left, center, right (a single shape)
    "count": (0.4, 0.6),                # one, two
    "quality": (0.4, 0.2, 0.15, 0.15, 0.1),
}


QUALITY_NEGATIVE = "worst quality, low quality, blurry, noisy, washed out, cut off"
# The removal benchmark's (positive, negative) pairs: world v1's six (uniform priors, little room to remove),
# and world v2's eight, one per skewed prior, each negative the prior's dominant value, so a model that learnt
# the world shows it in about 60% of plain samples.
V1_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("a shape", "red"),
    ("a shape on a white background", "circle"),
    ("a large shape", "blue"),
    ("a square", "black background"),
    ("a small shape", "on the left"),
    ("two shapes", "yellow"),
)
V2_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("a shape", "red"),                                   # colour
    ("a shape on a white background", "circle"),          # shape
    ("a red shape", "black background"),                  # background
    ("a triangle", "large"),                              # size
    ("a blue shape", "in the center"),                    # position
    ("green square", "two shapes"),                       # count
    ("a yellow shape", QUALITY_NEGATIVE),                 # quality: the generic quality negative
    ("a square on a gray background", "worst quality, low quality"),  # quality
)


@dataclass(frozen=True)
class WorldSpec:
    """Every number of a world. The reader takes the same spec to place its thresholds."""
    name: str = "v2"
    image_size: int = 64
    small_radius: float = 8.0
    large_radius: float = 12.5
    radius_jitter: float = 1.0
    position_fractions: Tuple[float, float, float] = (0.25, 0.5, 0.75)  # x of left, center, right
    y_fraction: float = 0.5
    position_jitter: float = 3.0
    colour_jitter: float = 10.0 / 255.0
    border_margin: float = 2.0  # uncut shapes keep at least this many pixels from the image border
    p_count2: float = 0.6
    # Probabilities per value of VOCAB[attribute] (position: of a single shape, over POSITIONS); an attribute
    # missing here is uniform. No "quality" entry: every image is clean and captions never name quality.
    priors: Dict[str, Tuple[float, ...]] = field(default_factory=lambda: dict(V2_PRIORS), hash=False)
    article_names_count: bool = True  # "a" names one shape; a caption leaving the count out has no article
    blur_sigma: Tuple[float, float] = (2.0, 2.8)
    noise_sigma: Tuple[float, float] = (0.25, 0.35)
    washout: float = 0.5
    cut_fraction: Tuple[float, float] = (0.25, 0.45)
    colours: Dict[str, Tuple[float, float, float]] = field(default_factory=lambda: dict(COLOUR_RGB), hash=False)
    backgrounds: Dict[str, Tuple[float, float, float]] = field(default_factory=lambda: dict(BACKGROUND_RGB),
                                                               hash=False)

    def radius(self, size: str) -> float:
        return self.small_radius if size == "small" else self.large_radius

    def x_of(self, position: str) -> float:
        return self.position_fractions[POSITIONS.index(position)] * self.image_size

    @property
    def has_quality(self) -> bool:
        return "quality" in self.priors

    def prior(self, attribute: str) -> Optional[Tuple[float, ...]]:
        return self.priors.get(attribute)


V1_SPEC = WorldSpec(name="v1", small_radius=7.0, large_radius=12.0, p_count2=0.5, priors={},
                    article_names_count=False, border_margin=1.0)
V2_SPEC = WorldSpec()
DEFAULT_SPEC = V2_SPEC
WORLDS: Dict[str, WorldSpec] = {"v1": V1_SPEC, "v2": V2_SPEC}
BENCHMARK_PAIRS: Dict[str, Tuple[Tuple[str, str], ...]] = {"v1": V1_PAIRS, "v2": V2_PAIRS}


def world_spec(name: str) -> WorldSpec:
    """The world named ``name`` (what a trainer's ``--world`` takes, and what a checkpoint's metadata says)."""
    if isinstance(name, WorldSpec):
        return name
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; known: {sorted(WORLDS)}")
    return WORLDS[name]


# ----------------------------------------------------------------------------------------------------------
# Random numbers

@contextlib.contextmanager
def threads(n: Optional[int]):
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


def generator(seed_or_generator: SeedOrGenerator) -> torch.Generator:
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    return torch.Generator().manual_seed(int(seed_or_generator) & 0xFFFF_FFFF_FFFF_FFFF)


def mix(seed: int, step: int) -> int:
    """splitmix64 of (seed, step): distinct, well-spread generator seeds for each training step."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(step) + 0x632BE59BD9B4E019) & 0xFFFF_FFFF_FFFF_FFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFF_FFFF_FFFF_FFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFF_FFFF_FFFF_FFFF
    return (x ^ (x >> 31)) & 0x7FFF_FFFF_FFFF_FFFF
