"""The NASA attention itself, in plain torch (no ComfyUI import).

Equations 7-9 of the paper, for one cross-attention layer with the layer's own projections:

    Z+    = softmax(Q K+^T / sqrt(d)) V+
    Z-    = softmax(Q K-^T / sqrt(d)) V-
    Z     = Z+ - alpha * Z-

Tensors use the layout ComfyUI's attention functions use: ``[batch, tokens, heads * dim_head]``.
The attention call is pluggable (``attention=``) so an adapter can route both halves through the
host's optimised kernel; the default is ``torch.nn.functional.scaled_dot_product_attention``.
The NASA-T trainer trains a student through these same functions, so everything stays
differentiable.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
AttentionFn = Callable[..., Tensor]
Alpha = Union[float, int, Sequence[float], Tensor]


class NASAInputError(ValueError):
    """Input NASA cannot use; the message says what is wrong and what would fit."""


def check_alpha(alpha: Alpha) -> Union[float, Tensor]:
    """Validate the negative scale: a finite number, or one finite value per batch element."""
    if isinstance(alpha, bool):
        raise NASAInputError(f"NASA scale alpha must be a number, got {alpha!r}")
    if isinstance(alpha, (int, float)):
        if not math.isfinite(float(alpha)):
            raise NASAInputError(f"NASA scale alpha must be a finite number, got {alpha!r}; 0 disables NASA, "
                                 "0.1-0.5 are the paper's values")
        return float(alpha)
    t = torch.as_tensor(alpha, dtype=torch.float32) if not isinstance(alpha, Tensor) else alpha
    if t.dim() > 1:
        raise NASAInputError(f"NASA scale alpha must be a number or a 1-D tensor (one per batch element), "
                             f"got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise NASAInputError(f"NASA scale alpha must be finite, got {t.tolist()}")
    return t


def match_batch(t: Tensor, batch: int, what: str) -> Tensor:
    """One negative for the whole batch (batch 1, broadcast as a view) or one per element."""
    n = t.shape[0]
    if n == batch:
        return t
    if n == 1:
        return t.expand(batch, *t.shape[1:])
    raise NASAInputError(f"{what} has batch {n} but the batch being denoised has {batch} elements: "
                         f"give one negative for all (batch 1) or one per element (batch {batch})")


def _alpha_column(alpha: Union[float, Tensor], batch: int, device, dtype) -> Union[float, Tensor]:
    if isinstance(alpha, float):
        return alpha
    a = alpha.to(device=device, dtype=dtype).reshape(-1)
    if a.numel() == 1:
        return a.reshape(1, 1, 1)
    if a.numel() != batch:
        raise NASAInputError(f"alpha has {a.numel()} values but the batch has {batch} elements")
    return a.reshape(batch, 1, 1)


def _sdpa_mask(mask: Optional[Tensor], batch: int) -> Optional[Tensor]:
    """Bring a mask to [B or 1, 1 or H, Nq or 1, Tk]; a 2-D mask is a key-padding mask [B, Tk]."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask[:, None, None, :]
    if mask.dim() == 3:
        return mask[:, None, :, :]
    if mask.dim() == 4:
        return mask
    raise NASAInputError(f"attention mask must have 2 ([B, keys]), 3 ([B, queries, keys]) or 4 dims, "
                         f"got shape {tuple(mask.shape)}")


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Optional[Tensor] = None) -> Tensor:
    """softmax(QK^T/sqrt(d))V per head, [B, N, H*D] in and out.

    Boolean masks keep True; float masks are added to the logits. A query row whose keys are all
    masked out gets zeros (not NaN): with no key to attend to there is nothing to add or remove.
    Half-precision inputs on the CPU are computed in fp32 there (its kernels have no fp32
    accumulation for every path), then cast back.
    """
    b, nq, inner = q.shape
    if inner % heads:
        raise NASAInputError(f"query width {inner} is not divisible by {heads} heads")
    d = inner // heads
    out_dtype = q.dtype
    if q.device.type == "cpu" and q.dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    qh = q.view(b, nq, heads, d).transpose(1, 2)
    kh = k.reshape(k.shape[0], k.shape[1], heads, d).transpose(1, 2)
    vh = v.reshape(v.shape[0], v.shape[1], heads, d).transpose(1, 2)
    m = _sdpa_mask(mask, b)
    if m is not None and m.dtype != torch.bool:
        m = m.to(qh.dtype)
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=m)
    if m is not None and m.dtype == torch.bool:
        has_key = m.any(dim=-1, keepdim=True)  # [B?, H?, Nq?, 1]
        out = out.masked_fill(~has_key, 0.0)
    return out.transpose(1, 2).reshape(b, nq, inner).to(out_dtype)


