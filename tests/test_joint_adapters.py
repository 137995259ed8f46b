"""NASA on the joint-attention DiTs: FLUX.1 (comfy.ldm.flux) and SD3/SD3.5 (mmdit), real ComfyUI classes.

The reference for one block is written here in plain torch from the block's weights (layer norm, modulation,
QK RMS-norm, RoPE as a 2x2 rotation, softmax attention, out-projection, MLP), not with the adapter's helpers:

    Z_img = softmax(q_img [K_txt; K_img]^T / sqrt d) [V_txt; V_img] - alpha * softmax(q_img K_neg^T / sqrt d) V_neg

with K_neg/V_neg the negative text through the block's own text branch; the text rows keep their joint attention.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import comfy.model_patcher
import comfy.sample
import comfy.supported_models
import comfy.ldm.flux.model as flux_model

from dit_testkit import flux_patcher, sd3_patcher
from nasa_testkit import init_weights
from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa
from comfyui_nasa.nasa_core.adapters.base import NASAInputError, UnsupportedModelError
from comfyui_nasa.nasa_core.adapters.comfy_runtime import attach_prompt_negative
from comfyui_nasa.nasa_core.adapters.joint import steered_positions

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ models

def cond(seed, tokens=5, width=32, pooled=16):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g)}]]


def sample(model, pos, neg, steps=1, cfg=1.0, size=16):
    latent = torch.zeros(1, 16, size, size)
    noise = comfy.sample.prepare_noise(latent, 0)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", pos, neg, latent, disable_pbar=True, seed=0)


FAMILIES = {
    "flux": dict(make=flux_patcher, width=32, pooled=16),
    "sd3": dict(make=sd3_patcher, width=48, pooled=16),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    spec = FAMILIES[request.param]
    return request.param, spec["make"](), spec["width"], spec["pooled"]


# ------------------------------------------------------------------------------------------------ plain-torch reference

def ln(x):
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


def rms(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


def lin(x, m):
    return F.linear(x, m.weight, m.bias)


def split_heads(x, h):
    b, n, c = x.shape
    return x.view(b, n, h, c // h).transpose(1, 2)


def merge_heads(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def softmax_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def rotate(x, pe):
    """RoPE as FLUX defines pe: per pair (x0, x1) -> pe[..., 0, :] . (x0, x1), pe[..., 1, :] . (x0, x1)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    out = torch.stack([(pe[..., 0, :] * pairs).sum(-1), (pe[..., 1, :] * pairs).sum(-1)], dim=-1)
    return out.reshape(x.shape)


