"""Training and evaluation batches: images, attribute dicts and captions from one generator, and the batch
of a training step as a pure function of (seed, step)."""
from __future__ import annotations

from typing import List, Tuple

import torch

from .captions import caption
from .render import render, sample_attributes
from .spec import ATTRIBUTES, DEFAULT_SPEC, Attributes, SeedOrGenerator, WorldSpec, generator, mix


def sample_batch(seed_or_generator: SeedOrGenerator, n: int, spec: WorldSpec = DEFAULT_SPEC,
                 p_name: float = 0.5) -> Tuple[torch.Tensor, List[dict], List[str]]:
    """(images [n, 3, H, W] in [-1, 1], attribute dicts, captions), all from one generator."""
    g = generator(seed_or_generator)
    attrs = sample_attributes(g, n, spec)
    captions = [caption(a, g, p_name, spec) for a in attrs]
    return render(attrs, spec), attrs, captions


def batch_for_step(seed: int, step: int, n: int, spec: WorldSpec = DEFAULT_SPEC,
                   p_name: float = 0.5) -> Tuple[torch.Tensor, List[dict], List[str]]:
    """The training batch of ``step``: a function of (seed, step, n, spec) only, so training resumes at any step."""
    return sample_batch(torch.Generator().manual_seed(mix(seed, step)), n, spec, p_name)


def public(attrs: dict) -> Attributes:
    """The public attributes of a dict (drops private keys such as ``"_jitter"``); quality "clean" when the
    dict has none."""
    out = {k: attrs.get(k) for k in ATTRIBUTES}
    if out["quality"] is None:
        out["quality"] = "clean"
    return out
