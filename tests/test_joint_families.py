"""NASA on the 2025-2026 joint-attention families (Chroma, FLUX.2, Qwen-Image, HunyuanVideo 1.5) through the
attention-override route (nasa_core/adapters/joint_rows.py), on ComfyUI's real classes.

The reference is independent of the adapter: the unpatched model itself, run once with the positive prompt and once
with the negative as the prompt, gives block 0's joint-attention inputs (q, k, v after the model's own norms and
rotary embedding); block 0's image branch does not read the text, so the second run's text K/V are what the block's
own weights make of the negative. Plain torch (float64) then computes the paper's equation for the image rows,

    Z_img = softmax(q_img K^T / sqrt d) V  -  alpha * softmax(q_img K_neg^T / sqrt d) V_neg

over the negative's real tokens, and NASA's block 0 (read at the input of the image out-projection) must match it
to 1e-5 relative error in fp32. The positive text's rows must equal the unpatched run's to float rounding (the
block's text linears run over more rows, which some CPUs round differently in the last bit).
"""
from __future__ import annotations

import math

import pytest
import torch

import comfy.sample
import comfy.ldm.modules.attention as comfy_attention

from family_testkit import (chroma_patcher, flux2_patcher, hidream_patcher, hunyuan_image21_patcher,
                            hunyuan_video15_patcher, qwen_image_patcher, z_image_patcher)
from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa
from comfyui_nasa.nasa_core.adapters.base import NASAInputError

pytestmark = pytest.mark.compat


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The positive rows are bit-identical only when the matrix products are split the same way: NASA's extra text
    rows make the text branch's GEMMs taller, and a multi-threaded BLAS partitions a taller GEMM differently (the
    last bit of a row can change, as with any change of batch size). One thread makes the partition row-independent,
    so the bit-for-bit assertions here test that the rows are computed from the same inputs by the same operations;
    test_rows_match_to_rounding_with_several_threads checks the multi-threaded case to rounding."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

HAS_OVERRIDE = hasattr(comfy_attention, "wrap_attn")


def _has(module, name):
    try:
        mod = __import__(module, fromlist=[name])
    except ImportError:
        return False
    return hasattr(mod, name)


