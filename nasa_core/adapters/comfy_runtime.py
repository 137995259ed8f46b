"""ComfyUI-side machinery every adapter shares.

How a run works:

* ``NASARun`` sits in ``model_options["model_function_wrapper"]`` (chaining whatever was there).
  For every denoiser call it decides, per batch element, which negative and which alpha apply: a
  per-prompt negative carried by the conditioning (``model_conds``, put there by NASA Negative
  Conditioning) wins; otherwise the model-wide negative applies to the positive (cond) chunks only, so
  the ordinary CFG negative is left alone. It puts that decision into ``transformer_options`` under a
  key of its own and, after the call, checks that some layer used it (no silent no-op).
* ``NASACrossAttentionPatch`` sits in one attention replace slot (chaining whatever was there). It
  projects the negative through the layer's own ``to_k``/``to_v`` (so LoRA-patched, quantised and
  offloaded weights go through ComfyUI's ops exactly like the positive) and applies equations 7-9.
* ``NegativeCache`` (one per run, ``NASARun.cache``) keeps each layer's negative K/V (and a DiT's embedded
  negative) between steps while the negative and the weights are unchanged; ``NASARun.release`` empties it when
  ComfyUI cleans up or unloads the model.
* ``steer_rows`` is the one steering step of every adapter: Z+ - alpha * Z- on the batch rows (and, for joint
  attention, the token rows) the call state selects, each row with its own alpha.
* ``install_patch`` puts each of NASA's patches into its slot (a replace slot or an object patch,
  ``NASAObjectPatch``) over whatever held it, and records it for ``NASARun.diagnose``.

State lives in the patch objects and in the per-call ``transformer_options``; the live model is never
modified, so nothing remains patched after a run, an error or an interrupt.
"""
from __future__ import annotations

import logging
import uuid
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import comfy.conds
import comfy.model_management
import comfy.ldm.modules.attention as comfy_attention

from ..attention import NASAInputError, check_alpha, negative_attention, steer_away

log = logging.getLogger("comfyui-nasa")

# Keys NASA Negative Conditioning adds to a prompt's model_conds; they reach the wrapper batched.
PROMPT_NEGATIVE_KEY = "nasa_negative"
PROMPT_ALPHA_KEY = "nasa_alpha"
# What a per-prompt negative's CONDITIONING carries besides its text, as the model-wide negative's dict does
# (Apply NASA Model Patch's negative_extra): its text encoder's attention mask (LTX-Video's T5 pads to 128 tokens)
# its pooled output (Kandinsky 5 refines the negative with its own pooled CLIP-L) and HiDream's Llama states (its
# blocks take a fresh Llama layer each).
PROMPT_MASK_KEY = "nasa_negative_mask"
PROMPT_POOLED_KEY = "nasa_negative_pooled"
PROMPT_LLAMA_KEY = "nasa_negative_llama3"
PROMPT_KEYS = (PROMPT_NEGATIVE_KEY, PROMPT_ALPHA_KEY, PROMPT_MASK_KEY, PROMPT_POOLED_KEY, PROMPT_LLAMA_KEY)
# Set in a call's transformer_options by the NASA patch that took the call's per-prompt negative.
PROMPT_SEEN_KEY = "comfyui_nasa_prompt_negative"

HAS_WRAP_ATTN = hasattr(comfy_attention, "wrap_attn")  # modern ComfyUI: attention overrides via transformer_options


def override_call_options(kw: dict) -> dict:
    """The options of the attention call an ``optimized_attention_override`` intercepts that NASA's own extra call
    beside it must repeat (layout, precision, the call's transformer_options)."""
    return {key: kw[key] for key in ("skip_reshape", "attn_precision", "transformer_options", "_inside_attn_wrapper")
            if key in kw}


def comfy_attention_fn(extra_options: dict) -> Callable:
    """ComfyUI's current optimised attention in the core's (q, k, v, heads, mask) form."""
    precision = extra_options.get("attn_precision")

    def attend(q, k, v, heads, mask=None):
        fn = comfy_attention.optimized_attention if mask is None else comfy_attention.optimized_attention_masked
        kwargs = {"attn_precision": precision}
        if HAS_WRAP_ATTN:
            kwargs["transformer_options"] = extra_options
        if mask is not None:
            kwargs["mask"] = mask
        return fn(q, k, v, heads, **kwargs)

    return attend


# ---------------------------------------------------------------------------------------------------------
# Per-prompt negatives travelling with CONDITIONING


