"""NASA for PixArt-alpha and PixArt-sigma (``comfy.ldm.pixart``, modern ComfyUI only).

PixArt's blocks have true cross-attention (``MultiHeadCrossAttention``: ``q_linear`` on the image tokens,
``kv_linear`` on the caption tokens after ``y_embedder``, the T5 -> 1152 MLP). ComfyUI passes no
``transformer_options`` into these blocks and has no replace slot inside them, so every block's
``cross_attn`` gets an object patch (see ``dit_crossattn``) and the call's NASA decision reaches it through
``StatePublisher``. The paper's default scale for PixArt-alpha-based models is alpha = 0.5.

On a ComfyUI without PixArt (the PyPI copy) this adapter never matches, and nothing here imports PixArt's
modules before ``matches`` asks.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .comfy_runtime import steer_rows, weighted_modules
from .dit_crossattn import CrossAttentionAdapter, NASAObjectCrossAttention, subtract_projected


def _pixart_classes():
    """(PixArtMS, MultiHeadCrossAttention), or None where this ComfyUI has no PixArt."""
    try:
        from comfy.ldm.pixart.blocks import MultiHeadCrossAttention
        from comfy.ldm.pixart.pixartms import PixArtMS
    except ImportError:
        return None
    return PixArtMS, MultiHeadCrossAttention


class PixArtNASACrossAttention(NASAObjectCrossAttention):
    """Object patch of one PixArt block's ``cross_attn``: forward(x [B, N, C], cond [1, B*T, C], mask)."""

    def forward(self, x, cond, mask=None):
        state = self.active_state()
        if state is None or mask is not None:  # PixArt asserts mask is None itself
            return self.occupant(x, cond, mask)
        attn = self.original
        heads, width, batch = attn.num_heads, attn.d_model, x.shape[0]
        q = attn.q_linear(x)
        k_neg, v_neg = self.negative_kv(state, q, weighted_modules(attn.kv_linear), self._project)
        self.check_negative(k_neg, q)
        state.touched += 1
        if not self.fast:
            return subtract_projected(self.occupant(x, cond, mask), q, k_neg, v_neg, heads, state, _attention, attn.proj)
        kv = attn.kv_linear(cond).view(batch, -1, 2 * width)  # PixArt flattens the caption batch: [1, B*T, C]
        z = _attention(q, kv[..., :width], kv[..., width:], heads)
        z = steer_rows(z, q, k_neg, v_neg, heads, state, _attention, in_place=True)
        return attn.proj_drop(attn.proj(z))

    def _project(self, embedded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        width = self.original.d_model
        kv = self.original.kv_linear(embedded)
        return kv[..., :width], kv[..., width:]


def _attention(q, k, v, heads):
    """The attention function PixArt's own module calls (ComfyUI's choice at start-up)."""
    import comfy.ldm.pixart.blocks as pixart_blocks
    return pixart_blocks.optimized_attention(q, k, v, heads, mask=None)


def _embed_caption(embedder):
    def embed(negative: torch.Tensor) -> torch.Tensor:
        return embedder(negative, False)  # CaptionEmbedder(caption, train): no caption dropout at inference
    return embed


class PixArtAdapter(CrossAttentionAdapter):
    family = "PixArt-alpha / PixArt-sigma"
    embedder_path = "diffusion_model.y_embedder"
    patch_class = PixArtNASACrossAttention

    def matches(self, model_patcher) -> bool:
        classes = _pixart_classes()
        return classes is not None and isinstance(model_patcher.model.diffusion_model, classes[0])

    def context_width(self, model_patcher) -> int:
        return model_patcher.model.diffusion_model.y_embedder.y_proj.fc1.in_features

    def stock_classes(self) -> tuple:
        return (_pixart_classes()[1],)

    def embed(self, embedder):
        return _embed_caption(embedder)