# name: builder, text width, latent shape, pooled width (FLUX-style models want a pooled vector), block 0's
# image / text out-projections, whether ComfyUI left-pads the text (FLUX.2), the class that must exist.
FAMILIES = {
    "chroma": dict(make=chroma_patcher, ctx=32, latent=(1, 16, 8, 8), pooled=16,
                   img_out=lambda dm: dm.double_blocks[0].img_attn.proj,
                   txt_out=lambda dm: dm.double_blocks[0].txt_attn.proj, block0=lambda dm: dm.double_blocks[0],
                   needs=("comfy.ldm.chroma.model", "Chroma"),
                   real=dict(hidden=3072, heads=24, depth=1, single=0, axes=(16, 56, 56))),
    "flux2": dict(make=flux2_patcher, ctx=48, latent=(1, 32, 4, 4), pooled=16,
                  img_out=lambda dm: dm.double_blocks[0].img_attn.proj,
                  txt_out=lambda dm: dm.double_blocks[0].txt_attn.proj, block0=lambda dm: dm.double_blocks[0],
                  needs=("comfy.model_base", "Flux2"), left_pad=512,
                  real=dict(hidden=3072, heads=24, depth=1, single=0, axes=(32, 32, 32, 32))),  # klein 4B's width
    "qwen_image": dict(make=qwen_image_patcher, ctx=40, latent=(1, 16, 1, 8, 8), pooled=None,
                       img_out=lambda dm: dm.transformer_blocks[0].attn.to_out[0],
                       txt_out=lambda dm: dm.transformer_blocks[0].attn.to_add_out,
                       block0=lambda dm: dm.transformer_blocks[0],
                       needs=("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"),
                       real=dict(heads=24, head_dim=128, layers=1, axes=(16, 56, 56))),
    "hunyuan_video15": dict(make=hunyuan_video15_patcher, ctx=40, latent=(1, 32, 2, 4, 4), pooled=16,
                            img_out=lambda dm: dm.double_blocks[0].img_attn.proj,
                            txt_out=lambda dm: dm.double_blocks[0].txt_attn.proj,
                            block0=lambda dm: dm.double_blocks[0], image_first=True,
                            needs=("comfy.model_base", "HunyuanVideo15"),
                            real=dict(hidden=2048, heads=16, depth=1, single=0, axes=(16, 56, 56))),
    "hunyuan_image21": dict(make=hunyuan_image21_patcher, ctx=40, latent=(1, 64, 4, 4), pooled=None,
                            img_out=lambda dm: dm.double_blocks[0].img_attn.proj,
                            txt_out=lambda dm: dm.double_blocks[0].txt_attn.proj,
                            block0=lambda dm: dm.double_blocks[0], image_first=True,
                            needs=("comfy.supported_models", "HunyuanImage21"),
                            real=dict(hidden=3584, heads=28, depth=1, single=0, axes=(64, 64))),
    # single stream [caption (padded to 32); image (padded to 32)]: one out-projection for all rows
    "z_image": dict(make=z_image_patcher, ctx=32, latent=(1, 16, 8, 8), pooled=None, single=True, pad=32,
                    object_slot=True,
                    img_out=lambda dm: dm.layers[0].attention.out, txt_out=lambda dm: dm.layers[0].attention.out,
                    block0=lambda dm: dm.layers[0], needs=("comfy.supported_models", "ZImage"),
                    real=dict(dim=3840, heads=30, layers=1, refiner=1, axes=(32, 48, 48))),
    "lumina2": dict(make=lambda **kw: z_image_patcher(z_image=False, **kw), ctx=32, latent=(1, 16, 8, 8),
                    pooled=None, single=True, object_slot=True, img_out=lambda dm: dm.layers[0].attention.out,
                    txt_out=lambda dm: dm.layers[0].attention.out, block0=lambda dm: dm.layers[0],
                    needs=("comfy.ldm.lumina.model", "NextDiT"),
                    real=dict(dim=2304, heads=24, kv_heads=8, layers=1, refiner=1, axes=(32, 32, 32))),
    # image first, [T5; last Llama layer] evolving, a fresh Llama layer (4 tokens) per block; the negative needs
    # its Llama states (Apply NASA Model Patch's negative only)
    "hidream": dict(make=hidream_patcher, ctx=32, latent=(1, 16, 8, 8), pooled=16, image_first=True, object_slot=True,
                    llama=dict(states=3, tokens=4, width=24), extra_text=8,
                    img_out=lambda dm: dm.double_stream_blocks[0].block.attn1.to_out,
                    txt_out=lambda dm: dm.double_stream_blocks[0].block.attn1.to_out_t,
                    block0=lambda dm: dm.double_stream_blocks[0], needs=("comfy.ldm.hidream.model",
                                                                         "HiDreamImageTransformer2DModel"),
                    real=dict(heads=20, head_dim=128, double=1, single=0, axes=(64, 32, 32))),
}


def family_or_skip(name):
    spec = FAMILIES[name]
    if not _has(*spec["needs"]):
        pytest.skip(f"this ComfyUI has no {spec['needs'][1]} ({spec['needs'][0]})")
    return spec


def text(seed, tokens, width):
    return torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))


def conditioning(t, spec):
    extra = {} if spec["pooled"] is None else {"pooled_output": torch.zeros(1, spec["pooled"])}
    if spec.get("llama"):  # HiDream: every Llama layer's states, drawn from the text's own values
        ll = spec["llama"]
        g = torch.Generator().manual_seed(int(t.abs().sum().item() * 1000) % (2 ** 31))
        extra["conditioning_llama3"] = torch.randn(1, ll["states"], ll["tokens"], ll["width"], generator=g)
    if spec.get("single"):  # the Lumina 2 / Z-Image text encoders' mask (releases before v0.3.77 require it)
        extra["attention_mask"] = torch.ones(1, t.shape[1], dtype=torch.long)
        extra.setdefault("pooled_output", None)  # what those encoders hand over; v0.5.1 reads the key
    return [[t, extra]]