class CONDNASANegative(comfy.conds.CONDCrossAttn):
    """A negative carried by a prompt; batched like the prompt's own text (padding by repetition).

    The batched tensor reaches the denoiser call as a keyword argument; a NASA wrapper claims it there
    (``NASARun.plan``). A model that NASA did not patch ignores it, so the batched tensor carries a claim flag and,
    when it is freed unclaimed, the user is told (``_warn_unclaimed``)."""

    def __init__(self, cond, watch: bool = True):
        super().__init__(cond)
        self.watch = watch  # False for a prompt that turns NASA off (alpha 0): nothing to warn about

    def _copy_with(self, cond):
        return self.__class__(cond, self.watch)

    def process_cond(self, batch_size, *args, **kwargs):
        n = self.cond.shape[0]
        if n not in (1, batch_size):
            raise NASAInputError(f"the NASA negative has batch {n} but the latent batch is {batch_size}: "
                                 f"give one negative (batch 1) or one per latent (batch {batch_size})")
        return super().process_cond(batch_size, *args, **kwargs)

    def concat(self, others):
        out = super().concat(others)
        if not (self.watch or any(getattr(o, "watch", False) for o in others)):
            return out
        claim = [False]  # claimed?
        out._nasa_claim = claim
        weakref.finalize(out, _warn_unclaimed, claim)
        return out


_unclaimed_warned = [0.0]


def _warn_unclaimed(claim):
    import time
    if claim[0] or time.monotonic() - _unclaimed_warned[0] < 30.0:  # once per run, not once per step
        return
    _unclaimed_warned[0] = time.monotonic()
    from .prompt_hook import hooks_api
    why = ("this ComfyUI has no conditioning hooks (comfy.hooks.TransformerOptionsHook, from v0.3.30), so NASA "
           "Negative Conditioning works only together with Apply NASA Model Patch" if hooks_api() is None else
           "the prompt's conditioning hook never reached the model (a node between the prompt and the sampler "
           "dropped ComfyUI's conditioning hooks, or a sampler that does not run them)")
    log.warning("NASA: a prompt carries a negative from NASA Negative Conditioning, but the MODEL it was sampled "
                "with does not go through Apply NASA Model Patch and %s; this ComfyUI (%s) ignored the negative. "
                "Connect the MODEL through Apply NASA Model Patch (its own negative may stay unconnected).",
                why, comfy_release())


def claim_prompt_negative(negative) -> None:
    claim = getattr(negative, "_nasa_claim", None)
    if claim is not None:
        claim[0] = True


class CONDNASAAlpha(comfy.conds.CONDRegular):
    """The per-prompt alpha, one value per batch element once batched."""


class CONDNASANegativeMask(comfy.conds.CONDCrossAttn):
    """The per-prompt negative's attention mask as [n, T, 1]: batched exactly like the negative's tokens (the same
    repetition to a common length), so it stays aligned with them."""


def attach_prompt_negative(positive: list, negative: Optional[torch.Tensor], alpha: float,
                           extra: Optional[dict] = None) -> list:
    """Return a copy of a CONDITIONING list whose every entry carries ``negative`` at scale ``alpha`` (with the
    ``attention_mask``, ``pooled_output`` and ``conditioning_llama3`` of ``extra``, the negative CONDITIONING's
    dict). Alpha 0 or no negative (None) turns NASA off for these prompts, also over a model-wide negative."""
    alpha = check_alpha(alpha)
    off = negative is None or alpha == 0.0
    if negative is None:
        negative, extra = torch.zeros(1, 1, 1), None
        alpha = 0.0
    mask, pooled, llama = ((extra or {}).get(k) for k in ("attention_mask", "pooled_output", "conditioning_llama3"))
    if isinstance(mask, torch.Tensor):
        if mask.numel() != negative.shape[0] * negative.shape[1] and mask.numel() != negative.shape[1]:
            raise NASAInputError(f"the NASA negative's attention mask {tuple(mask.shape)} does not fit its "
                                 f"{negative.shape[1]} tokens (batch {negative.shape[0]})")
        mask = mask.reshape(-1, negative.shape[1], 1).float()
    out = []
    for cond, opts in positive:
        opts = opts.copy()
        model_conds = dict(opts.get("model_conds", {}))
        model_conds[PROMPT_NEGATIVE_KEY] = CONDNASANegative(negative, watch=not off)
        model_conds[PROMPT_ALPHA_KEY] = CONDNASAAlpha(torch.tensor([alpha], dtype=torch.float32))
        for key in (PROMPT_MASK_KEY, PROMPT_POOLED_KEY, PROMPT_LLAMA_KEY):
            model_conds.pop(key, None)  # a previous NASA Negative Conditioning's
        if isinstance(mask, torch.Tensor):
            model_conds[PROMPT_MASK_KEY] = CONDNASANegativeMask(mask)
        if isinstance(pooled, torch.Tensor):
            model_conds[PROMPT_POOLED_KEY] = comfy.conds.CONDRegular(pooled)
        if isinstance(llama, torch.Tensor):
            model_conds[PROMPT_LLAMA_KEY] = comfy.conds.CONDRegular(llama)
        opts["model_conds"] = model_conds
        out.append([cond, opts])
    return out


