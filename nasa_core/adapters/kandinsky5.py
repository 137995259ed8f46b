"""NASA for Kandinsky 5 (``comfy.ldm.kandinsky5.model.Kandinsky5``: ``supported_models.Kandinsky5`` video and
``Kandinsky5Image``; ComfyUI v0.5.1 and later), and the cfg- and diffusion-distilled checkpoints built on it.

The Qwen2.5-VL text (3584 wide) goes through ``text_embeddings`` (Linear + LayerNorm to the model width), then
through the model's own text encoder blocks (``text_transformer_blocks``: self-attention with 1-D RoPE, modulated
by the call's ``time_embed`` = timestep embedding + the pooled CLIP-L of the prompt). Each visual block's
``cross_attention`` attends the visual tokens to that refined text: per-head ``to_query``/``query_norm`` against
``to_key``/``key_norm`` and ``to_value``, then ``out_layer``. There is no text mask (ComfyUI gives the model none).

The negative takes the same road, once per call: an object patch on the first text block runs the stock block for
the prompt and then ``text_embeddings`` and every text block on the negative, with the RoPE of the negative's
length and the ``time_embed`` the model would give the negative as a prompt in this step: this call's timestep
embedding plus ``pooled_text_embeddings`` of the negative's own pooled CLIP-L, which Apply NASA Model Patch passes
from the negative's CONDITIONING (a ``DIFFUSION_MODEL`` wrapper, ``K5NegativeTime``, computes it per steered row).
A negative that comes without one (a CONDITIONING without ``pooled_output``, or ``apply_nasa`` called with a bare
tensor) is refined with each steered row's own ``time_embed`` (its timestep and its prompt's
pooled CLIP-L). Since the refined negative changes with the timestep it is not cached between steps. Each visual block's ``cross_attention`` is object-patched: Z+ - alpha Z- before
``out_layer``, with K- = key_norm(to_key(E-)) and V- = to_value(E-) from that block's own projections. The
positive text, the text blocks' output for it and the visual self-attention are untouched.
"""
from __future__ import annotations

import torch

from ..attention import NASAInputError
from .base import NASASettings
from .comfy_runtime import NASARun, install_patch, occupants, steer_rows
from .dit_crossattn import CrossAttentionAdapter, NASAObjectCrossAttention, current_state, subtract_projected

_REFINED = "nasa_kandinsky5_negative"  # NASACallState attribute: the negative after the text blocks, this call
_TIME = "nasa_kandinsky5_negative_time"  # NASACallState attribute: the time_embed the negative is refined with


def _k5_classes():
    """(Kandinsky5, CrossAttention, TransformerEncoderBlock), or None where this ComfyUI has no Kandinsky 5."""
    try:
        from comfy.ldm.kandinsky5.model import CrossAttention, Kandinsky5, TransformerEncoderBlock
    except ImportError:
        return None
    return Kandinsky5, CrossAttention, TransformerEncoderBlock


def _attention(transformer_options):
    import comfy.ldm.kandinsky5.model as k5  # the attention function Kandinsky 5's own modules call

    def attend(q, k, v, heads, mask=None):  # per head: [B, N, H, D]
        return k5.attention(q, k, v, heads, transformer_options=transformer_options)
    return attend


class K5NASATextBlock(NASAObjectCrossAttention):
    """Object patch of ``text_transformer_blocks.0``: the stock block for the prompt, then the negative through
    ``text_embeddings`` and all text blocks with the steered rows' ``time_embed``; the result rides on the call
    state for the visual blocks."""

    def forward(self, x, time_embed, freqs, transformer_options={}):
        out = self.occupant(x, time_embed, freqs, transformer_options=transformer_options)
        state = self.active_state(transformer_options)
        if state is not None:
            rows = slice(None) if state.rows is None else state.rows
            te = getattr(state, _TIME, None)  # the negative's own time_embed (K5NegativeTime), else each steered
            if te is None:                    # row's own: its timestep and its prompt's pooled CLIP-L
                te = time_embed[rows]
            neg = state.negative.to(device=x.device, dtype=x.dtype)
            if state.neg_rows is not None:
                neg = neg[state.neg_rows]
            elif neg.shape[0] == 1:
                neg = neg.expand(te.shape[0], -1, -1)
            h = self.embed(neg)
            neg_freqs = self.model.rope_encode_1d(h.shape[1], device=freqs.device, dtype=freqs.dtype,
                                                  transformer_options=transformer_options)
            # the blocks the prompt goes through (a NASA patch under this one: its stock block, run once)
            first = self.original if isinstance(self.occupant, K5NASATextBlock) else self.occupant
            for block in [first] + list(self.model.text_transformer_blocks)[1:]:
                h = block(h, te, neg_freqs, transformer_options=transformer_options)
            setattr(state, _REFINED, h)
        return out

    def active_state(self, transformer_options=None):  # every call with a decision: the blocks choose their own
        self.run.layer_calls += 1
        return current_state(self.run.state_key, transformer_options)