def sample(model, spec, positive, steps=1, seed=0):
    latent = torch.zeros(spec["latent"])
    noise = comfy.sample.prepare_noise(latent, seed)
    empty = conditioning(torch.zeros(1, 1, spec["ctx"]), spec)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", positive, empty, latent,
                               disable_pbar=True, seed=seed)


class CallRecorder:
    """An attention override already in place before NASA (another node's): records every call and runs it."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, *args, **kwargs):
        q, k, v = (a.detach().clone() for a in args[:3])
        if not kwargs.get("skip_reshape", False):  # [B, L, H*D] (Qwen-Image before v0.3.77): to [B, H, L, D]
            heads = args[3] if len(args) > 3 else kwargs["heads"]
            q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        self.calls.append((q, k, v))
        return func(*args, **kwargs)


def with_recorder(model):
    rec = CallRecorder()
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    m.model_options["transformer_options"] = {**to, "optimized_attention_override": rec}
    return m, rec


class InputHook:
    def __init__(self, module):
        self.inputs = []
        self.handle = module.register_forward_pre_hook(lambda mod, args: self.inputs.append(args[0].detach().clone()))

    def close(self):
        self.handle.remove()


class OutputHook:
    def __init__(self, module):
        self.outputs = []
        self.handle = module.register_forward_hook(lambda mod, args, out: self.outputs.append(
            (out.detach().clone(),) if isinstance(out, torch.Tensor) else tuple(o.detach().clone() for o in out)))

    def close(self):
        self.handle.remove()


def run_block0(model, spec, positive):
    """One denoiser call (1 euler step at cfg 1); returns block 0's first joint call over [text; image] (q, k, v),
    the image and text out-projection inputs, and block 0's outputs."""
    dm = model.model.diffusion_model
    m, rec = with_recorder(model)
    hooks = InputHook(spec["img_out"](dm)), InputHook(spec["txt_out"](dm)), OutputHook(spec["block0"](dm))
    try:
        sample(m, spec, positive)
    finally:
        for h in hooks:
            h.close()
    return rec, hooks[0].inputs[0], hooks[1].inputs[0], hooks[2].outputs[0]


def joint_call(rec, length):
    for q, k, v in rec.calls:
        if q.shape[2] == length and k.shape[2] == length:
            return q, k, v
    raise AssertionError(f"no joint call over {length} tokens among {[c[0].shape for c in rec.calls]}")