def flux_double_reference(block, img, txt, vec, pe, neg_h, alpha, ref_h=None):
    """(img out, txt out, negative stream out) of one DoubleStreamBlock with NASA ('full+' stream); with a reference
    prompt's stream ``ref_h``, Z+ - alpha (Z- - Z_ref), and its stream out as a fourth value."""
    h = block.num_heads
    im = lin(F.silu(vec), block.img_mod.lin)[:, None].chunk(6, -1)  # shift, scale, gate, shift2, scale2, gate2
    tm = lin(F.silu(vec), block.txt_mod.lin)[:, None].chunk(6, -1)

    def qkv(x, attn, m):
        q, k, v = lin((1 + m[1]) * ln(x) + m[0], attn.qkv).chunk(3, -1)
        return (rms(split_heads(q, h), attn.norm.query_norm.scale), rms(split_heads(k, h), attn.norm.key_norm.scale),
                split_heads(v, h))

    def mlp(seq, x):
        return lin(F.gelu(lin(x, seq[0]), approximate="tanh"), seq[2])

    iq, ik, iv = qkv(img, block.img_attn, im)
    tq, tk, tv = qkv(txt, block.txt_attn, tm)
    nq, nk, nv = qkv(neg_h, block.txt_attn, tm)
    t = txt.shape[1]
    q = rotate(torch.cat((tq, iq), 2), pe)
    k = rotate(torch.cat((tk, ik), 2), pe)
    v = torch.cat((tv, iv), 2)
    pe0 = pe[:, :, :1]  # every FLUX.1 text token sits at position 0
    nq, nk = rotate(nq, pe0), rotate(nk, pe0)
    joint = softmax_attention(q, k, v)
    img_attn = joint[:, :, t:] - alpha * softmax_attention(q[:, :, t:], nk, nv)
    if ref_h is not None:
        rq, rk, rv = qkv(ref_h, block.txt_attn, tm)
        rq, rk = rotate(rq, pe0), rotate(rk, pe0)
        img_attn = img_attn + alpha * softmax_attention(q[:, :, t:], rk, rv)
    txt_attn = joint[:, :, :t]
    img = img + im[2] * lin(merge_heads(img_attn), block.img_attn.proj)
    img = img + im[5] * mlp(block.img_mlp, (1 + im[4]) * ln(img) + im[3])
    txt = txt + tm[2] * lin(merge_heads(txt_attn), block.txt_attn.proj)
    txt = txt + tm[5] * mlp(block.txt_mlp, (1 + tm[4]) * ln(txt) + tm[3])

    def advance(hq, hk, hv, h_):  # a negative text stream's own update ('full+'), over [itself; the image]
        attn = softmax_attention(hq, torch.cat((hk, k[:, :, t:]), 2), torch.cat((hv, v[:, :, t:]), 2))
        h_ = h_ + tm[2] * lin(merge_heads(attn), block.txt_attn.proj)
        return h_ + tm[5] * mlp(block.txt_mlp, (1 + tm[4]) * ln(h_) + tm[3])

    neg_h = advance(nq, nk, nv, neg_h)
    if ref_h is not None:
        return img, txt, neg_h, advance(rq, rk, rv, ref_h)
    return img, txt, neg_h


def sd3_joint_reference(block, img, txt, c, neg_h, alpha, ref_h=None):
    """(img out, txt out or None, negative stream out or None) of one MMDiT JointBlock with NASA; with a reference
    prompt's stream ``ref_h``, Z+ - alpha (Z- - Z_ref), and its stream out as a fourth value."""
    cb, xb = block.context_block, block.x_block
    h = xb.attn.num_heads

    def mods(b):
        return lin(F.silu(c), b.adaLN_modulation[1]).chunk(2 if b.pre_only else 6, -1)

    def qkv(b, x, m):
        q, k, v = lin(x * (1 + m[1][:, None]) + m[0][:, None], b.attn.qkv).chunk(3, -1)
        return (rms(split_heads(q, h).transpose(1, 2), b.attn.ln_q.weight).transpose(1, 2),
                rms(split_heads(k, h).transpose(1, 2), b.attn.ln_k.weight).transpose(1, 2), split_heads(v, h))

    def post(b, m, x, attn):
        x = x + m[2][:, None] * lin(merge_heads(attn), b.attn.proj)
        y = ln(x) * (1 + m[4][:, None]) + m[3][:, None]
        return x + m[5][:, None] * lin(F.gelu(lin(y, b.mlp.fc1), approximate="tanh"), b.mlp.fc2)

    cm, xm = mods(cb), mods(xb)
    tq, tk, tv = qkv(cb, ln(txt), cm)
    iq, ik, iv = qkv(xb, ln(img), xm)
    nq, nk, nv = qkv(cb, ln(neg_h), cm)
    t = txt.shape[1]
    q, k, v = torch.cat((tq, iq), 2), torch.cat((tk, ik), 2), torch.cat((tv, iv), 2)
    joint = softmax_attention(q, k, v)
    img_attn = joint[:, :, t:] - alpha * softmax_attention(iq, nk, nv)
    if ref_h is not None:
        rq, rk, rv = qkv(cb, ln(ref_h), cm)
        img_attn = img_attn + alpha * softmax_attention(iq, rk, rv)
    img = post(xb, xm, img, img_attn)
    if cb.pre_only:
        return (img, None, None) + ((None,) if ref_h is not None else ())
    txt = post(cb, cm, txt, joint[:, :, :t])
    neg_h = post(cb, cm, neg_h, softmax_attention(nq, torch.cat((nk, ik), 2), torch.cat((nv, iv), 2)))
    if ref_h is not None:
        return img, txt, neg_h, post(cb, cm, ref_h, softmax_attention(rq, torch.cat((rk, ik), 2), torch.cat((rv, iv), 2)))
    return img, txt, neg_h