# ---------------------------------------------------------------------------------------------------------
# The per-call decision


@dataclass
class NASACallState:
    """What one denoiser call should do; read by every NASA layer in that call."""

    negative: torch.Tensor                 # [n, T, C] source of the negative K/V (stable object => cache hits)
    source: str                            # "model" or "prompt": which cache slot
    rows: Optional[List[int]]              # batch rows NASA applies to (None: all)
    neg_rows: Optional[List[int]]          # for each applied row, the negative's row (None: broadcast/aligned)
    alpha: torch.Tensor                    # [len(rows) or B] per applied row
    blocks: frozenset
    cacheable: bool = True                 # False while ComfyUI hooks may rewrite weights between steps
    weights_token: object = None           # the loaded patch set (modern ComfyUI), part of the cache key
    touched: int = 0
    diagnosis: Optional[Callable[[], str]] = None  # why nothing was touched (NASARun.diagnose)
    extra: Optional[dict] = None           # the negative CONDITIONING's attention_mask / pooled_output / Llama states, batched
                                           # like ``negative`` (a prompt's); the model-wide one's is in the settings


class _CacheEntry:
    __slots__ = ("source", "weights", "token", "value")

    def __init__(self, source, weights, token, value):
        self.source, self.weights, self.token, self.value = source, weights, token, value


def _version(t: torch.Tensor) -> int:
    """In-place change counter; tensors made under torch.inference_mode (as ComfyUI's executor loads models)
    have none, and there the weak identity and the loaded patch set (``weights_token``) carry the check."""
    return -1 if t.is_inference() else t._version


def _parameters(linear) -> List[torch.Tensor]:
    return [linear.weight] + ([linear.bias] if getattr(linear, "bias", None) is not None else [])


def _weight_identity(linear) -> Optional[Tuple]:
    """Identity of a projection's effective weight, or None when ComfyUI recomputes it per call
    (lowvram LoRA patches applied while casting): then nothing may be cached. Weak references, not id():
    a freed LoRA-patched weight's id can be reused by the next one."""
    if getattr(linear, "weight_function", None) or getattr(linear, "bias_function", None):
        return None
    return tuple((weakref.ref(t), _version(t), t.device, t.dtype) for t in _parameters(linear))


def _same_weights(cached: Tuple, linear) -> bool:
    tensors = _parameters(linear)
    return len(cached) == len(tensors) and all(
        ref() is t and version == _version(t) and device == t.device and dtype == t.dtype
        for (ref, version, device, dtype), t in zip(cached, tensors))


def weighted_modules(module) -> List[torch.nn.Module]:
    """The modules of ``module`` (itself included) that carry a weight: what the cache must watch."""
    return [m for m in module.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)]


def _may_cache(state: "NASACallState") -> bool:
    """Nothing is kept inside torch.compile (the projection is traced into the graph), while autograd records, or
    while ComfyUI hooks may rewrite the weights between steps (``state.cacheable``)."""
    return not (torch.compiler.is_compiling() or not state.cacheable or torch.is_grad_enabled())


