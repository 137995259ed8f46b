"""What the cross-attention DiT adapters share (PixArt, Wan, LTX-Video, Kandinsky 5): DiTs whose text
cross-attention is a module of its own in every block.

Each block holds a cross-attention module (``blocks.<i>.cross_attn`` and the like) fed by the text after the
model's text embedder (PixArt, Wan: a small MLP from T5's 4096 to the model width). ComfyUI offers no replace slot
inside that module, so NASA goes in as an object patch (``ModelPatcher.add_object_patch``) of each chosen block's
module: a ``NASAObjectCrossAttention`` (a ``comfy_runtime.NASAObjectPatch``) that

* exposes the replaced module's children under the same names, so ComfyUI still finds
  ``blocks.<i>.cross_attn.<linear>.weight`` for LoRA and offloading, and holds the replaced module itself
  outside the module tree (it is restored by ComfyUI when the patch comes off);
* with no NASA decision for this call, just calls the module it replaced (bit-identical);
* with a decision, computes the query projection once for both halves: Z+ from the positive keys, Z- from
  the negative's keys, Z+ - alpha * Z- before the output projection (the stock module, exact class only;
  ``comfy_runtime.steer_rows``);
* when another object patch already held the slot, calls it for Z+ (already output-projected) and subtracts
  alpha * W_out Z- (no bias, ``subtract_projected``): the chained occupant keeps working.

The negative goes through the model's own text embedder once per call, then through each block's own key and
value projections (Wan: and its key RMSNorm), and both stages are kept in the run's one cache between steps while
the negative and the weights are the same (``comfy_runtime.NegativeCache``).

The per-call decision (``NASACallState``) comes from ``NASARun``. Wan passes ``transformer_options`` down to the
cross-attention (from v0.3.60); PixArt does not, so ``StatePublisher`` (an ``APPLY_MODEL`` wrapper from
``comfy.patcher_extension``) publishes the decision in a ``ContextVar`` for the duration of the call and resets it
in ``finally`` (nested and concurrent calls each see their own).

A family is a ``CrossAttentionAdapter``: where its blocks and their cross-attention are, its text embedder, its
stock classes and its patch's ``forward``; ``install_cross_attention`` is the one install path.
"""
from __future__ import annotations

import contextvars
import math
from typing import Callable, List, Optional, Tuple

import torch

from ..attention import NASAInputError
from .base import NASAAdapter, NASASettings, chosen_positions, third_of
from .comfy_runtime import (NASACallState, NASAObjectPatch, NegativeCache, check_negative_width, install_patch,
                            install_wrapper, occupants, steer_rows)

# state_key -> NASACallState of the denoiser call in progress (PixArt: no transformer_options inside the blocks)
_ACTIVE_STATES: contextvars.ContextVar = contextvars.ContextVar("comfyui_nasa_active_states", default=None)


block_group = third_of  # DiTs have no down/middle/up blocks: a block answers to its third ("input", ...)


def chosen_blocks(depth: int, blocks, family: str) -> List[int]:
    """The blocks of a cross-attention DiT NASA acts in: the one rule of base.chosen_positions, each block
    answering to its third; the default is every block."""
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


class NASAObjectCrossAttention(NASAObjectPatch):
    """Base of the per-family object patches. ``original`` is the family's stock module (its projections are
    used for the query and the negative), ``previous`` what occupied the slot before (None: the stock module);
    ``stock_class``: the class (or classes) whose computation the patch knows, else it chains the occupant."""

    def __init__(self, run, cache: Optional[NegativeCache], layer_key: str, group: str, original, previous, embedder,
                 embed: Callable, stock_class):
        super().__init__(original, previous)
        # outside the module tree: ComfyUI must see one copy of each weight, under the children's names
        object.__setattr__(self, "embedder", embedder)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "cache", cache)
        object.__setattr__(self, "embed", embed)  # may be the embedder module itself
        self.layer_key = layer_key
        self.group = group
        stock = stock_class if isinstance(stock_class, tuple) else (stock_class,)
        self.fast = previous is None and type(original) in stock  # else: chain the occupant

    def active_state(self, transformer_options=None) -> Optional[NASACallState]:
        self.run.layer_calls += 1
        return current_state(self.run.state_key, transformer_options)

    def check_negative(self, k_neg: torch.Tensor, q: torch.Tensor):
        check_negative_width(self.layer_key, k_neg, q)

    def negative_kv(self, state: NASACallState, q: torch.Tensor, layer_modules, project: Callable):
        """(K-, V-) of this layer through the run's cache: ``project`` (this layer's projections, whose weights are
        ``layer_modules``) of the negative after the text embedder."""
        return self.cache.negative_kv(self.layer_key, state, q.dtype, q.device, self.embedder, self.embed,
                                      layer_modules, project)