class Recorder:
    """A dit replace patch already in the slot before NASA: records the block's inputs and outputs."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: keep one recorder
        return self

    def __call__(self, args, extra):
        inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        out = extra["original_block"](args)
        self.calls.append((inputs, {k: (v.clone() if v is not None else None) for k, v in out.items()}))
        return out


def run_one_call(patcher, context, pooled, x):
    """One denoiser call through the patched model's wrapper, as calc_cond_batch makes it."""
    mo = patcher.model_options
    to = dict(mo.get("transformer_options", {}))
    to.update(cond_or_uncond=[0], sigmas=torch.tensor([1.0]))
    c = {"c_crossattn": context, "y": pooled, "transformer_options": to}
    if isinstance(patcher.model.diffusion_model, flux_model.Flux):
        c["guidance"] = torch.tensor([3.5])
    t = torch.tensor([1.0])
    with torch.no_grad():
        wrapper = mo.get("model_function_wrapper")
        if wrapper is None:
            return patcher.model.apply_model(x, t, **c)
        return wrapper(patcher.model.apply_model, {"input": x, "timestep": t, "c": c, "cond_or_uncond": [0]})


# ------------------------------------------------------------------------------------------------ tests

def test_adapter_picks_family(family):
    name, model, _, _ = family
    assert adapter_for(model).family.startswith({"flux": "FLUX.1", "sd3": "SD3"}[name])


def test_alpha_zero_and_tiny_alpha_are_identity(family):
    """alpha 0 installs nothing active; a vanishing alpha runs the whole NASA route (the attention override from
    v0.3.60, the block composed from its submodules before) and must give the unpatched result bit for bit."""
    name, model, width, pooled = family
    pos, neg = cond(1, width=width, pooled=pooled), cond(9, width=width, pooled=pooled)
    base = sample(model, pos, neg)
    assert torch.equal(sample(apply_nasa(model, cond(2, 7, width)[0][0], 0.0), pos, neg), base)
    tiny = apply_nasa(model, cond(2, 7, width)[0][0], 1e-30, blocks={"double", "single"} if name == "flux" else {"double"})
    assert torch.equal(sample(tiny, pos, neg), base)  # bit for bit: the route reproduces the block's own forward
    steered = sample(apply_nasa(model, cond(2, 7, width)[0][0], 0.5), pos, neg)
    assert (steered - base).abs().max() > 1e-3


@pytest.mark.parametrize("blocks,expected", [
    ({"input", "middle", "output"}, range(19)), ({"double", "single"}, range(57)), ({"single"}, range(19, 57)),
    ({"input"}, range(19)), ({"middle"}, range(19, 38)), ({"output"}, range(38, 57))])
def test_block_choice_mapping_on_flux_layout(blocks, expected):
    """FLUX.1 runs 19 double then 38 single blocks: the node's thirds fall on double / single 0-18 / single 19-37;
    the node's default (all three switches) = the family default (the first third) = the double blocks only."""
    assert steered_positions(["double"] * 19 + ["single"] * 38, blocks) == list(expected)