class NegativeCache:
    """The one cache of a NASA run: what the negative becomes on its way to each layer, kept between steps. Stages:
    each layer's K-/V- (``project``: the layer's ``to_k``/``to_v`` of the negative itself, UNet; ``negative_kv``: of
    the negative after the model's text embedder, whose output is a stage of its own, DiTs). An entry is reused while
    its input is the same object and the weights that made it are the same tensors, unmodified, under the same loaded
    patch set (``state.weights_token``); one entry per (stage, source slot, device, dtype): bounded. Emptied by
    ``NASARun.release`` when ComfyUI cleans up or unloads the model."""

    def __init__(self):
        self.entries: Dict[Tuple, _CacheEntry] = {}
        self.computed = 0   # per-layer K-/V- projections actually run (tests and benchmarks read them)
        self.embedded = 0   # text-embedder runs of the negative (DiTs)

    def tensors(self):
        """Every cached tensor (its dtypes, its memory)."""
        for entry in self.entries.values():
            yield from entry.value if isinstance(entry.value, tuple) else (entry.value,)

    def _get(self, key, source, modules, token, compute: Callable):
        entry = self.entries.get(key)
        if entry is not None and entry.source() is source and entry.token == token and \
                len(entry.weights) == len(modules) and all(_same_weights(w, m) for w, m in zip(entry.weights, modules)):
            return entry.value
        value = compute()
        ids = [_weight_identity(m) for m in modules]
        if all(i is not None for i in ids):
            self.entries[key] = _CacheEntry(weakref.ref(source), ids, token, value)
        else:  # ComfyUI recomputes these weights per call (lowvram LoRA): nothing may be kept
            self.entries.pop(key, None)
        return value

    def project(self, attn, layer_key, state: "NASACallState", dtype, device):
        """(K-, V-) of a layer whose ``to_k``/``to_v`` take the negative as it comes (UNet)."""
        neg = state.negative

        def projection():
            x = neg.to(device=device, dtype=dtype)
            return attn.to_k(x), attn.to_v(x)

        if not _may_cache(state):
            return projection()

        def counted():
            self.computed += 1
            return projection()

        return self._get((layer_key, state.source, device, dtype), neg, [attn.to_k, attn.to_v], state.weights_token,
                         counted)

    def negative_kv(self, layer_key, state: "NASACallState", dtype, device, embedder, embed: Callable,
                    layer_modules, project: Callable):
        """(K-, V-) of one DiT layer: ``project(embed(negative))``; ``embedder`` holds the weights ``embed`` uses."""
        slot = (state.source, device, dtype)
        if not _may_cache(state):
            memo = state.__dict__.setdefault("nasa_embedded_negative", {})  # once per call, not per layer
            e = memo.get(slot)
            if e is None:
                e = memo[slot] = embed(state.negative.to(device=device, dtype=dtype))
            return project(e)

        def run_embedder():
            self.embedded += 1
            return embed(state.negative.to(device=device, dtype=dtype))

        e = self._get(("embedded",) + slot, state.negative, weighted_modules(embedder), state.weights_token,
                      run_embedder)

        def run_projection():
            self.computed += 1
            return project(e)

        return self._get((layer_key,) + slot, e, layer_modules, state.weights_token, run_projection)


# ---------------------------------------------------------------------------------------------------------
# Equation 9 on the rows the call state names


def check_negative_width(layer_key, k_neg: torch.Tensor, q: torch.Tensor):
    if k_neg.shape[-1] != q.shape[-1]:
        raise NASAInputError(f"layer {layer_key}: negative keys of width {k_neg.shape[-1]} do not fit "
                             f"queries of width {q.shape[-1]}")


def steer_rows(z_pos: torch.Tensor, q: torch.Tensor, k_neg: torch.Tensor, v_neg: torch.Tensor, heads: int,
               state: NASACallState, attend, in_place: bool, neg_mask: Optional[torch.Tensor] = None,
               aligned: bool = False, tokens: Optional[slice] = None, seq_dim: int = 1,
               bound: Optional[float] = None) -> torch.Tensor:
    """Z+ - alpha * Z- on the rows ``state`` selects (all, CFG's contiguous cond chunk, or scattered rows), each with
    its own alpha; the rows it does not select are returned as they came. The one steering step of every adapter.

    ``z_pos`` [B, N, C] is the attention output; ``q`` the queries ([B, N, C], per head [B, N, H, D], or with the
    token axis at ``seq_dim``); ``attend(q, k, v, heads[, mask])`` the attention call. ``in_place``: ``z_pos`` is the
    fresh output of the attention call NASA made itself, held by nothing else, so it may be overwritten (never while
    autograd records); False over an occupant's output.
    ``neg_mask``: an additive key mask of the negative ([1 or n, 1, 1, T], ``negative_key_mask``), indexed like its
    keys. ``aligned``: K-/V- (and the mask) already hold one row per selected row (or one for all), e.g. a negative
    refined with each row's own timestep (Kandinsky 5), or a joint block's negative stream.
    ``tokens``: the query rows steered, None for all; joint attention steers only the generated image's rows (its
    text rows are the prompt's own update). ``bound``: cap |alpha Z-| at bound * |Z+| per token (the joint-attention
    extension beyond the paper; None: off)."""
    if state.neg_rows is not None and not aligned:
        k_neg, v_neg = k_neg[state.neg_rows], v_neg[state.neg_rows]
        if neg_mask is not None and neg_mask.shape[0] != 1:
            neg_mask = neg_mask[state.neg_rows]
    rows, batch = state.rows, z_pos.shape[0]
    scattered = rows is not None and rows != list(range(rows[0], rows[0] + len(rows)))
    lo, n = (0, batch) if rows is None else (rows[0], len(rows))  # all rows, or CFG's contiguous cond chunk
    q_sel = q[rows] if scattered else q.narrow(0, lo, n)
    if tokens is not None:
        q_sel = q_sel.narrow(seq_dim, tokens.start, tokens.stop - tokens.start)
    z_neg = negative_attention(q_sel, k_neg, v_neg, heads, neg_mask, attention=attend)
    if tokens is None and not scattered:
        if in_place and not z_pos.requires_grad and bound is None:
            # z_pos is the fresh output of NASA's own attention call: subtract in place, one fused pass
            alpha = state.alpha.to(device=z_pos.device, dtype=z_pos.dtype).reshape(-1, 1, 1)
            z_pos.narrow(0, lo, n).addcmul_(alpha, z_neg.to(z_pos.dtype), value=-1.0)
            return z_pos
        steered = steer_away(z_pos.narrow(0, lo, n), z_neg, state.alpha, bound)
        return steered if n == batch else torch.cat([z_pos[:lo], steered, z_pos[lo + n:]])
    where = (rows if scattered else slice(lo, lo + n),) + ((tokens,) if tokens is not None else ())
    out = z_pos if in_place and not z_pos.requires_grad else z_pos.clone()
    out[where] = steer_away(z_pos[where], z_neg, state.alpha, bound)
    return out


