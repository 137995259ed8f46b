"""A ComfyUI BasicTransformerBlock at SDXL's real widths (1280 channels, 20 heads of 64, 2048-wide CLIP-L+bigG
context) with NASA in its attn2 slot, against equations 7-9 written out in plain torch."""
import math

import pytest
import torch

import comfy.ops
from comfy.ldm.modules.attention import BasicTransformerBlock

import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters.base import NASASettings
from comfyui_nasa.nasa_core.adapters.comfy_runtime import NASACallState, NASACrossAttentionPatch, NASARun

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

DIM, HEADS, D_HEAD, CONTEXT = 1280, 20, 64, 2048
KEY = ("input", 7, 0)


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    b = BasicTransformerBlock(DIM, HEADS, D_HEAD, context_dim=CONTEXT, checkpoint=False,
                              operations=comfy.ops.disable_weight_init)
    return tk.init_weights(b, seed=3).eval()


def reference_cross_attention(attn, x, context, negative, alpha):
    """Z = softmax(QK+^T/sqrt(d))V+ - alpha softmax(QK-^T/sqrt(d))V-, then the layer's output projection,
    in float64 with the layer's own W_q, W_k, W_v, W_o."""
    wq, wk, wv = (m.weight.double() for m in (attn.to_q, attn.to_k, attn.to_v))
    wo, bo = attn.to_out[0].weight.double(), attn.to_out[0].bias.double()
    q = x.double() @ wq.T

    def z(c):
        k, v = c.double() @ wk.T, c.double() @ wv.T
        heads = []
        for h in range(HEADS):
            s = slice(h * D_HEAD, (h + 1) * D_HEAD)
            p = torch.softmax(q[..., s] @ k[..., s].transpose(-1, -2) / math.sqrt(D_HEAD), dim=-1)
            heads.append(p @ v[..., s])
        return torch.cat(heads, dim=-1)

    return (z(context) - alpha * z(negative)) @ wo.T + bo


def run_block(block, x, context, negative, alpha):
    run = NASARun("SDXL", NASASettings(alpha=alpha, negative=negative), CONTEXT)
    patch = NASACrossAttentionPatch(run, KEY, "input", block.attn2)
    state = NASACallState(negative, "model", None, None, torch.tensor([alpha]), frozenset({"input"}))
    options = {"block": KEY[:2], "block_index": 0, "patches_replace": {"attn2": {KEY: patch}}, run.state_key: state}
    with torch.no_grad():
        return block(x.clone(), context=context, transformer_options=options), state  # the block adds in place


def reference_block(block, x, context, negative, alpha):
    with torch.no_grad():
        x = block.attn1(block.norm1(x)) + x                      # self-attention: untouched by NASA
        x = reference_cross_attention(block.attn2, block.norm2(x), context, negative, alpha).float() + x
        return block.ff(block.norm3(x)) + x


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("neg_tokens", [77, 154])
def test_sdxl_width_block_matches_the_paper_equations(block, neg_tokens):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, DIM, generator=g)                     # 2 images of 8x8 tokens
    context = torch.randn(2, 77, CONTEXT, generator=g)
    negative = torch.randn(1, neg_tokens, CONTEXT, generator=g)  # one negative for the batch
    out, state = run_block(block, x, context, negative, 0.5)
    assert state.touched == 1
    ref = reference_block(block, x, context, negative, 0.5)
    assert rel_err(out, ref) < 1e-5
    # the NASA term itself, not only the residual stream, matches
    plain = reference_block(block, x, context, negative, 0.0)
    assert rel_err(out - plain, ref - plain) < 1e-5
    # and alpha = 0 is the unpatched block
    with torch.no_grad():
        unpatched = block(x.clone(), context=context, transformer_options={})
    out0, _ = run_block(block, x, context, negative, 0.0)
    assert torch.equal(out0, unpatched)