@pytest.mark.parametrize("count,expected", [(38, range(13)), (24, range(8)), (6, range(2)), (2, range(1))])
def test_default_on_sd3_layouts_is_the_first_third(count, expected):
    """SD3.5-Large (38 joint blocks), SD3/SD3.5-Medium (24): the default steers the first third; {"double"}
    still asks for every joint block."""
    kinds = ["double"] * count
    assert steered_positions(kinds, {"input", "middle", "output"}) == list(expected)
    assert steered_positions(kinds, {"double"}) == list(range(count))


def test_block_counts_and_errors():
    flux = flux_patcher(depth=3, single=2)
    from comfyui_nasa.nasa_core.adapters.joint import JointBlockPatch
    neg = cond(2)[0][0]

    def slots(p):
        return {k: v.apply for k, v in p.model_options["transformer_options"]["patches_replace"]["dit"].items()
                if isinstance(v, JointBlockPatch)}

    assert slots(apply_nasa(flux, neg, 0.3, blocks={"double"})) == {("double_block", i): True for i in range(3)}
    # the default is the first third in run order (on FLUX.1's real 19 + 38 layout: the double blocks)
    assert slots(apply_nasa(flux, neg, 0.3)) == {("double_block", i): True for i in range(2)}
    only_single = slots(apply_nasa(flux, neg, 0.3, blocks={"single"}))  # the stream still runs the double blocks
    assert only_single == {**{("double_block", i): False for i in range(3)}, ("single_block", 0): True,
                           ("single_block", 1): True}
    sd3 = sd3_patcher(depth=3)
    first_third = slots(apply_nasa(sd3, cond(2, width=48)[0][0], 0.3, blocks={"input"}))  # no stream past block 0
    assert first_third == {("double_block", 0): True}
    sd3_six = sd3_patcher(depth=2, num_blocks=6)
    sd3_neg = cond(2, width=48)[0][0]
    # the default = the first third: blocks 0-1 steered, no patch (no stream) from block 2 on
    assert slots(apply_nasa(sd3_six, sd3_neg, 0.3)) == {("double_block", i): True for i in range(2)}
    assert slots(apply_nasa(sd3_six, sd3_neg, 0.3, blocks={"double"})) == {("double_block", i): True for i in range(6)}
    assert slots(apply_nasa(sd3_six, sd3_neg, 0.3, blocks={"output"})) == {("double_block", i): i >= 4 for i in range(6)}
    with pytest.raises(NASAInputError, match="has no single blocks"):
        apply_nasa(sd3, cond(2, width=48)[0][0], 0.3, blocks={"single"})  # SD3 has no single-stream blocks
    # names of both kinds: the union (the first third, blocks 0-1 of 5, and the single blocks 3-4)
    assert slots(apply_nasa(flux, neg, 0.3, blocks={"input", "single"})) == {
        ("double_block", 0): True, ("double_block", 1): True, ("double_block", 2): False,
        ("single_block", 0): True, ("single_block", 1): True}
    with pytest.raises(NASAInputError, match="bound must be a positive"):
        apply_nasa(flux, neg, 0.3, bound=0.0)
    with pytest.raises(NASAInputError, match="negative_stream"):
        apply_nasa(flux, neg, 0.3, negative_stream="half")


def test_wrong_width_names_both_widths():
    flux = flux_patcher(ctx=4096, hidden=32, heads=2, axes=(4, 6, 6), depth=1, single=0)
    with pytest.raises(NASAInputError, match=r"768 \(CLIP-L.*4096 \(T5-XXL"):
        apply_nasa(flux, torch.randn(1, 77, 768), 0.3)
    sd3 = sd3_patcher(ctx=48)
    with pytest.raises(NASAInputError, match=r"64.*48"):
        apply_nasa(sd3, torch.randn(1, 7, 64), 0.3)


def test_unsupported_family_is_named():
    from comfy.ldm.flux.model import Flux as _Flux  # noqa: F401
    model = flux_patcher()
    model.model.diffusion_model = torch.nn.Linear(2, 2)  # a family no adapter covers
    with pytest.raises(UnsupportedModelError, match=r"FluxSchnell.*Linear.*Supported: .*FLUX.1.*SD3"):
        adapter_for(model)