# ---------------------------------------------------------------------------------------------------------
# The patch in each attention slot


class NASACrossAttentionPatch:
    """An attention replace patch: the previous occupant (or ComfyUI's attention) gives Z+, NASA subtracts
    alpha * Z-. Deep copies (ModelPatcher.clone) share it: its settings never change after creation."""

    def __init__(self, run: "NASARun", layer_key, block_name: str, attn_module, previous=None):
        self.run = run
        self.layer_key = layer_key
        self.block_name = block_name
        self.attn = attn_module
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        self.run.layer_calls += 1
        attend = comfy_attention_fn(extra_options)
        heads = extra_options["n_heads"]
        z_pos = self.previous(q, k, v, extra_options) if self.previous is not None else attend(q, k, v, heads)
        state: Optional[NASACallState] = extra_options.get(self.run.state_key)
        if state is None:  # blocks were chosen at install: this layer's patch exists because it was chosen
            return z_pos
        k_neg, v_neg = self.run.cache.project(self.attn, self.layer_key, state, q.dtype, q.device)
        check_negative_width(self.layer_key, k_neg, q)
        state.touched += 1
        return steer_rows(z_pos, q, k_neg, v_neg, heads, state, attend, in_place=self.previous is None)


class NASAObjectPatch(torch.nn.Module):
    """Base of NASA's object patches (``ModelPatcher.add_object_patch``: a module in the place of a model's module on
    one clone, which ComfyUI puts back when the clone is unloaded). It exposes the children of what held the slot
    (``previous``, else the stock module ``original``) under their own names, so ComfyUI finds the same state-dict
    names for LoRA and offloading, and keeps ``original``, ``occupant`` and ``previous`` outside the module tree (one
    copy of each weight). Deep copies (ModelPatcher.clone) share it."""

    def __init__(self, original, previous):
        super().__init__()
        occupant = previous if previous is not None else original
        for name, child in occupant.named_children():  # same state-dict names as without the patch
            self.add_module(name, child)
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "occupant", occupant)
        object.__setattr__(self, "previous", previous)  # the chain NASARun.diagnose walks

    def __deepcopy__(self, memo):
        return self


def occupants(model_patcher, key: str):
    """(stock module, current occupant or None) of an object-patch slot of this clone."""
    import comfy.utils
    previous = model_patcher.object_patches.get(key)
    original = model_patcher.object_patches_backup.get(key)
    if original is None:
        original = comfy.utils.get_attr(model_patcher.model, key)
    while isinstance(original, NASAObjectPatch):  # live model still holds another clone's patch
        original = original.original
    return original, previous


def install_patch(model_patcher, run: "NASARun", kind: str, key, make: Callable):
    """Put one of NASA's patches on the clone over whatever holds that slot now, and record it in ``run.slots`` (what
    ``NASARun.diagnose`` checks). ``kind`` "attn2" or "dit": a replace slot of ``transformer_options``, ``key`` its
    (block name, number[, transformer index]); "object": an object patch of the module at path ``key``.
    ``make(original, previous)`` builds NASA's patch: ``previous`` is what held the slot (None: nothing, or the stock
    module), ``original`` the stock module of an object slot (None for a replace slot, where ComfyUI's own code
    runs). The one install path of every adapter."""
    if kind == "object":
        original, previous = occupants(model_patcher, key)
        patch = make(original, previous)
        model_patcher.add_object_patch(key, patch)
    else:
        replace = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})
        patch = make(None, replace.get(key))
        model_patcher.set_model_patch_replace(patch, kind, *key)
    run.slots.append((kind, key, patch))
    return patch


# ---------------------------------------------------------------------------------------------------------
# The wrapper around each denoiser call