# ---------------------------------------------------------------------------------------------------------
# The one install path


def install_cross_attention(model_patcher, run, patch_class, layers, embedder, stock, embed: Optional[Callable] = None,
                            cached: bool = True, publish_state: bool = True,
                            configure: Optional[Callable] = None) -> int:
    """Install NASA into a cross-attention DiT: a ``patch_class`` object patch over each chosen layer's module
    (``layers``: (module path, block index, block group)) and over whatever already holds it, the call wrapper, and,
    with ``publish_state``, the ``StatePublisher`` for releases whose blocks pass no ``transformer_options`` to their
    cross-attention. ``embedder``/``embed``: the model's text embedder and the call that embeds the negative with it
    (default: the embedder itself); ``cached``: the patches keep the negative's projections in the run's cache
    (False where they change every step); ``configure(patch)``, if given, is called on every new patch. Returns how
    many layers it patched."""
    cache = run.cache if cached else None
    embed = embedder if embed is None else embed
    for key, _, group in layers:
        def make(original, previous, key=key, group=group):
            patch = patch_class(run, cache, key, group, original, previous, embedder, embed, stock)
            if configure is not None:
                configure(patch)
            return patch
        install_patch(model_patcher, run, "object", key, make)
    install_wrapper(model_patcher, run)
    if publish_state:
        install_state_publisher(model_patcher, run.state_key)
    return len(layers)


class CrossAttentionAdapter(NASAAdapter):
    """One cross-attention DiT family, described: ``blocks_path`` (the blocks in run order), ``block_layers`` (each
    block's text cross-attention modules; LTX-2 has a video and an audio one), ``embedder_path`` (the text embedder
    the negative goes through first), ``patch_class`` (its object patch, with the family's forward),
    ``stock_classes()`` (the modules the patch computes for itself), ``publish_state`` (whether some release's
    blocks pass no ``transformer_options`` to the cross-attention), ``cached``, and ``configure`` for what each
    patch must know from the settings. ``matches`` and ``context_width`` are the family's own."""

    blocks_path = "diffusion_model.blocks"
    block_layers: Tuple[str, ...] = ("cross_attn",)
    embedder_path: str = ""
    patch_class: type = NASAObjectCrossAttention
    publish_state = True
    cached = True  # the negative's projections kept between steps (False where they change with the timestep)

    def stock_classes(self) -> tuple:
        raise NotImplementedError

    def text_embedder(self, model_patcher):
        return model_patcher.get_model_object(self.embedder_path)

    def embed(self, embedder) -> Callable:
        """How the negative goes through the embedder (default: the embedder called on it)."""
        return embedder

    def configure(self, model_patcher, settings: NASASettings) -> Optional[Callable]:
        """A function given each new patch of this install (its per-install settings), or None."""
        return None

    def depth(self, model_patcher) -> int:
        import comfy.utils
        return len(comfy.utils.get_attr(model_patcher.model, self.blocks_path))

    def all_stock(self, model_patcher, classes) -> bool:
        """Whether every block's cross-attention modules are ``classes`` underneath NASA's patches (also while a
        patched clone of this model is loaded)."""
        return all(isinstance(occupants(model_patcher, f"{self.blocks_path}.{i}.{name}")[0], classes)
                   for i in range(self.depth(model_patcher)) for name in self.block_layers)

    def layers(self, model_patcher, blocks) -> List[Tuple[str, int, str]]:
        """(object-patch key, block index, block group) of every chosen block's layers: the one rule of
        base.chosen_positions, each block answering to its third; the default is every block."""
        depth = self.depth(model_patcher)
        return [(f"{self.blocks_path}.{i}.{name}", i, block_group(i, depth))
                for i in chosen_blocks(depth, blocks, self.family) for name in self.block_layers]

    def install(self, model_patcher, settings: NASASettings, run) -> int:
        embedder = self.text_embedder(model_patcher)
        configure = self.configure(model_patcher, settings)
        layers = self.layers(model_patcher, settings.blocks)
        return install_cross_attention(model_patcher, run, self.patch_class, layers, embedder, self.stock_classes(),
                                       self.embed(embedder), cached=self.cached, publish_state=self.publish_state,
                                       configure=configure)


__all__ = ["CrossAttentionAdapter", "NASAObjectCrossAttention", "StatePublisher", "block_group", "chosen_blocks",
           "current_state", "install_cross_attention", "install_state_publisher", "negative_key_mask",
           "negative_valid", "subtract_projected", "tag_negative_mask"]
