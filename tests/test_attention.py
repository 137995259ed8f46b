"""The NASA math (nasa_core.attention) against an independent plain-torch computation of equations 7-9."""
import math

import pytest
import torch

from comfyui_nasa.nasa_core.attention import (NASAInputError, check_alpha, nasa_attention, negative_attention,
                                              sdpa_attention, steer_away)


def reference(q, kp, vp, kn, vn, heads, alpha, pos_keep=None, neg_keep=None):
    """Equations 7-9 written out: explicit per-head softmax(QK^T/sqrt(d))V in float64."""
    q, kp, vp, kn, vn = (t.double() for t in (q, kp, vp, kn, vn))
    b, nq, inner = q.shape
    d = inner // heads

    def attend(k, v, keep):
        k = k.expand(b, -1, -1) if k.shape[0] == 1 else k
        v = v.expand(b, -1, -1) if v.shape[0] == 1 else v
        out = torch.zeros(b, nq, inner, dtype=torch.float64)
        for i in range(b):
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                logits = q[i, :, sl] @ k[i, :, sl].T / math.sqrt(d)
                if keep is not None:
                    kk = keep[i] if keep.shape[0] > 1 else keep[0]
                    if not kk.any():
                        continue  # nothing to attend to: zero contribution
                    logits = logits.masked_fill(~kk[None, :], float("-inf"))
                out[i, :, sl] = torch.softmax(logits, dim=-1) @ v[i, :, sl]
        return out

    a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1, 1) if not isinstance(alpha, float) else alpha
    return attend(kp, vp, pos_keep) - a * attend(kn, vn, neg_keep)


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("tp,tn", [(77, 77), (154, 77), (77, 154), (5, 3)])
def test_matches_reference_with_differing_token_counts(tp, tn):
    b, nq, heads, d = 2, 16, 4, 8
    q, kp, vp = rand(b, nq, heads * d, seed=1), rand(b, tp, heads * d, seed=2), rand(b, tp, heads * d, seed=3)
    kn, vn = rand(1, tn, heads * d, seed=4), rand(1, tn, heads * d, seed=5)
    out = nasa_attention(q, kp, vp, kn, vn, heads, 0.3)
    assert rel_err(out, reference(q, kp, vp, kn, vn, heads, 0.3)) < 1e-5


def test_per_element_negatives_and_alphas():
    b, nq, heads = 3, 8, 2
    q, kp, vp = rand(b, nq, 32, seed=1), rand(b, 6, 32, seed=2), rand(b, 6, 32, seed=3)
    kn, vn = rand(b, 4, 32, seed=4), rand(b, 4, 32, seed=5)
    alpha = torch.tensor([0.0, 0.5, 1.5])
    out = nasa_attention(q, kp, vp, kn, vn, heads, alpha)
    assert rel_err(out, reference(q, kp, vp, kn, vn, heads, alpha)) < 1e-5
    # element 0 has alpha 0: exactly the positive attention
    assert torch.allclose(out[0], sdpa_attention(q, kp, vp, heads)[0], atol=1e-6)


def test_masks_on_either_side():
    b, heads = 2, 2
    q, kp, vp = rand(b, 8, 32, seed=1), rand(b, 6, 32, seed=2), rand(b, 6, 32, seed=3)
    kn, vn = rand(b, 5, 32, seed=4), rand(b, 5, 32, seed=5)
    pos_keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    neg_keep = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)  # element 1: empty negative
    out = nasa_attention(q, kp, vp, kn, vn, heads, 0.7, pos_mask=pos_keep, neg_mask=neg_keep)
    ref = reference(q, kp, vp, kn, vn, heads, 0.7, pos_keep, neg_keep)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-5
    # a float (additive) mask means the same as the boolean one
    add = torch.zeros(b, 6).masked_fill(~pos_keep, float("-inf"))
    out_add = nasa_attention(q, kp, vp, kn, vn, heads, 0.7, pos_mask=add, neg_mask=neg_keep)
    assert rel_err(out_add, ref) < 1e-5


def test_alpha_zero_is_the_positive_attention_exactly():
    q, kp, vp, kn, vn = (rand(2, 7, 32, seed=s) for s in range(5))
    assert torch.equal(nasa_attention(q, kp, vp, kn, vn, 4, 0.0), sdpa_attention(q, kp, vp, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_without_overflow(dtype):
    # large activations: unscaled QK^T would be ~1e6, far beyond fp16's 65504
    q, kp, vp, kn, vn = (rand(2, 16, 128, seed=s, scale=30.0) for s in range(5))
    ref = reference(q, kp, vp, kn, vn, 2, 0.5)
    out = nasa_attention(*(t.to(dtype) for t in (q, kp, vp, kn, vn)), 2, 0.5)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert rel_err(out.float(), ref) < (2e-2 if dtype == torch.bfloat16 else 5e-3)


def test_gradients_flow_and_match_finite_differences():
    q, kp, vp, kn, vn = (rand(1, 3, 8, seed=s).double().requires_grad_() for s in range(5))
    assert torch.autograd.gradcheck(lambda *t: nasa_attention(*t, 2, 0.4), (q, kp, vp, kn, vn))
    out = nasa_attention(q, kp, vp, kn, vn, 2, 0.4)
    out.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, kn, vn))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), torch.tensor([0.1, float("nan")])])
def test_non_finite_alpha_is_rejected(bad):
    with pytest.raises(NASAInputError, match="finite"):
        check_alpha(bad)


def test_negative_batch_that_cannot_match():
    q = rand(4, 5, 16)
    with pytest.raises(NASAInputError, match="batch 3 but the batch being denoised has 4"):
        negative_attention(q, rand(3, 2, 16), rand(3, 2, 16), 2)


def test_alpha_count_that_cannot_match():
    with pytest.raises(NASAInputError, match="3 values but the batch has 2"):
        steer_away(rand(2, 4, 8), rand(2, 4, 8), torch.tensor([0.1, 0.2, 0.3]))
