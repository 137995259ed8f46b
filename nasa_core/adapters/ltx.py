"""NASA for LTX-Video (``comfy.ldm.lightricks.model.LTXVModel``, ``supported_models.LTXV``; ComfyUI v0.3.10 and
later): the 2B and 13B text-to-video / image-to-video models and the distilled checkpoints and LoRAs on them; and
for LTX-2 (audio and video, below).

Each ``BasicTransformerBlock.attn2`` is the text cross-attention: the video tokens' query (``to_q``, ``q_norm``)
against the T5 text after ``caption_projection`` (4096 -> model width), keys through ``to_k`` and ``k_norm``,
values through ``to_v``, and the additive text mask ComfyUI builds from the prompt's ``attention_mask`` (T5 pads
every prompt to at least 128 tokens). NASA object-patches each block's ``attn2`` (see ``dit_crossattn``): Z+ is the
model's own masked attention call with the mask it was given (so the positive's padding stays hidden exactly as
without NASA), Z- is the same call over the negative's keys, with the negative's own padding hidden by a key
mask of its own (``negative_valid``: the attention mask of the negative's CONDITIONING, which Apply NASA Model
Patch passes along, or one tagged on the tensor, else its all-zero rows), and
``to_out`` takes Z+ - alpha Z-. attn1 (self-attention) and the feed-forward are untouched. The negative's
caption projection and K-/V- are cached between steps (they do not depend on the timestep).

From v0.3.60 the blocks pass ``transformer_options`` to ``attn2``; before, the call's decision comes through
``StatePublisher`` (an ``APPLY_MODEL`` wrapper), so a ComfyUI without ``comfy.patcher_extension`` (the PyPI copy)
gets no LTX adapter.

LTX-2 (``comfy.ldm.lightricks.av_model.LTXAVModel``, ``supported_models.LTXAV``; the releases that have the class,
v0.8.0 in the matrix): the text stream is [video half | audio half] along the width (the Gemma connectors' two
outputs side by side), which the model splits in two, projecting the first half with ``caption_projection`` for
the video tokens' ``attn2`` and the second with ``audio_caption_projection`` for the audio tokens' ``audio_attn2``;
both get the same additive text mask. NASA does what CFG's negative would: each chosen block's ``attn2`` and
``audio_attn2`` are patched as above, the video one steered by the negative's video half and the audio one by
its audio half, each through the layer's own projections (``LTX2CaptionProjections`` projects both halves once
per model, cached). The audio-video cross-attentions, the self-attentions and the feed-forwards are untouched.
LTX-2's text encoder gives no attention mask (its connectors fill every prompt to at least 1024 tokens with
learned registers, which the model attends); a mask a negative carries is honoured as above.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .base import NASASettings
from .comfy_runtime import HAS_WRAP_ATTN, steer_rows, weighted_modules
from .dit_crossattn import (CrossAttentionAdapter, NASAObjectCrossAttention, negative_key_mask, negative_valid,
                            subtract_projected)


def _ltx_classes():
    """(LTXVModel, CrossAttention, LTXAVModel or None), or None where this ComfyUI has no LTX-Video or no
    APPLY_MODEL wrappers to hand the call's decision to blocks that get no transformer_options."""
    try:
        import comfy.patcher_extension
        from comfy.ldm.lightricks.model import CrossAttention, LTXVModel
    except ImportError:
        return None
    if not hasattr(comfy.patcher_extension.WrappersMP, "APPLY_MODEL"):
        return None
    try:
        from comfy.ldm.lightricks.av_model import LTXAVModel
    except ImportError:
        LTXAVModel = None
    return LTXVModel, CrossAttention, LTXAVModel


def _attention(attn, transformer_options):
    """The attention calls LTX's own CrossAttention makes (looked up at call time, as it does)."""
    import comfy.ldm.modules.attention as comfy_attention
    kwargs = {"attn_precision": attn.attn_precision}
    if HAS_WRAP_ATTN and transformer_options is not None:
        kwargs["transformer_options"] = transformer_options

    def attend(q, k, v, heads, mask=None):
        if mask is None:
            return comfy_attention.optimized_attention(q, k, v, heads, **kwargs)
        return comfy_attention.optimized_attention_masked(q, k, v, heads, mask, **kwargs)
    return attend