def three_recorded_blocks(name):
    """A 3-block FLUX or SD3 model with a Recorder already in every double-block slot: (model, text width, pooled
    width, the recorder, the clone holding it)."""
    if name == "flux":
        model, width, pooled = flux_patcher(depth=3, single=0), 32, 16
    else:
        model, width, pooled = sd3_patcher(depth=3), 48, 16
    recorder = Recorder()
    chained = model.clone()
    for i in range(3):
        chained.set_model_patch_replace(recorder, "dit", "double_block", i)
    return model, width, pooled, recorder, chained


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_block_matches_reference_and_chains_previous_patch(name):
    """Small widths, 3 blocks: every block's NASA output against the plain-torch reference, with the negative
    stream carried block to block by the reference ('full+'); a dit patch already in each slot keeps running."""
    alpha = 0.7
    model, width, pooled, recorder, chained = three_recorded_blocks(name)
    neg = cond(2, 6, width)[0][0]
    patched = apply_nasa(chained, neg, alpha, blocks={"double"})  # all 3 blocks (the default would steer block 0)
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    run_one_call(patched, cond(1, width=width)[0][0], cond(1, width=width, pooled=pooled)[0][1]["pooled_output"], x)
    assert len(recorder.calls) == 3
    dm = model.model.diffusion_model
    with torch.no_grad():
        neg_h = lin(neg, dm.txt_in if name == "flux" else dm.context_embedder)
        for i, (inp, out) in enumerate(recorder.calls):
            if name == "flux":
                img, txt, neg_h = flux_double_reference(dm.double_blocks[i], inp["img"], inp["txt"], inp["vec"],
                                                        inp["pe"], neg_h, alpha)
            else:
                img, txt, neg_h = sd3_joint_reference(dm.joint_blocks[i], inp["img"], inp["txt"], inp["vec"],
                                                      neg_h, alpha)
            torch.testing.assert_close(out["img"], img, atol=2e-5, rtol=1e-4)
            if txt is not None:
                torch.testing.assert_close(out["txt"], txt, atol=2e-5, rtol=1e-4)  # text update as without NASA


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_a_reference_prompt_matches_the_equations(name):
    """apply_nasa's reference (beyond the paper): Z+ - alpha (Z- - Z_ref) in every steered block, the reference text
    carried block to block like the negative's ('full+'), against the plain-torch reference; with the reference
    equal to the negative the steering cancels."""
    alpha = 0.7
    model, width, pooled, recorder, chained = three_recorded_blocks(name)
    neg, ref = cond(2, 6, width)[0][0], cond(5, 4, width)[0][0]
    patched = apply_nasa(chained, neg, alpha, blocks={"double"}, reference=ref)
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    ctx, y = cond(1, width=width)[0][0], cond(1, width=width, pooled=pooled)[0][1]["pooled_output"]
    run_one_call(patched, ctx, y, x)
    assert len(recorder.calls) == 3
    dm = model.model.diffusion_model
    with torch.no_grad():
        embed = dm.txt_in if name == "flux" else dm.context_embedder
        neg_h, ref_h = lin(neg, embed), lin(ref, embed)
        for i, (inp, out) in enumerate(recorder.calls):
            if name == "flux":
                img, txt, neg_h, ref_h = flux_double_reference(dm.double_blocks[i], inp["img"], inp["txt"], inp["vec"],
                                                               inp["pe"], neg_h, alpha, ref_h)
            else:
                img, txt, neg_h, ref_h = sd3_joint_reference(dm.joint_blocks[i], inp["img"], inp["txt"], inp["vec"],
                                                             neg_h, alpha, ref_h)
            torch.testing.assert_close(out["img"], img, atol=2e-5, rtol=1e-4)
    plain = run_one_call(model, ctx, y, x)
    same = run_one_call(apply_nasa(model, neg, alpha, blocks={"double"}, reference=neg), ctx, y, x)
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)