class K5NegativeTime:
    """``DIFFUSION_MODEL`` wrapper: where the negative's CONDITIONING has its pooled CLIP-L (as Kandinsky 5's text
    encoder gives every prompt; the model-wide negative's from install, a prompt's from NASA Negative Conditioning),
    the ``time_embed`` the model would give the negative as a prompt in this call, ``time_embeddings(timestep) +
    pooled_text_embeddings(its pooled CLIP-L)``, per steered row."""

    def __init__(self, run: NASARun, pooled):
        self.run, self.pooled = run, pooled  # the model-wide negative's pooled CLIP-L, or None

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, x, timestep, context, y, *args, transformer_options={}, **kwargs):
        state = current_state(self.run.state_key, transformer_options)
        pooled = None if state is None else \
            self.pooled if state.source == "model" else (state.extra or {}).get("pooled_output")
        if pooled is not None:
            dm = executor.class_obj
            if state.source == "prompt":  # the model-wide negative's was checked at install
                check_pooled(pooled, state.negative, dm)
            t = timestep if state.rows is None else timestep[state.rows]
            pooled = dm.pooled_text_embeddings(pooled.to(device=x.device, dtype=x.dtype))
            if state.neg_rows is not None and pooled.shape[0] != 1:
                pooled = pooled[state.neg_rows]
            setattr(state, _TIME, dm.time_embeddings(t, x.dtype) + pooled)
        return executor(x, timestep, context, y, *args, transformer_options=transformer_options, **kwargs)


def check_pooled(pooled: torch.Tensor, negative: torch.Tensor, model):
    width = model.pooled_text_embeddings.in_layer.in_features
    if pooled.dim() != 2 or pooled.shape[0] not in (1, negative.shape[0]) or pooled.shape[-1] != width:
        raise NASAInputError(f"the negative's pooled CLIP-L output {tuple(pooled.shape)} does not fit this Kandinsky 5 "
                             f"model (width {width}, negative batch {negative.shape[0]})")


class K5NASACrossAttention(NASAObjectCrossAttention):
    """Object patch of one visual block's ``cross_attention``: forward(x [B, N, C], context [B, T, C])."""

    def forward(self, x, context, transformer_options={}):
        state = self.active_state(transformer_options)
        refined = None if state is None else getattr(state, _REFINED, None)
        if refined is None:  # no decision, or the text block did not run NASA's patch (report() says so)
            return self.occupant(x, context, transformer_options=transformer_options)
        attn = self.original
        heads, attend = attn.num_heads, _attention(transformer_options)
        q = attn.query_norm(attn.to_query(x).view(*x.shape[:-1], heads, -1))
        k_neg = attn.key_norm(attn.to_key(refined).view(*refined.shape[:-1], heads, -1))
        v_neg = attn.to_value(refined).view(*refined.shape[:-1], heads, -1)
        self.check_negative(k_neg, q)
        state.touched += 1
        if not self.fast:
            out = self.occupant(x, context, transformer_options=transformer_options)
            return subtract_projected(out, q, k_neg, v_neg, heads, state, attend, attn.out_layer, aligned=True)
        k = attn.key_norm(attn.to_key(context).view(*context.shape[:-1], heads, -1))
        z = attend(q, k, attn.to_value(context).view(*context.shape[:-1], heads, -1), heads)
        z = steer_rows(z, q, k_neg, v_neg, heads, state, attend, in_place=True, aligned=True)
        return attn.out_layer(z)


class Kandinsky5Adapter(CrossAttentionAdapter):
    family = "Kandinsky 5 (video, image)"
    blocks_path = "diffusion_model.visual_transformer_blocks"
    block_layers = ("cross_attention",)
    embedder_path = "diffusion_model.text_embeddings"
    patch_class = K5NASACrossAttention
    publish_state = False  # its blocks pass transformer_options on every release that has it
    cached = False  # the negative is refined with the call's timestep: nothing kept between steps

    def matches(self, model_patcher) -> bool:
        classes = _k5_classes()
        if classes is None:
            return False
        model = model_patcher.model.diffusion_model
        if type(model) is not classes[0] or len(model.text_transformer_blocks) == 0:
            return False
        return isinstance(occupants(model_patcher, "diffusion_model.text_transformer_blocks.0")[0], classes[2]) and \
            self.all_stock(model_patcher, classes[1])

    def context_width(self, model_patcher) -> int:
        return model_patcher.model.diffusion_model.text_embeddings.in_layer.in_features

    def stock_classes(self) -> tuple:
        return (_k5_classes()[1],)

    def install(self, model_patcher, settings: NASASettings, run: NASARun) -> int:
        model = model_patcher.model.diffusion_model
        embedder = self.text_embedder(model_patcher)
        key = "diffusion_model.text_transformer_blocks.0"

        def text_block(original, previous):
            patch = K5NASATextBlock(run, None, key, None, original, previous, embedder, embedder, _k5_classes()[2])
            object.__setattr__(patch, "model", model)  # the live model: its text blocks and RoPE, outside the tree
            return patch

        install_patch(model_patcher, run, "object", key, text_block)
        count = super().install(model_patcher, settings, run)
        pooled = (settings.negative_extra or {}).get("pooled_output")
        if not isinstance(pooled, torch.Tensor) or settings.negative is None:
            pooled = None
        else:
            check_pooled(pooled, settings.negative, model)
        import comfy.patcher_extension
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                           f"comfyui_nasa_{run.state_key}_time", K5NegativeTime(run, pooled))
        return count
