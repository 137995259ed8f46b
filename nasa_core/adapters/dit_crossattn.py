"""What the PixArt and Wan adapters share: DiTs whose text cross-attention is a module of its own.

In both families each block holds a cross-attention module (``blocks.<i>.cross_attn``) fed by the text after the
model's caption embedder (a small MLP from T5's 4096 to the model width). ComfyUI offers no replace slot inside
that module, so NASA goes in as an object patch (``ModelPatcher.add_object_patch``) of each block's
``cross_attn``: a ``NASAObjectCrossAttention`` that

* exposes the replaced module's children under the same names, so ComfyUI still finds
  ``blocks.<i>.cross_attn.<linear>.weight`` for LoRA and offloading, and holds the replaced module itself
  outside the module tree (it is restored by ComfyUI when the patch comes off);
* with no NASA decision for this call, just calls the module it replaced (bit-identical);
* with a decision, computes the query projection once for both halves: Z+ from the positive keys, Z- from
  the negative's keys, Z+ - alpha * Z- before the output projection (the stock module, exact class only;
  ``comfy_runtime.steer_rows``);
* when another object patch already held the slot, calls it for Z+ (already output-projected) and subtracts
  alpha * W_out Z- (no bias): the chained occupant keeps working.

The negative goes through the model's own caption embedder once per call, then through each block's own key and
value projections (Wan: and its key RMSNorm), and both stages are cached between steps while the negative and the
weights are the same (the run's one cache, ``comfy_runtime.NegativeCache``).

The per-call decision (``NASACallState``) comes from ``NASARun``. Wan passes ``transformer_options`` down to the
cross-attention; PixArt does not, so ``StatePublisher`` (an ``APPLY_MODEL`` wrapper from
``comfy.patcher_extension``) publishes the decision in a ``ContextVar`` for the duration of the call and resets it
in ``finally`` (nested and concurrent calls each see their own).
"""
from __future__ import annotations

import contextvars
import math
from typing import Callable, List, Optional

import torch

from ..attention import NASAInputError
from .comfy_runtime import NASACallState, NegativeCache, check_negative_width, steer_rows, weighted_modules

# state_key -> NASACallState of the denoiser call in progress (PixArt: no transformer_options inside the blocks)
_ACTIVE_STATES: contextvars.ContextVar = contextvars.ContextVar("comfyui_nasa_active_states", default=None)


def block_group(index: int, depth: int) -> str:
    """DiTs have no down/middle/up blocks: the first third of the blocks answers to "input", the middle third
    to "middle", the last third to "output" (the Advanced node's block switches)."""
    third = index * 3 // max(depth, 1)
    return ("input", "middle", "output")[min(third, 2)]


def chosen_blocks(depth: int, blocks, family: str) -> List[int]:
    """The blocks of a cross-attention DiT NASA acts in: the one rule of base.chosen_positions, each block
    answering to its third; the default is every block."""
    from .base import chosen_positions
    labels = [frozenset({block_group(i, depth)}) for i in range(depth)]
    return chosen_positions(labels, blocks, range(depth), family)


class StatePublisher:
    """APPLY_MODEL wrapper: makes the call's NASA decision visible to layers that get no transformer_options."""

    def __init__(self, state_key: str):
        self.state_key = state_key

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                 **kwargs):
        state = transformer_options.get(self.state_key)
        if state is None:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        token = _ACTIVE_STATES.set({**(_ACTIVE_STATES.get() or {}), self.state_key: state})
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            _ACTIVE_STATES.reset(token)


def install_state_publisher(model_patcher, state_key: str):
    import comfy.patcher_extension
    model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, f"comfyui_nasa_{state_key}",
                                       StatePublisher(state_key))


def current_state(state_key: str, transformer_options: Optional[dict]) -> Optional[NASACallState]:
    if transformer_options:
        state = transformer_options.get(state_key)
        if state is not None:
            return state
    published = _ACTIVE_STATES.get()
    return published.get(state_key) if published else None


# ---------------------------------------------------------------------------------------------------------
# Equation 9 over a chained occupant


def subtract_projected(out: torch.Tensor, q: torch.Tensor, k_neg, v_neg, heads: int, state: NASACallState, attend,
                       out_proj, neg_mask: Optional[torch.Tensor] = None, aligned: bool = False) -> torch.Tensor:
    """``out`` is an occupant's already output-projected Z+: subtract W_out (alpha * Z-) on the selected rows.
    W_out without its bias: out_proj(y) - out_proj(0), which keeps ComfyUI's casting and LoRA handling.
    ``q`` is [B, N, C] or per head [B, N, H, D] (Kandinsky 5); the attention output is [B, N, C] either way."""
    zeros = q.new_zeros(q.shape[0], q.shape[1], math.prod(q.shape[2:]))
    steered_zero = steer_rows(zeros.clone(), q, k_neg, v_neg, heads, state, attend, in_place=False,
                              neg_mask=neg_mask, aligned=aligned)  # -alpha*Z-
    return out + (out_proj(steered_zero) - out_proj(zeros[:, :1]))