def attention64(q, k, v):
    q, k, v = q.double(), k.double(), v.double()
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = w @ v
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def check_block0_reference(model, spec, alpha=0.6, pos_tokens=6, neg_tokens=5, neg_padding=0):
    """NASA's block 0 against the reference (module docstring); returns (nasa, reference) image attention."""
    ctx = spec["ctx"]
    pos_t, neg_t = text(1, pos_tokens, ctx), text(2, neg_tokens, ctx)
    positive = conditioning(pos_t, spec)
    image_first = spec.get("image_first", False)
    left, multiple = spec.get("left_pad"), spec.get("pad")
    if left:  # FLUX.2: ComfyUI left-pads the text with zeros to 512
        p_len, n_len = max(left, pos_tokens), max(left, neg_tokens)
        neg_real = slice(n_len - neg_tokens, n_len)
    elif multiple:  # Z-Image: the caption padded to a multiple of 32 with the learned pad token
        p_len, n_len = -(-pos_tokens // multiple) * multiple, -(-neg_tokens // multiple) * multiple
        neg_real = slice(0, neg_tokens)
    else:  # HiDream: its text also holds the Llama layers' tokens (all real)
        extra = spec.get("extra_text", 0)
        p_len, n_len, neg_real = pos_tokens + extra, neg_tokens + extra, slice(0, neg_tokens + extra)
    # (a) the unpatched model with the positive; (b) with the negative as the prompt
    rec_a, img_in_a, txt_in_a, block_a = run_block0(model, spec, positive)
    if spec.get("single"):  # one out-projection over [caption; image (+ its padding)]
        n_img_region = img_in_a.shape[1] - p_len
        n_img = spec["latent"][-1] * spec["latent"][-2] // 4
    else:
        n_img_region = n_img = img_in_a.shape[1]
    q, k, v = joint_call(rec_a, p_len + n_img_region)
    rec_b, _, _, _ = run_block0(model, spec, conditioning(neg_t, spec))
    _, k_b, v_b = joint_call(rec_b, n_len + n_img_region)
    if image_first:
        img_rows = slice(0, n_img)
        neg_rows = slice(n_img_region + neg_real.start, n_img_region + neg_real.stop)
    else:
        img_rows = slice(p_len, p_len + n_img)
        neg_rows = neg_real
    reference = attention64(q[:, :, img_rows], k, v) - alpha * attention64(q[:, :, img_rows], k_b[:, :, neg_rows],
                                                                           v_b[:, :, neg_rows])
    # NASA, with another node's override in place (it must keep running) and, optionally, zero rows in front of
    # the negative that must not leak in
    neg_given = torch.cat((torch.zeros(1, neg_padding, ctx), neg_t), dim=1) if neg_padding else neg_t
    patched = apply_nasa(model, neg_given, alpha, negative_extra=conditioning(neg_t, spec)[0][1])
    rec_n, img_in_n, txt_in_n, block_n = run_block0(patched, spec, positive)
    assert rec_n.calls, "the override that was in place before NASA stopped running"
    if spec.get("single"):  # NASA's rows: [caption; negative (padded); image]
        nasa = img_in_n[:, p_len + n_len:p_len + n_len + n_img].double()
        plain_img = img_in_a[:, p_len:p_len + n_img].double()
    else:
        nasa, plain_img = img_in_n.double(), img_in_a.double()
    err = (nasa - reference).norm() / reference.norm()
    assert err < 1e-5, f"relative error {err:.2e} against the plain-torch reference"
    # the positive text's rows: its attention output and text update equal to float rounding. The block's text
    # linears (q/k/v, out-projection, MLP) now run over [positive; negative] rows, and a taller matrix product may
    # round a last bit differently on some CPUs even on one thread (seen on a Xeon in December 2026)
    text_rows = slice(0, p_len)
    torch.testing.assert_close(txt_in_n[:, text_rows], txt_in_a[:, text_rows], rtol=1e-5, atol=1e-6)
    txt_index = 0 if len(block_a) == 1 or block_a[0].shape[1] == p_len else 1
    torch.testing.assert_close(block_n[txt_index][:, :p_len], block_a[txt_index][:, :p_len], rtol=1e-5, atol=1e-6)
    assert (nasa - plain_img).abs().max() > 1e-4  # NASA did change the image rows
    return nasa, reference


def nasa(model, spec, neg, alpha, **kw):
    """apply_nasa with the negative's conditioning dict (HiDream reads its Llama states there)."""
    return apply_nasa(model, neg, alpha, negative_extra=conditioning(neg, spec)[0][1], **kw)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_adapter_is_picked_or_refused(name):
    spec = family_or_skip(name)
    model = spec["make"]()
    adapter = adapter_for(model)
    assert adapter.family == adapter.spec.display
    if not HAS_OVERRIDE:
        with pytest.raises(NASAInputError, match="attention override"):
            apply_nasa(model, text(2, 4, spec["ctx"]), 0.5)


def needs_override():
    if not HAS_OVERRIDE:
        pytest.skip("this ComfyUI has no attention override (wrap_attn, v0.3.60+): NASA refuses these families "
                    "(test_adapter_is_picked_or_refused)")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_alpha_zero_is_identity_and_alpha_changes(name):
    spec = family_or_skip(name)
    needs_override()
    model = spec["make"]()
    positive = conditioning(text(1, 6, spec["ctx"]), spec)
    plain = sample(model, spec, positive, steps=2)
    neg = text(2, 5, spec["ctx"])
    assert torch.equal(sample(nasa(model, spec, neg, 0.0), spec, positive, steps=2), plain)
    assert not torch.equal(sample(nasa(model, spec, neg, 0.5), spec, positive, steps=2), plain)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_block0_matches_reference_small(name):
    spec = family_or_skip(name)
    needs_override()
    check_block0_reference(spec["make"](), spec)


def test_flux2_zero_padding_of_the_negative_never_leaks_in():
    spec = family_or_skip("flux2")
    needs_override()
    model = spec["make"]()
    a, ref = check_block0_reference(model, spec, neg_padding=0)
    b, _ = check_block0_reference(model, spec, neg_padding=7)
    assert (a - b).norm() / ref.norm() < 1e-5


def test_dit_patch_already_in_the_slot_keeps_running():
    spec = family_or_skip("qwen_image")
    needs_override()
    model = spec["make"]()

    class Counting:
        calls = 0

        def __deepcopy__(self, memo):
            return self

        def __call__(self, args, extra):
            Counting.calls += 1
            return extra["original_block"](args)

    counting = Counting()
    chained = model.clone()
    chained.set_model_patch_replace(counting, "dit", "double_block", 0)
    positive = conditioning(text(1, 6, spec["ctx"]), spec)
    plain = sample(chained, spec, positive)
    calls_plain = Counting.calls
    out = sample(apply_nasa(chained, text(2, 5, spec["ctx"]), 0.5), spec, positive)
    assert Counting.calls == 2 * calls_plain and not torch.equal(out, plain)


def test_wrong_text_encoder_width_names_both():
    spec = family_or_skip("qwen_image")
    model = spec["make"]()
    with pytest.raises(NASAInputError, match=r"768.*40|40.*768"):
        apply_nasa(model, torch.randn(1, 4, 768), 0.5)


# ------------------------------------------------------------------------------------------------ the nodes


def _nodes():
    from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning
    return ApplyNASAModelPatch(), NASANegativeConditioning()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_negative_conditioning_with_and_without_the_model_patch(name):
    """NASA Negative Conditioning gives what the model patch's own negative gives, on a model through Apply NASA Model
    Patch (no model-wide negative) and alone (its conditioning hook, ComfyUI v0.3.30+: through dit slots, or on
    Z-Image / Lumina 2, whose blocks have none, with its object patches in the live model for the hooked calls only,
    the live modules as they were afterwards)."""
    spec = family_or_skip(name)
    needs_override()
    model = spec["make"]()
    apply_node, negative_node = _nodes()
    positive = conditioning(text(1, 6, spec["ctx"]), spec)
    negative = conditioning(text(2, 5, spec["ctx"]), spec)
    carried, = negative_node.attach(positive, negative, 0.5)
    modules = {n: id(m) for n, m in model.model.named_modules()}
    alone = sample(model, spec, carried, steps=2)
    assert {n: id(m) for n, m in model.model.named_modules()} == modules
    model_wide, = apply_node.patch(model, 0.5, nasa_negative=negative)
    enabled, = apply_node.patch(model, 0.5)
    reference = sample(model_wide, spec, positive, steps=2)
    torch.testing.assert_close(sample(enabled, spec, carried, steps=2), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, reference, atol=1e-5, rtol=1e-5)
    assert (reference - sample(model, spec, positive, steps=2)).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(FAMILIES))