def _real_width_block_check(name):
    """One block at the family's real width (FLUX.1: 3072 wide, 24 heads; SD3.5-Large: 2432 wide, 38 heads),
    few tokens, against the reference; and the text output against the unpatched block."""
    alpha = 0.5
    if name == "flux":
        model = flux_patcher(hidden=3072, heads=24, ctx=64, vec=8, depth=1, single=0, axes=(16, 56, 56))
        width, pooled = 64, 8
    else:
        model = sd3_patcher(depth=38, num_blocks=2, ctx=64, adm=8)  # 2432 wide, 38 heads of 64
        width, pooled = 64, 8
    recorder = Recorder()
    chained = model.clone()
    chained.set_model_patch_replace(recorder, "dit", "double_block", 0)
    neg = cond(2, 3, width)[0][0]
    patched = apply_nasa(chained, neg, alpha)
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    ctx, y = cond(1, 4, width)[0][0], cond(1, width=width, pooled=pooled)[0][1]["pooled_output"]
    run_one_call(patched, ctx, y, x)
    run_one_call(chained, ctx, y, x)  # unpatched, same recorder slot
    (inp, out), (inp0, out0) = recorder.calls[0], recorder.calls[1]
    dm = model.model.diffusion_model
    with torch.no_grad():
        if name == "flux":
            img, txt, _ = flux_double_reference(dm.double_blocks[0], inp["img"], inp["txt"], inp["vec"], inp["pe"],
                                                lin(neg, dm.txt_in), alpha)
        else:
            img, txt, _ = sd3_joint_reference(dm.joint_blocks[0], inp["img"], inp["txt"], inp["vec"],
                                              lin(neg, dm.context_embedder), alpha)
    torch.testing.assert_close(out["img"], img, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["txt"], txt, atol=1e-4, rtol=1e-4)
    assert torch.equal(inp["img"], inp0["img"]) and torch.equal(out["txt"], out0["txt"])  # text update unchanged
    assert (out["img"] - out0["img"]).abs().max() > 1e-4


def test_flux_real_width_block():
    _real_width_block_check("flux")


def test_sd3_large_real_width_block():
    _real_width_block_check("sd3")