class LTXNASACrossAttention(NASAObjectCrossAttention):
    """Object patch of one LTX block's ``attn2``: forward(x, context, mask (additive text mask), pe=None, ...)."""

    part = slice(None)  # which columns of the embedded negative this layer's keys come from (LTX-2: its half)

    def forward(self, x, context=None, mask=None, **kwargs):
        transformer_options = kwargs.get("transformer_options")
        state = self.active_state(transformer_options)
        if state is None or context is None or kwargs.get("pe") is not None:  # not a text cross-attention call
            return self.occupant(x, context=context, mask=mask, **kwargs)
        attn = self.original
        attend = _attention(attn, transformer_options)
        q = attn.q_norm(attn.to_q(x))
        k_neg, v_neg = self.negative_kv(state, q, weighted_modules(attn.to_k) + weighted_modules(attn.k_norm)
                                        + weighted_modules(attn.to_v), self._project)
        self.check_negative(k_neg, q)
        neg_mask = self._negative_mask(state, q)
        state.touched += 1
        if not self.fast:
            out = self.occupant(x, context=context, mask=mask, **kwargs)
            return subtract_projected(out, q, k_neg, v_neg, attn.heads, state, attend, attn.to_out, neg_mask)
        z = attend(q, attn.k_norm(attn.to_k(context)), attn.to_v(context), attn.heads, mask)
        z = steer_rows(z, q, k_neg, v_neg, attn.heads, state, attend, in_place=True, neg_mask=neg_mask)
        return attn.to_out(z)

    def _negative_mask(self, state, q):
        """The negative's key mask, once per call: the model-wide negative's from install, a prompt's from the
        attention mask its CONDITIONING carried (NASA Negative Conditioning passes it on), else its zero rows."""
        memo = state.__dict__.setdefault("nasa_ltx_negative_mask", {})
        slot = (q.dtype, q.device)
        if slot not in memo:
            valid = self.valid if state.source == "model" else \
                negative_valid(state.negative, (state.extra or {}).get("attention_mask"))
            memo[slot] = negative_key_mask(valid, q.dtype, q.device)
        return memo[slot]

    def _project(self, embedded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        embedded = embedded[..., self.part]
        return self.original.k_norm(self.original.to_k(embedded)), self.original.to_v(embedded)


class LTX2CaptionProjections(torch.nn.Module):
    """LTX-2's two caption projections side by side: the text stream split in two along the width (as
    ``LTXAVModel._prepare_context`` splits it), the first half through ``caption_projection``, the second through
    ``audio_caption_projection``; out: [video width | audio width]."""

    def __init__(self, video, audio):
        super().__init__()
        self.video, self.audio = video, audio

    def forward(self, text):
        v, a = torch.split(text, text.shape[-1] // 2, dim=-1)
        return torch.cat([self.video(v), self.audio(a)], dim=-1)


class LTXVAdapter(CrossAttentionAdapter):
    family = "LTX-Video (LTXV)"
    model_class = 0  # index in _ltx_classes()
    blocks_path = "diffusion_model.transformer_blocks"
    block_layers = ("attn2",)  # each block's text cross-attentions
    embedder_path = "diffusion_model.caption_projection"
    patch_class = LTXNASACrossAttention

    def matches(self, model_patcher) -> bool:
        classes = _ltx_classes()
        model = model_patcher.model.diffusion_model
        if classes is None or classes[self.model_class] is None or type(model) is not classes[self.model_class]:
            return False
        return self.all_stock(model_patcher, classes[1])

    def context_width(self, model_patcher) -> int:
        return model_patcher.model.diffusion_model.caption_projection.linear_1.in_features

    def stock_classes(self) -> tuple:
        return (_ltx_classes()[1],)

    def parts(self, model_patcher) -> dict:
        """Each layer's columns of the embedded negative."""
        return {"attn2": slice(None)}

    def configure(self, model_patcher, settings: NASASettings):
        # the negative's own padding: its CONDITIONING's attention mask (Apply NASA Model Patch passes the dict)
        mask = (settings.negative_extra or {}).get("attention_mask")
        valid = None if settings.negative is None else negative_valid(settings.negative, mask)
        parts = self.parts(model_patcher)

        def configure(patch):
            patch.valid, patch.part = valid, parts[patch.layer_key.rsplit(".", 1)[1]]
        return configure


class LTX2Adapter(LTXVAdapter):
    """LTX-2: the video ``attn2`` steered by the negative's video half, ``audio_attn2`` by its audio half."""
    family = "LTX-2 (LTXAV, video and audio)"
    model_class = 2
    block_layers = ("attn2", "audio_attn2")

    def context_width(self, model_patcher) -> int:
        return 2 * super().context_width(model_patcher)  # [video half | audio half]

    def text_embedder(self, model_patcher):
        return LTX2CaptionProjections(super().text_embedder(model_patcher),
                                      model_patcher.get_model_object("diffusion_model.audio_caption_projection"))

    def parts(self, model_patcher) -> dict:
        width = super().text_embedder(model_patcher).linear_2.out_features
        return {"attn2": slice(0, width), "audio_attn2": slice(width, None)}