def test_cfg_leaves_the_uncond_branch_alone(name):
    spec = family_or_skip(name)
    needs_override()
    from dit_testkit import check_cfg_leaves_uncond_alone

    def cfg_sample(model, positive, negative, cfg):
        latent = torch.zeros(spec["latent"])
        noise = comfy.sample.prepare_noise(latent, 0)
        return comfy.sample.sample(model, noise, 1, cfg, "euler", "simple", positive, negative, latent,
                                   disable_pbar=True, seed=0)

    check_cfg_leaves_uncond_alone(spec["make"](), cfg_sample,
                                  cond=lambda seed: conditioning(text(seed, 6 if seed == 1 else 4, spec["ctx"]), spec),
                                  neg=None, patch=lambda m: nasa(m, spec, text(2, 5, spec["ctx"]), 0.8))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16(name):
    """The whole model in bfloat16 (weights and compute, as ComfyUI runs these families): NASA runs, changes the
    result, and alpha 0 stays exact."""
    spec = family_or_skip(name)
    needs_override()
    model = spec["make"]()
    dm = model.model.diffusion_model
    dm.to(torch.bfloat16)
    dm.dtype = torch.bfloat16
    model.model.manual_cast_dtype = None
    positive = conditioning(text(1, 6, spec["ctx"]), spec)
    neg = text(2, 5, spec["ctx"])
    plain = sample(model, spec, positive)
    assert torch.equal(sample(nasa(model, spec, neg, 0.0), spec, positive), plain)
    out = sample(nasa(model, spec, neg, 0.5), spec, positive)
    assert torch.isfinite(out).all() and not torch.equal(out, plain)


