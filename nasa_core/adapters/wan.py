"""NASA for Wan 2.1 (``comfy.ldm.wan.model.WanModel``, modern ComfyUI only): text-to-video and image-to-video,
and what is built on them (CausVid and other few-step LoRAs load into the same model).

Each ``WanAttentionBlock.cross_attn`` attends the video tokens (frames x height x width / patch) to the text
after ``text_embedding`` (T5 4096 -> model width); in I2V it also attends to CLIP-vision image tokens, which come
first in the context (``context_img_len`` of them, 257 for CLIP-H) through their own ``k_img``/``v_img``.
NASA subtracts only from the text attention: the image part is added back unchanged.

Hook: an object patch of each block's ``cross_attn`` (see ``dit_crossattn``), not the ``("double_block", i)``
replace slot. That slot gets the whole block, so NASA would either re-run the block or project the video
tokens' queries a second time (Q is the dominant cost: 14040 tokens at 480x832x33). Inside ``cross_attn`` the
query is projected once and serves Z+, Z- (and the image part). From v0.3.60 Wan passes ``transformer_options``
down to the cross-attention and the call's decision is read from there; before (v0.3.30-v0.3.59) it passes none,
and the decision comes through ``StatePublisher`` as on PixArt. The negative's keys go through the block's
own ``k`` and ``norm_k`` (Wan's key RMSNorm), its values through ``v``, exactly as the positive's.
"""
from __future__ import annotations

from .comfy_runtime import HAS_WRAP_ATTN, steer_rows, weighted_modules
from .dit_crossattn import CrossAttentionAdapter, NASAObjectCrossAttention, subtract_projected


def _wan_classes():
    """(WanModel, WanT2VCrossAttention, WanI2VCrossAttention), or None where this ComfyUI has no Wan."""
    try:
        from comfy.ldm.wan.model import WanI2VCrossAttention, WanModel, WanT2VCrossAttention
    except ImportError:
        return None
    return WanModel, WanT2VCrossAttention, WanI2VCrossAttention


def _attention_with(transformer_options):
    import comfy.ldm.wan.model as wan_model  # the attention function Wan's own modules call
    # transformer_options reach ComfyUI's attention (and its overrides) only where it has wrap_attn (v0.3.60+)
    kwargs = {"transformer_options": transformer_options} if HAS_WRAP_ATTN else {}

    def attend(q, k, v, heads, mask=None):
        return wan_model.optimized_attention(q, k, v, heads=heads, **kwargs)
    return attend


class WanNASACrossAttention(NASAObjectCrossAttention):
    """Object patch of one Wan block's ``cross_attn``: forward(x [B, L, C], context [B, (img +) text, C])."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_context = isinstance(self.original, _wan_classes()[2])  # I2V: CLIP-vision tokens first

    def forward(self, x, context, context_img_len=None, transformer_options=None, **kwargs):
        # Before v0.3.60 Wan's blocks call cross_attn(x, context, context_img_len=...) without transformer_options:
        # the call state then comes from StatePublisher, and the occupant is called the way the block called us.
        if transformer_options is not None:
            kwargs["transformer_options"] = transformer_options
        if self.image_context or context_img_len is not None:
            kwargs["context_img_len"] = context_img_len
        state = self.active_state(transformer_options)
        if state is None:
            return self.occupant(x, context, **kwargs)
        attn = self.original
        heads = attn.num_heads
        attend = _attention_with(transformer_options)
        q = attn.norm_q(attn.q(x))
        # the negative through the model's text embedding, then this layer's own k, key RMSNorm and v
        k_neg, v_neg = self.negative_kv(state, q, weighted_modules(attn.k) + weighted_modules(attn.v)
                                        + weighted_modules(attn.norm_k),
                                        lambda embedded: (attn.norm_k(attn.k(embedded)), attn.v(embedded)))
        self.check_negative(k_neg, q)
        state.touched += 1
        if not self.fast:
            out = self.occupant(x, context, **kwargs)
            return subtract_projected(out, q, k_neg, v_neg, heads, state, attend, attn.o)
        image_part = None
        if self.image_context:  # the first context_img_len tokens are CLIP-vision tokens: left as they are
            context_img, context = context[:, :context_img_len], context[:, context_img_len:]
            image_part = attend(q, attn.norm_k_img(attn.k_img(context_img)), attn.v_img(context_img), heads)
        z = attend(q, attn.norm_k(attn.k(context)), attn.v(context), heads)
        z = steer_rows(z, q, k_neg, v_neg, heads, state, attend, in_place=True)
        if image_part is not None:
            z = z + image_part
        return attn.o(z)


class WanAdapter(CrossAttentionAdapter):
    family = "Wan 2.1 (T2V, I2V)"
    embedder_path = "diffusion_model.text_embedding"
    patch_class = WanNASACrossAttention

    def matches(self, model_patcher) -> bool:
        classes = _wan_classes()
        if classes is None:
            return False
        model = model_patcher.model.diffusion_model
        # exactly WanModel: VACE, camera, S2V, HuMo and Animate subclasses route other conditioning through
        # their blocks and are not covered
        return type(model) is classes[0] and self.all_stock(model_patcher, classes[1:])

    def context_width(self, model_patcher) -> int:
        return model_patcher.model.diffusion_model.text_embedding[0].in_features

    def stock_classes(self) -> tuple:
        return _wan_classes()[1:]
