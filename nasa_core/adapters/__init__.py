"""Family adapters and the one entry point the nodes (and the trainer) call: ``apply_nasa``."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..attention import NASAInputError
from .base import ALL_BLOCKS, NASAAdapter, NASASettings, UnsupportedModelError
from .joint import FluxAdapter, SD3Adapter
from .joint_families import JOINT_ROWS_FAMILIES
from .joint_rows import RowsAdapter
from .kandinsky5 import Kandinsky5Adapter
from .ltx import LTX2Adapter, LTXVAdapter
from .pixart import PixArtAdapter
from .unet import UNetAdapter
from .wan import WanAdapter

ADAPTERS = [UNetAdapter(), FluxAdapter(), SD3Adapter(), PixArtAdapter(), WanAdapter()] + \
    [RowsAdapter(spec) for spec in JOINT_ROWS_FAMILIES] + \
    [Kandinsky5Adapter(), LTXVAdapter(), LTX2Adapter()]


def family_name(model_patcher) -> str:
    """The name ComfyUI gives the model's family (its model_config class, e.g. SDXL, Flux, SD3)."""
    inner = getattr(model_patcher, "model", None)
    config = getattr(inner, "model_config", None)
    if config is not None:
        return type(config).__name__
    return type(inner).__name__ if inner is not None else type(model_patcher).__name__


def adapter_for(model_patcher) -> NASAAdapter:
    for adapter in ADAPTERS:
        if adapter.matches(model_patcher):
            return adapter
    supported = ", ".join(a.family for a in ADAPTERS)
    raise UnsupportedModelError(
        f"NASA has no adapter for this model family ({family_name(model_patcher)}, diffusion model "
        f"{type(model_patcher.model.diffusion_model).__name__}). Supported: {supported}. "
        "Not covered: Stable Cascade, HunyuanDiT, AuraFlow, Chroma Radiance, Cosmos, Mochi, OmniGen and other "
        "families without an adapter here.")


def negative_tensor(conditioning, what: str = "negative") -> Optional[torch.Tensor]:
    """The text tensor of a one-entry CONDITIONING; None for an empty negative (no tokens or all zeros,
    e.g. ConditioningZeroOut), which means 'no NASA'."""
    if conditioning is None:
        return None
    if len(conditioning) != 1:
        raise NASAInputError(f"the {what} CONDITIONING has {len(conditioning)} entries; NASA takes one negative "
                             "(join texts with Conditioning (Concat) or one prompt, not Conditioning (Combine))")
    t = conditioning[0][0]
    if not isinstance(t, torch.Tensor) or t.dim() != 3:
        raise NASAInputError(f"the {what} CONDITIONING does not hold a [batch, tokens, width] text tensor")
    if t.shape[1] == 0 or not bool(t.any()):
        return None
    return t


def apply_nasa(model_patcher, negative: Optional[torch.Tensor], alpha: float, start_percent: float = 0.0,
               end_percent: float = 1.0, blocks=ALL_BLOCKS, bound: Optional[float] = None,
               negative_stream: str = "full+", negative_extra: Optional[dict] = None,
               reference: Optional[torch.Tensor] = None, reference_extra: Optional[dict] = None):
    """Return a clone of ``model_patcher`` with NASA installed; the input is never modified.

    ``reference`` (an extension beyond the paper; None: off): a prompt, usually the empty one, that every negative
    is measured from, Z = Z+ - alpha * (Z- - Z_ref), for the model-wide negative and NASA Negative Conditioning's
    alike. A negative's attention also carries what any prompt implies (the model's priors); the empty prompt's
    carries only that, so the difference is what the negative adds. Installed as a second NASA run under the
    main one, in the same layers and sigma window, at a second negative's cost (with ``bound``, each of the two
    terms is capped on its own)."""
    from .comfy_runtime import NASARun, wrong_width_message

    settings = NASASettings(alpha=alpha, negative=negative, start_percent=start_percent,
                            end_percent=end_percent, blocks=frozenset(blocks), bound=bound,
                            negative_stream=negative_stream, negative_extra=negative_extra)
    adapter = adapter_for(model_patcher)
    width = adapter.context_width(model_patcher)
    for tensor, what in ((negative, "negative"), (reference, "reference")):
        if tensor is not None and tensor.shape[-1] != width:
            raise NASAInputError(wrong_width_message(tensor.shape[-1], width, family_name(model_patcher), what))
    if reference is not None and (reference.dim() != 3 or reference.shape[0] != 1):
        raise NASAInputError(f"the NASA reference must be one prompt's conditioning, [1, tokens, width], got shape "
                             f"{tuple(reference.shape)}: encode one prompt (usually the empty one) with CLIP Text Encode")
    run_class = getattr(adapter, "run_class", NASARun)  # joint-attention adapters keep more per-call state
    patched = model_patcher.clone()
    if reference is not None:  # under the main run: its wrapper runs second, its patches give the main run's Z+
        ref_settings = dataclasses.replace(settings, negative=reference, negative_extra=reference_extra)
        ref_run = run_class(family_name(model_patcher), ref_settings, width)
        adapter.install(patched, ref_settings, ref_run)
    run = run_class(family_name(model_patcher), settings, width)
    count = adapter.install(patched, settings, run)
    if count == 0:
        raise NASAInputError(f"NASA found no text cross-attention layer in blocks {sorted(settings.blocks)} of this "
                             f"{family_name(model_patcher)} model; choose other blocks")
    if reference is not None:
        ref_run.follows = run
    return patched