# ---------------------------------------------------------------------------------------------------------
# The negative's padding


NEGATIVE_MASK_ATTR = "nasa_attention_mask"


def tag_negative_mask(negative: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Attach a CONDITIONING's ``attention_mask`` ([n, T], 1 = real token) to its text tensor, so an adapter whose
    text encoder pads with non-zero rows (LTX-Video's T5 pads to 128 tokens) can keep the padding out of Z-."""
    if attention_mask is not None:
        setattr(negative, NEGATIVE_MASK_ATTR, attention_mask)
    return negative


def negative_valid(negative: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """[1 or n, T] bool, which of the negative's tokens are real: ``attention_mask`` (its CONDITIONING's, 1 = real
    token) or the one attached to it (``tag_negative_mask``), else all-zero rows are padding (ComfyUI's zero
    padding); None when all are real."""
    mask = attention_mask if attention_mask is not None else getattr(negative, NEGATIVE_MASK_ATTR, None)
    if mask is not None:
        valid = mask.reshape(mask.shape[0], -1).to(device=negative.device) > 0
        if valid.shape[-1] != negative.shape[1] or valid.shape[0] not in (1, negative.shape[0]):
            raise NASAInputError(f"the negative's attention mask {tuple(mask.shape)} does not fit its "
                                 f"{negative.shape[1]} tokens (batch {negative.shape[0]})")
    else:
        valid = negative.abs().amax(dim=-1) > 0
    return None if bool(valid.all()) else valid


def negative_key_mask(valid: Optional[torch.Tensor], dtype, device) -> Optional[torch.Tensor]:
    """Additive key mask [n, 1, 1, T] hiding the negative's padding (the form ComfyUI's masked attention takes and
    LTX gives its own text mask: 0 for real tokens, -finfo.max for padding); None when nothing is hidden."""
    if valid is None:
        return None
    return ((valid.to(device=device, dtype=dtype) - 1) * torch.finfo(dtype).max)[:, None, None, :]


# ---------------------------------------------------------------------------------------------------------
# The object patch


class NASAObjectCrossAttention(torch.nn.Module):
    """Base of the per-family object patches. ``original`` is the family's stock module (its projections are
    used for the query and the negative), ``previous`` what occupied the slot before (None: the stock module)."""

    def __init__(self, run, cache: Optional[NegativeCache], layer_key: str, group: str, original, previous, embedder,
                 embed: Callable, stock_class: type):
        super().__init__()
        occupant = previous if previous is not None else original
        for name, child in occupant.named_children():  # same state-dict names as without the patch
            self.add_module(name, child)
        # outside the module tree: ComfyUI must see one copy of each weight, under the names above
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "occupant", occupant)
        object.__setattr__(self, "previous", previous)  # the chain NASARun.diagnose walks
        object.__setattr__(self, "embedder", embedder)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "cache", cache)
        object.__setattr__(self, "embed", embed)  # may be the embedder module itself
        self.layer_key = layer_key
        self.group = group
        self.fast = previous is None and type(original) is stock_class  # else: chain the occupant

    def __deepcopy__(self, memo):
        return self

    def active_state(self, transformer_options=None) -> Optional[NASACallState]:
        self.run.layer_calls += 1
        state = current_state(self.run.state_key, transformer_options)
        if state is None:
            return None
        return state

    def check_negative(self, k_neg: torch.Tensor, q: torch.Tensor):
        check_negative_width(self.layer_key, k_neg, q)


def occupants(model_patcher, key: str):
    """(stock module, current occupant or None) of an object-patch slot of this clone."""
    import comfy.utils
    previous = model_patcher.object_patches.get(key)
    original = model_patcher.object_patches_backup.get(key)
    if original is None:
        original = comfy.utils.get_attr(model_patcher.model, key)
    while isinstance(original, NASAObjectCrossAttention):  # live model still holds another clone's patch
        original = original.original
    return original, previous


__all__ = ["NASAObjectCrossAttention", "StatePublisher", "block_group", "chosen_blocks",
           "current_state", "install_state_publisher", "negative_key_mask", "negative_valid", "occupants",
           "steer_rows", "subtract_projected", "tag_negative_mask", "weighted_modules"]
