"""The one small interface every model-family adapter implements, and the settings it receives."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import FrozenSet, Optional

import torch

from ..attention import NASAInputError, check_alpha

ALL_BLOCKS: FrozenSet[str] = frozenset({"input", "middle", "output"})
# Joint-attention DiTs (FLUX, SD3): "double" = blocks with separate text and image weights, "single" = FLUX's
# single-stream blocks. ALL_BLOCKS (the default) means "the family's default" there (see adapters/joint.py).
JOINT_BLOCKS: FrozenSet[str] = frozenset({"double", "single"})
# How the negative text stream advances through the joint blocks (adapters/joint.py explains each).
NEGATIVE_STREAMS = ("full+", "full", "kv")
# Words a block choice may hold besides the groups above and block indices (ints): every family reads them alike.
BLOCK_WORDS: FrozenSet[str] = frozenset({"default", "all"})


def parse_blocks(text: str) -> FrozenSet:
    """The Advanced node's ``blocks`` text: comma-separated ``default``, ``all``, ``input``/``middle``/``output``,
    ``double``/``single``, a block index (``3``) or an inclusive range (``0-9``); indices count NASA's blocks in the
    order the model runs them (UNet: its text cross-attention layers; DiTs: their blocks, FLUX's double blocks
    first)."""
    chosen = set()
    for part in (p.strip().lower() for p in str(text).split(",")):
        if not part:
            continue
        if part in BLOCK_WORDS or part in ALL_BLOCKS or part in JOINT_BLOCKS:
            chosen.add(part)
            continue
        lo, sep, hi = part.partition("-")
        if lo.strip().isdigit() and (not sep or hi.strip().isdigit()):
            a, b = int(lo), int(hi) if sep else int(lo)
            if b < a:
                raise NASAInputError(f"blocks: the range {part!r} runs backwards; write it low-high, e.g. {b}-{a}")
            chosen.update(range(a, b + 1))
            continue
        raise NASAInputError(f"blocks: {part!r} is not a block choice; use default, all, input, middle, output, "
                             "double, single, an index (3) or a range (0-9), separated by commas")
    if not chosen:
        raise NASAInputError("blocks is empty; write default (the family's default), all, or a choice such as 0-9")
    return frozenset(chosen)


def third_of(position: int, count: int) -> str:
    """The Advanced node's switches on a DiT, which has no down/middle/up blocks: the first, middle and last third of
    its ``count`` blocks in the order they run answer to "input", "middle" and "output"."""
    return ("input", "middle", "output")[min(position * 3 // max(count, 1), 2)]


def chosen_positions(labels, blocks, default, family: str):
    """The one block-selection rule of every adapter. ``labels[j]``: the names block j (in run order) answers to
    (its UNet group, its third of the DiT, double/single); ``default``: the family's default positions. The three
    switches of the Advanced node all on (ALL_BLOCKS, the nodes' default) mean the family's default."""
    blocks = frozenset(blocks)
    if blocks == ALL_BLOCKS:
        blocks = frozenset({"default"})
    known = set().union(*labels) if labels else set()
    chosen = set()
    for item in blocks:
        if isinstance(item, int):
            if not 0 <= item < len(labels):
                raise NASAInputError(f"blocks: block {item} does not exist; this {family} model has blocks "
                                     f"0-{len(labels) - 1} (in the order it runs them)")
            chosen.add(item)
        elif item == "all":
            chosen.update(range(len(labels)))
        elif item == "default":
            chosen.update(default)
        elif item in JOINT_BLOCKS and item not in known:
            raise NASAInputError(f"blocks: this {family} model has no {item} blocks; its blocks answer to "
                                 f"{sorted(known)}, all, default, or indices 0-{len(labels) - 1}")
        else:
            chosen.update(j for j, names in enumerate(labels) if item in names)
    return sorted(chosen)


class UnsupportedModelError(NASAInputError):
    """The model belongs to a family no adapter covers."""


@dataclass(frozen=True)
class NASASettings:
    """What a user asked for. ``negative`` is a model-wide negative ([1 or B, tokens, width]) or None
    when only per-prompt negatives (NASA Negative Conditioning) are to be used."""

    alpha: float = 0.1
    negative: Optional[torch.Tensor] = None
    start_percent: float = 0.0
    end_percent: float = 1.0
    blocks: FrozenSet[str] = field(default_factory=lambda: ALL_BLOCKS)
    # Joint-attention families only (extension beyond the paper): cap |alpha * Z-| at bound * |Z+| per image
    # token; None = off. And how the negative text stream advances (NEGATIVE_STREAMS).
    bound: Optional[float] = None
    negative_stream: str = "full+"
    # the model-wide negative's conditioning dict, for families whose text is more than one tensor (HiDream's
    # per-layer Llama states); the others read only ``negative``
    negative_extra: Optional[dict] = field(default=None, compare=False, hash=False)

    def __post_init__(self):
        alpha = check_alpha(self.alpha)
        if not isinstance(alpha, float):
            raise NASAInputError("a model patch takes one alpha; per-element scales come with NASA Negative Conditioning")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise NASAInputError(f"the sigma range must satisfy 0 <= start_percent <= end_percent <= 1, "
                                 f"got start {self.start_percent}, end {self.end_percent}")
        unknown = {b for b in self.blocks if not (isinstance(b, int) and not isinstance(b, bool) and b >= 0)
                   and b not in ALL_BLOCKS | JOINT_BLOCKS | BLOCK_WORDS}
        if unknown or not self.blocks:
            raise NASAInputError(f"blocks must be a non-empty set of {sorted(BLOCK_WORDS | ALL_BLOCKS | JOINT_BLOCKS)} "
                                 f"or block indices, got {sorted(map(str, self.blocks))}")
        if self.bound is not None and not (isinstance(self.bound, (int, float)) and math.isfinite(self.bound)
                                           and self.bound > 0):
            raise NASAInputError(f"bound must be a positive number (or None for off), got {self.bound!r}")
        if self.negative_stream not in NEGATIVE_STREAMS:
            raise NASAInputError(f"negative_stream must be one of {NEGATIVE_STREAMS}, got {self.negative_stream!r}")


class NASAAdapter:
    """One model family. ``matches`` says whether a ComfyUI MODEL is this family's; ``install`` puts NASA
    into an already cloned ModelPatcher through ComfyUI's own patch points, and returns how many
    layers it patched."""

    family = "unknown"

    def matches(self, model_patcher) -> bool:
        raise NotImplementedError

    def context_width(self, model_patcher) -> int:
        """The width of the text conditioning this model's cross-attention expects."""
        raise NotImplementedError

    def install(self, model_patcher, settings: NASASettings) -> int:
        raise NotImplementedError