def test_hidream_negative_needs_its_llama_states():
    """HiDream's text is T5 plus every Llama layer: a negative without them (a bare tensor) is refused with what to
    connect instead; both nodes pass the negative CONDITIONING's Llama states on (the test above)."""
    spec = family_or_skip("hidream")
    needs_override()
    model = spec["make"]()
    positive = conditioning(text(1, 6, spec["ctx"]), spec)
    with pytest.raises(NASAInputError, match="needs the negative's Llama states"):
        sample(apply_nasa(model, text(2, 5, spec["ctx"]), 0.5), spec, positive)


def test_qwen_image_edit_reference_latents_are_never_steered():
    """Qwen-Image-Edit's reference latents sit after the generated image in the joint sequence: their rows of block
    0's joint attention are bit-identical with NASA, while the generated image's rows are steered."""
    spec = family_or_skip("qwen_image")
    needs_override()
    model = spec["make"]()
    ref = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    positive = [[text(1, 6, spec["ctx"]), {"reference_latents": [ref]}]]
    _, img_plain, _, _ = run_block0(model, spec, positive)
    _, img_nasa, _, _ = run_block0(apply_nasa(model, text(2, 5, spec["ctx"]), 0.8), spec, positive)
    generated = 16  # 8 x 8 latent, 2 x 2 patches
    assert img_plain.shape[1] == 2 * generated  # the reference's tokens are there
    assert torch.equal(img_nasa[:, generated:], img_plain[:, generated:])
    assert (img_nasa[:, :generated] - img_plain[:, :generated]).abs().max() > 1e-4


def test_hunyuan_video15_byt5_glyph_tokens_are_never_subtracted():
    """HunyuanVideo 1.5 puts byT5 glyph tokens in front of the LLM text: with NASA every positive text row (glyph
    tokens included) keeps its joint-attention output bit for bit, and the negative (LLM text only) follows them."""
    spec = family_or_skip("hunyuan_video15")
    needs_override()
    model = spec["make"]()
    glyphs = torch.randn(1, 3, 1472, generator=torch.Generator().manual_seed(6))
    positive = [[text(1, 6, spec["ctx"]), {"pooled_output": torch.zeros(1, 16), "conditioning_byt5small": glyphs}]]
    _, img_plain, txt_plain, _ = run_block0(model, spec, positive)
    _, img_nasa, txt_nasa, _ = run_block0(apply_nasa(model, text(2, 5, spec["ctx"]), 0.8), spec, positive)
    assert txt_plain.shape[1] == 3 + 6
    assert torch.equal(txt_nasa[:, :9], txt_plain)
    assert (img_nasa - img_plain).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["chroma", "qwen_image"])
def test_rows_match_to_rounding_with_several_threads(name, one_blas_thread):
    """With two BLAS threads the positive text rows of block 0 equal the unpatched ones to float rounding."""
    spec = family_or_skip(name)
    needs_override()
    torch.set_num_threads(2)
    model = spec["make"]()
    positive = conditioning(text(1, 6, spec["ctx"]), spec)
    _, _, txt_plain, _ = run_block0(model, spec, positive)
    _, _, txt_nasa, _ = run_block0(apply_nasa(model, text(2, 5, spec["ctx"]), 0.8), spec, positive)
    n = txt_plain.shape[1]
    torch.testing.assert_close(txt_nasa[:, :n], txt_plain, rtol=1e-5, atol=1e-6)