def test_redux_style_longer_positive_is_not_subtracted():
    """Extra tokens appended to the positive text (Redux concatenates image tokens to txt) are attended as before:
    the text rows and the token count are untouched and the negative alone is subtracted."""
    alpha = 0.6
    model = flux_patcher(depth=2, single=1)
    recorder = Recorder()
    chained = model.clone()
    chained.set_model_patch_replace(recorder, "dit", "double_block", 0)
    neg = cond(2, 5)[0][0]
    patched = apply_nasa(chained, neg, alpha)
    txt = torch.cat([cond(1, 5)[0][0], cond(4, 20)[0][0]], dim=1)  # prompt + 20 "Redux" tokens
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    out = run_one_call(patched, txt, cond(1)[0][1]["pooled_output"], x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    inp, blk = recorder.calls[0]
    dm = model.model.diffusion_model
    with torch.no_grad():
        img, ref_txt, _ = flux_double_reference(dm.double_blocks[0], inp["img"], inp["txt"], inp["vec"], inp["pe"],
                                                lin(neg, dm.txt_in), alpha)
    assert inp["txt"].shape[1] == 25
    torch.testing.assert_close(blk["img"], img, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(blk["txt"], ref_txt, atol=2e-5, rtol=1e-4)


def test_per_prompt_negative_and_cfg(family):
    name, model, width, pooled = family
    pos, neg = cond(1, width=width, pooled=pooled), cond(9, width=width, pooled=pooled)
    negative = cond(2, 7, width)[0][0]
    model_wide = sample(apply_nasa(model, negative, 0.4), pos, neg)
    per_prompt = sample(apply_nasa(model, None, 0.4), attach_prompt_negative(pos, negative, 0.4), neg)
    torch.testing.assert_close(per_prompt, model_wide, atol=1e-5, rtol=0)
    # CFG: NASA steers the cond rows only; the uncond rows give what they give without NASA
    base_cfg = sample(model, pos, neg, steps=2, cfg=2.0)
    nasa_cfg = sample(apply_nasa(model, negative, 0.4), pos, neg, steps=2, cfg=2.0)
    assert torch.isfinite(nasa_cfg).all() and (nasa_cfg - base_cfg).abs().max() > 1e-4


@pytest.mark.parametrize("stream,bound", [("full", None), ("kv", None), ("full+", 0.05)])
def test_stream_variants_and_bound_run(stream, bound):
    model = flux_patcher()
    pos, neg = cond(1), cond(9)
    base = sample(model, pos, neg)
    free = sample(apply_nasa(model, cond(2, 7)[0][0], 2.0), pos, neg)
    out = sample(apply_nasa(model, cond(2, 7)[0][0], 2.0, negative_stream=stream, bound=bound), pos, neg)
    assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-5
    if bound is not None:  # a tight bound keeps the output nearer the unsteered one
        assert (out - base).norm() < (free - base).norm()


def test_mmdit_x_self_attention_blocks():
    """SD3.5-Medium-style blocks (x_block_self_attn) run their extra image self-attention untouched."""
    model = sd3_patcher(depth=2, xsa=(0,))
    pos, neg = cond(1, width=48), cond(9, width=48)
    base = sample(model, pos, neg)
    torch.testing.assert_close(sample(apply_nasa(model, cond(2, 7, 48)[0][0], 1e-30), pos, neg), base,
                               atol=1e-6, rtol=0)


@pytest.mark.skipif(not hasattr(__import__("comfy.ldm.modules.attention", fromlist=["x"]), "wrap_attn"),
                    reason="this ComfyUI has no optimized_attention_override (from v0.3.60) for another pack to hold")
def test_existing_attention_override_keeps_running():
    """Another pack's optimized_attention_override (modern ComfyUI) is chained: it sees every attention call,
    NASA's negative attention included, and the result is NASA's."""
    model = flux_patcher()
    pos, neg = cond(1), cond(9)
    seen = []

    def counting_override(func, *args, **kwargs):
        seen.append(args[0].shape)
        return func(*args, **kwargs)

    with_override = model.clone()
    with_override.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counting_override
    expected = sample(apply_nasa(model, cond(2, 7)[0][0], 0.5), pos, neg)
    got = sample(apply_nasa(with_override, cond(2, 7)[0][0], 0.5), pos, neg)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # one call: 4 joint attentions (2 double + 2 single blocks) + NASA's in the 2 steered double blocks:
    # Z- in both, the negative stream's own attention in block 0 (block 1 is the last one that needs it)
    assert len(seen) == 4 + 3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_flux(dtype):
    """FLUX in bf16/fp16 (as users run it): finite, steered, and the whole route at a vanishing alpha is the
    unpatched result exactly (the subtraction is done in fp32 and cast back)."""
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=16, context_in_dim=32, hidden_size=64,
               mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000,
               patch_size=2, qkv_bias=True, guidance_embed=False)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(flux_model.FluxParams)}:
        cfg["txt_ids_dims"] = []
    config = comfy.supported_models.FluxSchnell(cfg)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    init_weights(model.diffusion_model, 0)
    model.diffusion_model.to(dtype)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)
    pos, neg = cond(1), cond(9)
    base = sample(patcher, pos, neg)
    steered = sample(apply_nasa(patcher, cond(2, 7)[0][0], 0.5, blocks={"double", "single"}), pos, neg)
    assert torch.isfinite(steered).all() and (steered - base).abs().max() > 1e-2
    assert torch.equal(sample(apply_nasa(patcher, cond(2, 7)[0][0], 1e-30), pos, neg), base)