class NASARun:
    """One installation of NASA into one cloned ModelPatcher: settings, cache, and the call wrapper."""

    def __init__(self, family: str, settings, context_width: int, previous_wrapper=None):
        self.family = family
        self.settings = settings
        self._window: Tuple[object, float, float] = (None, 0.0, 0.0)  # (model_sampling, sigma_start, sigma_end)
        self.context_width = context_width
        self.previous_wrapper = previous_wrapper
        self.state_key = f"nasa_state_{uuid.uuid4().hex[:8]}"  # own key: two NASA patches can be chained
        self.cache = NegativeCache()  # every layer's negative K/V (and a DiT's embedded negative)
        self._model_negative_on: Optional[torch.Tensor] = None  # the model-wide negative on the last device used
        self._last_prompt_negative: Optional[torch.Tensor] = None
        self.calls_applied = 0
        self.warned = False
        self.slots: List[Tuple[str, object, object]] = []  # (slot kind, key, NASA's patch), filled by install
        self.layer_calls = 0  # NASA layer patches entered in the current call, with or without a state
        self.cacheable = True  # False: project the negative every call (NASA Negative Conditioning's hook)
        # A reference run (apply_nasa's ``reference``): installed under the main run, it adds alpha * Z_ref on the
        # rows the main run steers, with the main run's alphas, so the two give Z+ - alpha * (Z- - Z_ref)
        self.follows: Optional["NASARun"] = None

    def __deepcopy__(self, memo):
        return self

    def release(self, *args, **kwargs):
        """Drop every cached tensor (negative K/V, embedded negatives, the negative moved to the device): called
        when ComfyUI cleans up the model after sampling and when it unloads it (``register_release``)."""
        self.cache.entries.clear()
        self._model_negative_on = None
        self._last_prompt_negative = None

    # -- helpers
    def _check_width(self, negative: torch.Tensor, where: str):
        if negative.dim() != 3:
            raise NASAInputError(f"{where}: a negative conditioning is [batch, tokens, width], got shape "
                                 f"{tuple(negative.shape)}")
        if negative.shape[-1] != self.context_width:
            raise NASAInputError(wrong_width_message(negative.shape[-1], self.context_width, self.family))

    def _stable_prompt_negative(self, neg: torch.Tensor) -> torch.Tensor:
        """The batched per-prompt negative is a new tensor every step; reuse the previous object when the
        content is the same, so the layers' K/V cache hits."""
        last = self._last_prompt_negative
        if last is not None and last.shape == neg.shape and last.dtype == neg.dtype and last.device == neg.device \
                and torch.equal(last, neg):
            return last
        self._last_prompt_negative = neg
        return neg

    def _model_negative(self, device) -> torch.Tensor:
        t = self._model_negative_on
        if t is None or t.device != device:
            t = self._model_negative_on = self.settings.negative.to(device)
        return t

    def window(self, model_sampling) -> Tuple[float, float]:
        """(sigma_start, sigma_end) of the settings' percent window under the model sampling in force for this
        call (a ModelSampling* node placed after NASA changes it), converted once per model sampling object."""
        cached, start, end = self._window
        if cached is not model_sampling:
            start = float(model_sampling.percent_to_sigma(self.settings.start_percent))
            end = float(model_sampling.percent_to_sigma(self.settings.end_percent))
            self._window = (model_sampling, start, end)
        return start, end

    def _in_window(self, timestep: torch.Tensor, model_sampling) -> bool:
        if model_sampling is None or (self.settings.start_percent, self.settings.end_percent) == (0.0, 1.0):
            return True
        sigma_start, sigma_end = self.window(model_sampling)
        sigma = float(timestep.reshape(-1)[0])
        return sigma_end <= sigma <= sigma_start

    def plan(self, x: torch.Tensor, timestep: torch.Tensor, c: dict, cond_or_uncond: Sequence[int],
             model_sampling=None) -> Optional[NASACallState]:
        """Decide what NASA does in this call (pops the per-prompt keys from ``c``). A per-prompt negative takes
        precedence over the model-wide one of this patch and of every NASA patch chained under it."""
        if self.follows is not None:
            return self._plan_reference(x, c)
        prompt_neg = c.pop(PROMPT_NEGATIVE_KEY, None)
        prompt_alpha = c.pop(PROMPT_ALPHA_KEY, None)
        prompt_mask, prompt_pooled = c.pop(PROMPT_MASK_KEY, None), c.pop(PROMPT_POOLED_KEY, None)
        prompt_llama = c.pop(PROMPT_LLAMA_KEY, None)
        claim_prompt_negative(prompt_neg)
        if prompt_neg is not None:  # tell the NASA patches chained under this one (they see c after us)
            c["transformer_options"] = {**c.get("transformer_options", {}), PROMPT_SEEN_KEY: True}
        if not self._in_window(timestep, model_sampling):
            return None
        batch = x.shape[0]
        blocks = frozenset(self.settings.blocks)
        if prompt_neg is not None:
            alpha = check_alpha(prompt_alpha.reshape(-1).float())
            active = [i for i, a in enumerate(alpha.tolist()) if a != 0.0]
            if not active:  # alpha 0 in NASA Negative Conditioning: NASA off for this prompt
                return None
            self._check_width(prompt_neg, "NASA Negative Conditioning")
            if alpha.numel() != batch or prompt_neg.shape[0] != batch:
                raise NASAInputError(f"per-prompt NASA negatives came batched as {prompt_neg.shape[0]} for a batch of {batch}")
            rows = None if len(active) == batch else active
            extra = {}
            if prompt_mask is not None:
                extra["attention_mask"] = prompt_mask.reshape(prompt_mask.shape[0], -1)
            if prompt_pooled is not None:
                extra["pooled_output"] = prompt_pooled
            if prompt_llama is not None:
                extra["conditioning_llama3"] = prompt_llama
            return NASACallState(self._stable_prompt_negative(prompt_neg), "prompt", rows, rows,
                                 alpha if rows is None else alpha[rows], blocks, extra=extra or None)
        if c.get("transformer_options", {}).get(PROMPT_SEEN_KEY):
            return None  # an outer NASA patch holds this prompt's own negative
        if self.settings.negative is None or self.settings.alpha == 0.0:
            return None
        # Model-wide negative: positive (cond) chunks only; the ordinary negative keeps driving CFG.
        chunks = len(cond_or_uncond)
        per_chunk = batch // chunks
        rows = [i for i in range(batch) if cond_or_uncond[i // per_chunk] == 0]
        if not rows:
            return None
        neg = self._model_negative(x.device)
        n = neg.shape[0]
        if n == 1:
            neg_rows = None
        elif n == per_chunk:
            neg_rows = [i % per_chunk for i in rows]
        else:
            raise NASAInputError(f"the NASA negative has batch {n} but the latent batch is {per_chunk}: "
                                 f"give one negative (batch 1) or one per latent (batch {per_chunk})")
        alpha = torch.full((len(rows),), self.settings.alpha, dtype=torch.float32, device=x.device)
        return NASACallState(neg, "model", None if len(rows) == batch else rows, neg_rows, alpha, blocks)

    def _plan_reference(self, x: torch.Tensor, c: dict) -> Optional[NASACallState]:
        """A reference run acts exactly where its main run (the wrapper around it) acts, with the opposite alphas:
        the main run's state is in this call's transformer_options, put there before this wrapper runs."""
        main = c.get("transformer_options", {}).get(self.follows.state_key)
        if main is None:
            return None
        return NASACallState(self._model_negative(x.device), "model", main.rows, None, -main.alpha, main.blocks)

    def __call__(self, apply_model, args):
        c = dict(args["c"])
        base_model = getattr(apply_model, "__self__", None)
        state = self.plan(args["input"], args["timestep"], c, args["cond_or_uncond"],
                          getattr(base_model, "model_sampling", None))
        if state is not None:
            patcher = getattr(base_model, "current_patcher", None)
            state.cacheable = self.cacheable and not getattr(patcher, "hook_patches", None)
            state.weights_token = getattr(base_model, "current_weight_patches_uuid", None) or loaded_patches_uuid(base_model)
            to = dict(c.get("transformer_options", {}))
            to[self.state_key] = state
            c["transformer_options"] = to
            state.diagnosis = lambda: self.diagnose(state, c, base_model)
        args = dict(args, c=c)
        self.layer_calls = 0
        if self.previous_wrapper is not None:
            out = self.previous_wrapper(apply_model, args)
        else:
            out = apply_model(args["input"], args["timestep"], **c)
        if state is not None:
            self.report(state)
        return out

    def report(self, state: NASACallState):
        if state.touched > 0:
            self.calls_applied += 1
            self.warned = False
            return
        if not self.warned:
            self.warned = True
            log.warning("NASA: a negative was requested but no layer of this %s model applied it in this step: %s",
                        self.family, state.diagnosis())

    def diagnose(self, state: NASACallState, c: dict, base_model) -> str:
        """Why no NASA layer applied the negative in a call: the cause NASA can see."""
        replaced = []
        for kind, key, patch in self.slots:
            occupant = slot_occupant(kind, key, c, base_model)
            if not holds(occupant, patch):
                replaced.append(f"{key} holds {_describe(occupant)}")
        if replaced and len(replaced) == len(self.slots):
            return ("another node replaced NASA's patches after Apply NASA Model Patch (" + "; ".join(replaced[:3])
                    + (", ..." if len(replaced) > 3 else "") + "): apply NASA after that node, or chain it")
        if self.layer_calls == 0:
            return (f"NASA's patches are in place but the model never called them: this ComfyUI ({comfy_release()}) "
                    f"does not use the patch point NASA installs into for this {self.family} model, or a node that "
                    "wrapped NASA's patch does not call it")
        return (f"NASA's layers ran but did not receive the call's NASA state from this ComfyUI ({comfy_release()}); "
                f"this release does not pass it to the {self.family} layers (unsupported release for this family)")


def _describe(occupant) -> str:
    if occupant is None:
        return "nothing"
    what = getattr(occupant, "__qualname__", None) or type(occupant).__qualname__
    module = getattr(occupant, "__module__", None) or type(occupant).__module__
    return f"{module}.{what}" if module else what


def loaded_patches_uuid(base_model):
    """The patch set of the ModelPatcher ComfyUI loaded this model with, on releases whose model does not record it
    (the PyPI copy): LoRA weights patched in place keep their tensors, so the cache must see the patch set."""
    for loaded in getattr(comfy.model_management, "current_loaded_models", ()):
        patcher = getattr(loaded, "model", None)
        if patcher is not None and getattr(patcher, "model", None) is base_model:
            return getattr(patcher, "patches_uuid", None)
    return None


def slot_occupant(kind: str, key, c: dict, base_model):
    """What holds one of NASA's slots in the call being run: a replace patch of the call's transformer_options
    (kind "attn2", "dit") or a module of the live model (kind "object")."""
    if kind == "object":
        import comfy.utils
        try:
            return comfy.utils.get_attr(base_model, key)
        except AttributeError:
            return None
    replace = c.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})
    return replace.get(key)