def negative_attention(q: Tensor, k_neg: Tensor, v_neg: Tensor, heads: int, mask: Optional[Tensor] = None,
                       attention: AttentionFn = sdpa_attention) -> Tensor:
    """Z- of equation 8. k_neg/v_neg may hold one negative (batch 1) or one per element."""
    b = q.shape[0]
    k_neg = match_batch(k_neg, b, "the negative's keys")
    v_neg = match_batch(v_neg, b, "the negative's values")
    if k_neg.shape[-1] != q.shape[-1] or v_neg.shape[1] != k_neg.shape[1]:
        raise NASAInputError(f"negative keys/values of shapes {tuple(k_neg.shape)}/{tuple(v_neg.shape)} "
                             f"do not fit queries of width {q.shape[-1]}")
    if mask is not None:
        mask = match_batch(mask, b, "the negative's attention mask") if mask.shape[0] != 1 else mask
        return attention(q, k_neg, v_neg, heads, mask)
    return attention(q, k_neg, v_neg, heads)


def steer_away(z_pos: Tensor, z_neg: Tensor, alpha: Alpha, bound: Optional[float] = None) -> Tensor:
    """Equation 9, Z+ - alpha * Z-, accumulated in fp32 for half inputs and returned in Z+'s dtype.

    A tensor alpha is taken as validated by the caller (``check_alpha``): checking it here would sync
    the device in every layer and break torch.compile graphs. ``bound`` (an extension beyond the paper, for joint
    attention; None: off): |alpha * Z-| is capped at bound * |Z+| per token (norm over the last axis), in fp32."""
    if not isinstance(alpha, Tensor):
        alpha = check_alpha(alpha)
    a = _alpha_column(alpha, z_pos.shape[0], z_pos.device, torch.float32)
    if bound is not None:
        sub = a * z_neg.float()
        ratio = bound * z_pos.float().norm(dim=-1, keepdim=True) / sub.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (z_pos.float() - sub * ratio.clamp(max=1.0)).to(z_pos.dtype)
    if z_pos.dtype in (torch.float16, torch.bfloat16):
        return (z_pos.float() - a * z_neg.float()).to(z_pos.dtype)
    a = a if isinstance(a, float) else a.to(z_pos.dtype)
    return z_pos - a * z_neg.to(z_pos.dtype)


def nasa_attention(q: Tensor, k_pos: Tensor, v_pos: Tensor, k_neg: Tensor, v_neg: Tensor, heads: int,
                   alpha: Alpha, pos_mask: Optional[Tensor] = None, neg_mask: Optional[Tensor] = None,
                   attention: AttentionFn = sdpa_attention) -> Tensor:
    """Equations 7-9: the NASA output of one cross-attention layer (before its output projection).

    q: [B, Nq, H*D]; k_pos, v_pos: [B, Tp, H*D]; k_neg, v_neg: [1 or B, Tn, H*D] (Tn may differ from Tp);
    alpha: a number or one value per batch element; masks: key padding [B, T] or [B, Nq, T] / [B, H, Nq, T].
    """
    alpha = check_alpha(alpha)
    z_pos = attention(q, k_pos, v_pos, heads, pos_mask) if pos_mask is not None else attention(q, k_pos, v_pos, heads)
    if isinstance(alpha, float) and alpha == 0.0:
        return z_pos
    z_neg = negative_attention(q, k_neg, v_neg, heads, neg_mask, attention)
    return steer_away(z_pos, z_neg, alpha)
