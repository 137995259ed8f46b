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

    def __post_init__(self):
        alpha = check_alpha(self.alpha)
        if not isinstance(alpha, float):
            raise NASAInputError("a model patch takes one alpha; per-element scales come with NASA Negative Conditioning")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise NASAInputError(f"the sigma range must satisfy 0 <= start_percent <= end_percent <= 1, "
                                 f"got start {self.start_percent}, end {self.end_percent}")
        unknown = set(self.blocks) - ALL_BLOCKS - JOINT_BLOCKS
        if unknown or not self.blocks:
            raise NASAInputError(f"blocks must be a non-empty subset of {sorted(ALL_BLOCKS)} (UNet) or "
                                 f"{sorted(JOINT_BLOCKS)} (FLUX/SD3), got {sorted(self.blocks)}")
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