def holds(occupant, patch) -> bool:
    """Whether ``occupant`` is NASA's ``patch`` or a NASA patch chained over it (``previous``)."""
    seen = 0
    while occupant is not None and seen < 64:
        if occupant is patch:
            return True
        occupant = getattr(occupant, "previous", None)
        seen += 1
    return False


def register_release(model_patcher, run: "NASARun"):
    """Free NASA's caches when ComfyUI cleans up the patched model after sampling or unloads it (the model
    callbacks of comfy.patcher_extension, from v0.3.10; the PyPI copy has none: there the caches, one entry per
    layer, live as long as the patched MODEL). Every prompt then starts from fresh negative K/V, which also keeps
    them right when a LoRA is switched between prompts on weights patched in place under inference_mode."""
    try:
        from comfy.patcher_extension import CallbacksMP
    except ImportError:
        return False
    for event in ("ON_CLEANUP", "ON_DETACH"):
        if hasattr(CallbacksMP, event):
            model_patcher.add_callback_with_key(getattr(CallbacksMP, event), f"comfyui_nasa_{run.state_key}",
                                                run.release)
    return True


def comfy_release() -> str:
    """The running ComfyUI's version, for messages: comfyui_version.py (releases from 2025), else the version
    in the tree's pyproject.toml, else the PyPI copy's package version."""
    try:
        import comfyui_version
        return f"ComfyUI {comfyui_version.__version__}"
    except ImportError:
        pass
    import re
    from pathlib import Path
    import comfy
    tree = Path(comfy.__path__[0]).parent
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file():
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
        if found:
            return f"ComfyUI {found.group(1)}"
    try:
        from importlib.metadata import version
        return f"ComfyUI from the notcomfy {version('notcomfy')} package (Nov 2024)"
    except Exception:
        return f"a ComfyUI without comfyui_version.py (older than v0.3.30) at {tree}"


def wrong_width_message(got: int, expected: int, family: str, what: str = "negative") -> str:
    known = {768: "CLIP-L (SD1.x)", 1024: "OpenCLIP-H (SD2.x)", 1280: "OpenCLIP-bigG alone (SDXL refiner)",
             2048: "CLIP-L + OpenCLIP-bigG (SDXL)", 4096: "T5-XXL (FLUX, SD3, PixArt, Wan)"}
    got_s = f"{got} ({known[got]})" if got in known else str(got)
    exp_s = f"{expected} ({known[expected]})" if expected in known else str(expected)
    return (f"NASA: the {what} conditioning is {got_s} wide but this {family} model's cross-attention takes "
            f"{exp_s}: encode the {what} with the text encoder loaded with this model")


def install_wrapper(model_patcher, run: NASARun):
    run.previous_wrapper = model_patcher.model_options.get("model_function_wrapper")
    model_patcher.set_model_unet_function_wrapper(run)
    register_release(model_patcher, run)
