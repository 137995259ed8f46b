"""NASA on ComfyUI's real LTX-Video (comfy.ldm.lightricks.model.LTXVModel through supported_models.LTXV), 5-D video
latents sampled through comfy.sample; the positive carries T5's attention mask as the text encoder gives it. And on
LTX-2 (comfy.ldm.lightricks.av_model.LTXAVModel through supported_models.LTXAV, where the release has the class):
video and audio latents sampled together (a NestedTensor, as LTXVConcatAVLatent gives it)."""
import pytest
import torch
import torch.nn.functional as F

try:
    import comfy.ldm.lightricks.model  # noqa: F401
except ImportError:
    pytest.skip("this ComfyUI has no LTX-Video (comfy.ldm.lightricks.model.LTXVModel): the LTX adapter never matches "
                "here", allow_module_level=True)

from comfyui_nasa.nasa_core.adapters import ltx

if ltx._ltx_classes() is None:
    pytest.skip("this ComfyUI has LTX-Video (comfy.ldm.lightricks.model.LTXVModel) but no APPLY_MODEL wrappers "
                "(comfy.patcher_extension.WrappersMP, from v0.3.10; the PyPI copy has none), which NASA needs to reach "
                "blocks that get no transformer_options: the LTX adapter does not match here", allow_module_level=True)

import comfy.model_management
import comfy.sample
import comfy.supported_models
import comfy.utils
import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa
from comfyui_nasa.nasa_core.adapters.comfy_runtime import wrong_width_message
from comfyui_nasa.nasa_core.adapters.dit_crossattn import tag_negative_mask
from comfyui_nasa.nasa_core.adapters.ltx import LTX2Adapter, LTXNASACrossAttention, LTXVAdapter
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning
import test_joint_families

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)
one_blas_thread = test_joint_families.one_blas_thread  # autouse: one BLAS thread, as bits are compared here

WIDTH = 32  # T5 width of the tiny models
DEPTH = 3


def ltxv_patcher(heads=2, head_dim=16, caption=WIDTH, layers=DEPTH, seed=0, dtype=None):
    """LTX-Video through ComfyUI's LTXV config (128-channel latent; cross_attention_dim = the model width)."""
    config = comfy.supported_models.LTXV({"image_model": "ltxv", "in_channels": 128, "num_layers": layers,
                                          "attention_head_dim": head_dim, "num_attention_heads": heads,
                                          "cross_attention_dim": heads * head_dim, "caption_channels": caption})
    if dtype is not None:
        config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    tk.init_weights(model.diffusion_model, seed)
    with torch.no_grad():  # the modulation tables start empty; small values keep the tiny model well scaled
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.diffusion_model.named_parameters():
            if name.endswith("scale_shift_table"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return dk.patcher(model)


@pytest.fixture(scope="module")
def model():
    return ltxv_patcher()


def t5_mask(tokens, real):
    mask = torch.zeros(1, tokens, dtype=torch.long)
    mask[:, :real] = 1
    return mask


def cond(seed, tokens=9, real=6, width=WIDTH):
    """A T5 prompt as ComfyUI's LTXV text encoder gives it: padded tokens (not zero) and the attention mask."""
    return [[tk.text(seed, tokens=tokens, width=width), {"attention_mask": t5_mask(tokens, real)}]]


def neg(seed, tokens=5, batch=1, width=WIDTH):
    return tk.text(seed, tokens=tokens, width=width, batch=batch)


def sample(m, positive, steps=1, negative=None, **kw):
    if negative is None:
        negative = [[torch.zeros(1, 9, WIDTH), {"attention_mask": t5_mask(9, 9)}]]
    return dk.sample_latent(m, positive, dk.video_latent(frames=2, size=4, channels=128), steps=steps,
                            negative=negative, **kw)


# ------------------------------------------------------------------------------------------------------------
# Plain-torch reference (float64)


def rms(x, norm):
    eps = norm.eps if getattr(norm, "eps", None) is not None else torch.finfo(torch.float32).eps
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight.double()


def caption_projection(model, text, which="caption_projection"):
    p = getattr(model, which)
    return dk.linear(F.gelu(dk.linear(text, p.linear_1), approximate="tanh"), p.linear_2)


def ltx_reference(attn, x, context, pos_real, neg_embedded, alpha):
    """to_out(softmax(Q K+^T/sqrt d) V+ - alpha softmax(Q K-^T/sqrt d) V-) over the real tokens only: the positive's
    first ``pos_real`` tokens (what its mask keeps), the negative's given real tokens."""
    heads = attn.heads
    q = rms(dk.linear(x, attn.to_q), attn.q_norm)
    ctx = context[:, :pos_real]
    k, v = rms(dk.linear(ctx, attn.to_k), attn.k_norm), dk.linear(ctx, attn.to_v)
    k_neg = rms(dk.linear(neg_embedded, attn.to_k), attn.k_norm).expand(x.shape[0], -1, -1)
    v_neg = dk.linear(neg_embedded, attn.to_v).expand(x.shape[0], -1, -1)
    z = dk.softmax_attention(q, k, v, heads) - alpha * dk.softmax_attention(q, k_neg, v_neg, heads)
    return dk.linear(z, attn.to_out[0])


class Capture(dk.Capture):
    """dk.Capture with the inputs cloned: LTX's block adds attn2's output to x in place after the call."""

    def hook(self, module, args, kwargs, output):
        copy = lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t  # noqa: E731
        out = tuple(map(copy, output)) if isinstance(output, tuple) else copy(output)  # LTX-2's blocks: (video, audio)
        self.calls.append(([copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}, out))


def captured_calls(patched, keys, positive, latent):
    """(args, kwargs, output) of the one call of each layer in ``keys`` in one step."""
    captures = [Capture(patched.object_patches[key]) for key in keys]
    try:
        dk.sample_latent(patched, positive, latent, negative=[[torch.zeros_like(positive[0][0][:, :1]), {}]])
    finally:
        for capture in captures:
            capture.close()
    return [capture.calls[0] for capture in captures if len(capture.calls) == 1]


def captured_call(patched, key, positive, latent):
    return captured_calls(patched, [key], positive, latent)[0]


# ------------------------------------------------------------------------------------------------------------


def test_adapter_is_chosen_and_alpha_zero_is_the_unpatched_model(model):
    base = dk.check_alpha_zero_is_the_unpatched_model(model, LTXVAdapter, sample, cond, neg, WIDTH)
    assert base.shape == (1, 128, 2, 4, 4)


def test_every_attn2_is_patched_and_the_model_is_restored(model):
    dk.check_every_layer_is_patched_and_the_model_restored(
        model, LTXNASACrossAttention, [f"diffusion_model.transformer_blocks.{i}.attn2" for i in range(DEPTH)],
        "CrossAttention", sample, cond, neg)


def test_block_against_plain_torch_reference_at_ltx_video_2b_width():
    """LTX-Video 2B's real widths (32 heads x 64 = 2048, T5 4096), one block: the patched attn2 equals
    to_out(softmax(QK+)V+ - alpha softmax(QK-)V-), the positive over the tokens its T5 mask keeps, the negative over
    its real tokens (its T5 padding, tagged by its attention mask, left out), computed here in float64."""
    big = ltxv_patcher(heads=32, head_dim=64, caption=4096, layers=1)
    positive = cond(1, tokens=10, real=7, width=4096)
    real = tk.text(2, tokens=4, width=4096)
    padded = tag_negative_mask(torch.cat([real, tk.text(3, tokens=3, width=4096)], dim=1), t5_mask(7, 4))
    alpha = 0.5
    patched = apply_nasa(big, padded, alpha)
    key = "diffusion_model.transformer_blocks.0.attn2"
    args, kwargs, output = captured_call(patched, key, positive, dk.video_latent(frames=1, size=2, channels=128))
    mask = kwargs["mask"]
    assert mask is not None and mask.shape[-1] == 10  # the model's own additive text mask reached the layer
    stock = big.get_model_object(key)
    expected = ltx_reference(stock, args[0], kwargs["context"], 7, caption_projection(big.model.diffusion_model, real),
                             alpha)
    rel = ((output.double() - expected).abs().max() / expected.abs().max()).item()
    print(f"LTX-Video 2B attn2 vs float64 reference: relative error {rel:.2e}")
    assert rel < 1e-5
    # the masks matter: keeping the positive's padding, or the negative's, gives another layer output
    assert (ltx_reference(stock, args[0], kwargs["context"], 10, caption_projection(big.model.diffusion_model, real),
                          alpha) - expected).abs().max() > 1e-4
    assert (ltx_reference(stock, args[0], kwargs["context"], 7,
                          caption_projection(big.model.diffusion_model, padded), alpha) - expected).abs().max() > 1e-4


def test_the_negatives_padding_never_reaches_the_subtracted_term(model):
    """A negative's T5 padding (non-zero rows hidden by its attention mask) or zero rows: the result is that of the
    negative cut to its real tokens, whatever the padded rows hold."""
    pos, real = cond(1), neg(2, tokens=4)
    reference = sample(apply_nasa(model, real, 0.7), pos, steps=2)
    for filler in (neg(5, tokens=4), 3.0 * neg(6, tokens=4)):
        padded = tag_negative_mask(torch.cat([real, filler], dim=1), t5_mask(8, 4))
        torch.testing.assert_close(sample(apply_nasa(model, padded, 0.7), pos, steps=2), reference,
                                   rtol=1e-6, atol=1e-6)
    zero_padded = torch.cat([real, torch.zeros(1, 4, WIDTH)], dim=1)
    torch.testing.assert_close(sample(apply_nasa(model, zero_padded, 0.7), pos, steps=2), reference,
                               rtol=1e-6, atol=1e-6)
    # without its mask, the padding is part of the negative (what NASA would do with an untagged T5 negative)
    untagged = torch.cat([real, neg(5, tokens=4)], dim=1)
    assert (sample(apply_nasa(model, untagged, 0.7), pos, steps=2) - reference).abs().max() > 1e-4


def test_the_nodes_negative_keeps_its_t5_padding_out(model):
    """Through Apply NASA Model Patch, a negative CONDITIONING as ComfyUI's LTXV text encoder gives it (padded rows
    that are not zero, and its attention mask in the dict): the result is that of the negative cut to its real
    tokens."""
    pos, real = cond(1), neg(2, tokens=4)
    reference = sample(apply_nasa(model, real, 0.7), pos, steps=2)
    negative = [[torch.cat([real, neg(5, tokens=4)], dim=1), {"attention_mask": t5_mask(8, 4)}]]
    patched, = ApplyNASAModelPatch().patch(model, 0.7, nasa_negative=negative)
    torch.testing.assert_close(sample(patched, pos, steps=2), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("blocks,chosen", [({"default"}, [0, 1, 2]), ({"all"}, [0, 1, 2]), ({1}, [1]),
                                           ({"output"}, [2])])
def test_block_choice(model, blocks, chosen):
    patched = apply_nasa(model, neg(2), 0.5, blocks=blocks)
    keys = sorted(k for k, v in patched.object_patches.items() if isinstance(v, LTXNASACrossAttention))
    assert keys == [f"diffusion_model.transformer_blocks.{i}.attn2" for i in chosen]


def test_the_positive_mask_is_honoured_as_the_model_does(model):
    """NASA's Z+ is the model's own masked call: with the negative at a vanishing scale the output is the plain
    model's, and the plain model's output does not depend on what the masked positive tokens hold."""
    pos = cond(1)
    other = [[pos[0][0].clone(), dict(pos[0][1])]]
    other[0][0][:, 6:] = torch.randn(1, 3, WIDTH)
    base = sample(model, pos, steps=2)
    assert torch.equal(sample(model, other, steps=2), base)
    tiny = sample(apply_nasa(model, neg(2), 1e-7), other, steps=2)
    torch.testing.assert_close(tiny, base, rtol=1e-5, atol=1e-5)


def test_bf16_weights_and_compute():
    """bf16 end to end (LTX's usual dtype): the negative is cast to the layer's dtype, its padding mask is built
    in bf16 as the model builds its own, alpha 0 is the plain model."""
    m = ltxv_patcher(dtype=torch.bfloat16)
    assert next(m.model.diffusion_model.parameters()).dtype == torch.bfloat16
    pos = cond(1)
    base = sample(m, pos, steps=2)
    assert torch.equal(sample(apply_nasa(m, neg(2), 0.0), pos, steps=2), base)
    padded = tag_negative_mask(torch.cat([neg(2, tokens=4), neg(5, tokens=4)], dim=1), t5_mask(8, 4))
    out = sample(apply_nasa(m, padded, 0.5), pos, steps=2)
    assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-2


def test_per_prompt_negative_equals_model_wide_negative(model):
    dk.check_per_prompt_equals_model_wide(model, sample, cond, neg)


def test_negative_conditioning_alone_equals_the_model_patch(model):
    """NASA's LTX-Video patches are object patches: NASA Negative Conditioning without Apply NASA Model Patch puts them
    into the live model for its prompt's calls only, so it gives what the patch gives and leaves the live modules as
    they were; with the patch too, the prompt's negative is applied once."""
    dk.check_negative_conditioning_alone(model, sample, cond, neg)


def test_cfg_leaves_the_uncond_branch_alone(model):
    dk.check_cfg_leaves_uncond_alone(model, sample, cond, neg)


def test_existing_patches_are_chained_not_dropped(model):
    """An object patch already on a block's attn2 is called (with the text mask) and NASA subtracts after it; a
    ("double_block", i) replace patch around the whole block keeps running with NASA inside."""
    key = "diffusion_model.transformer_blocks.1.attn2"
    other = model.clone()
    stock = model.get_model_object(key)
    offset = dk.OffsetLayer(stock, torch.full((32,), 0.25))
    other.add_object_patch(key, offset)
    block_calls = dk.record_block_calls(other, 2)
    negative, alpha = neg(2), 0.5
    patched = apply_nasa(other, negative, alpha)
    args, kwargs, output = captured_call(patched, key, cond(1), dk.video_latent(frames=2, size=4, channels=128))
    assert offset.calls == 1 and block_calls == [1]
    assert kwargs["mask"] is not None
    expected = ltx_reference(stock, args[0], kwargs["context"], 6,
                             caption_projection(model.model.diffusion_model, negative), alpha) + 0.25
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_named(model):
    with pytest.raises(NASAInputError) as err:
        apply_nasa(model, torch.randn(1, 5, 4096), 0.5)
    assert str(err.value) == wrong_width_message(4096, WIDTH, "LTXV")
    with pytest.raises(NASAInputError, match="attention mask"):
        apply_nasa(model, tag_negative_mask(neg(2), t5_mask(7, 3)), 0.5)
    with pytest.raises(NASAInputError, match="batch 3 but the latent batch is 1"):
        sample(apply_nasa(model, neg(2, batch=3), 0.5), cond(1))


# ------------------------------------------------------------------------------------------------------------
# LTX-2 (LTXAVModel): attn2 of the video tokens, audio_attn2 of the audio tokens, over two halves of one text stream

needs_ltx2 = pytest.mark.skipif(ltx._ltx_classes()[2] is None,
                                reason="this ComfyUI has no LTX-2 (comfy.ldm.lightricks.av_model.LTXAVModel, from "
                                "v0.8.0 in the matrix): the LTX-2 adapter never matches here")
AV_HALF = 24  # each half of the tiny LTX-2's text stream (caption_channels)
AV_WIDTH = 2 * AV_HALF
AV_SLOTS = ("attn2", "audio_attn2")


def ltxav_patcher(heads=2, head_dim=16, audio_heads=2, audio_head_dim=8, caption=AV_HALF, layers=DEPTH, seed=0):
    """LTX-2 through ComfyUI's LTXAV config (128-channel video latent, 8 x 16 audio latent)."""
    config = comfy.supported_models.LTXAV({
        "image_model": "ltxav", "in_channels": 128, "audio_in_channels": 128, "num_layers": layers,
        "attention_head_dim": head_dim, "num_attention_heads": heads, "cross_attention_dim": heads * head_dim,
        "audio_attention_head_dim": audio_head_dim, "audio_num_attention_heads": audio_heads,
        "audio_cross_attention_dim": audio_heads * audio_head_dim, "caption_channels": caption})
    model = config.get_model({})
    tk.init_weights(model.diffusion_model, seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.diffusion_model.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return dk.patcher(model)


@pytest.fixture(scope="module")
def av_model():
    return ltxav_patcher()


def av_latent(frames=2, size=4, audio=5):
    import comfy.nested_tensor
    return comfy.nested_tensor.NestedTensor([torch.zeros(1, 128, frames, size, size), torch.zeros(1, 8, audio, 16)])


def av_cond(seed, tokens=9, real=None, width=AV_WIDTH):
    """A prompt as ComfyUI's LTX-2 text encoder gives it: [video half | audio half], no attention mask (``real``:
    one with a mask, as another encoder might give it)."""
    extra = {} if real is None else {"attention_mask": t5_mask(tokens, real)}
    return [[tk.text(seed, tokens=tokens, width=width), extra]]


def av_neg(seed, tokens=5, batch=1, width=AV_WIDTH):
    return tk.text(seed, tokens=tokens, width=width, batch=batch)


def av_sample(m, positive, steps=1, negative=None, **kw):
    """The video and audio outputs packed into one tensor, as ComfyUI's sampler packs them: [B, 1, video | audio]."""
    out = dk.sample_latent(m, positive, av_latent(), steps=steps, negative=negative, **kw)
    return comfy.utils.pack_latents(out.unbind())[0]


def av_parts(out):
    """(video, audio) of a packed output."""
    video = 128 * 2 * 4 * 4  # av_latent()'s video latent
    return out[..., :video], out[..., video:]


def av_changed(a, b):
    return min((x - y).abs().max().item() for x, y in zip(av_parts(a), av_parts(b)))


def av_keys(blocks):
    return [f"diffusion_model.transformer_blocks.{i}.{slot}" for i in blocks for slot in AV_SLOTS]


def nasa_keys(patched):
    return sorted(k for k, v in patched.object_patches.items() if isinstance(v, LTXNASACrossAttention))


@needs_ltx2
def test_ltx2_adapter_is_chosen_and_alpha_zero_or_no_negative_is_the_unpatched_model(av_model):
    assert isinstance(adapter_for(av_model), LTX2Adapter)
    pos = av_cond(1)
    base = av_sample(av_model, pos, steps=2)
    assert torch.equal(av_sample(apply_nasa(av_model, av_neg(2), 0.0), pos, steps=2), base)
    for negative in (None, [[torch.zeros(1, 5, AV_WIDTH), {}]]):  # no negative, an empty one
        patched, = ApplyNASAModelPatch().patch(av_model, 0.5, nasa_negative=negative)
        assert torch.equal(av_sample(patched, pos, steps=2), base)


@needs_ltx2
def test_ltx2_video_and_audio_cross_attention_are_patched_and_the_model_is_restored(av_model):
    pos = av_cond(1)
    base = av_sample(av_model, pos, steps=2)
    patched = apply_nasa(av_model, av_neg(2), 0.5)
    assert nasa_keys(patched) == sorted(av_keys(range(DEPTH)))
    run = patched.model_options["model_function_wrapper"]
    out = av_sample(patched, pos, steps=3)
    assert av_changed(out, av_sample(av_model, pos, steps=3)) > 1e-3  # the video and the audio both move
    assert run.calls_applied == 3
    assert (run.cache.embedded, run.cache.computed) == (1, 2 * DEPTH)  # both halves once, each layer once
    assert torch.equal(av_sample(av_model, pos, steps=2), base)
    for block in av_model.model.diffusion_model.transformer_blocks:
        assert type(block.attn2).__name__ == type(block.audio_attn2).__name__ == "CrossAttention"


@needs_ltx2
def test_ltx2_nothing_stays_patched_after_a_run_an_error_or_an_interrupt(av_model):
    from test_release_compat import interrupt_at_first_step, live_modules, patcher_state
    state, modules = patcher_state(av_model), live_modules(av_model)
    pos = av_cond(1)
    base = av_sample(av_model, pos, steps=2)
    patched = apply_nasa(av_model, av_neg(2), 0.8)
    steered = av_sample(patched, pos, steps=2)
    latent = av_latent()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 0), 2, 1.0, "euler", "simple", pos,
                            [[torch.zeros(1, 1, AV_WIDTH), {}]], latent, callback=interrupt_at_first_step,
                            disable_pbar=True, seed=0)
    comfy.model_management.interrupt_current_processing(False)
    bad, = NASANegativeConditioning().attach(pos, [[torch.randn(1, 4, AV_HALF), {}]], 0.5)
    with pytest.raises(NASAInputError, match="wide but this"):
        av_sample(patched, bad, steps=2)
    assert patcher_state(av_model) == state and live_modules(av_model) == modules
    assert torch.equal(av_sample(av_model, pos, steps=2), base)
    assert torch.equal(av_sample(patched, pos, steps=2), steered)


def ltx2_references(model, calls, pos_real, negative, real, alpha):
    """The float64 reference of the video attn2 and the audio audio_attn2 calls of block 0: the video one steered by
    the negative's video half through caption_projection, the audio one by its audio half through
    audio_caption_projection; ``pos_real``, ``real``: the positive's and the negative's real tokens."""
    dm, half = model.model.diffusion_model, negative.shape[-1] // 2
    return [ltx_reference(model.get_model_object(key), args[0], kwargs["context"], pos_real,
                          caption_projection(dm, text[:, :real], which), alpha)
            for (args, kwargs, _), key, text, which in zip(
                calls, av_keys([0]), (negative[..., :half], negative[..., half:]),
                ("caption_projection", "audio_caption_projection"))]


@needs_ltx2
def test_ltx2_block_against_plain_torch_reference():
    """LTX-2's real head sizes (video 128, audio 64) and text width (2 x 3840), fewer heads, one block: the patched
    attn2 and audio_attn2 each equal to_out(softmax(QK+)V+ - alpha softmax(QK-)V-) with K-/V- from the negative's
    own half (its padding, tagged by its attention mask, left out), computed here in float64."""
    big = ltxav_patcher(heads=4, head_dim=128, audio_heads=4, audio_head_dim=64, caption=3840, layers=1)
    positive = av_cond(1, tokens=10, real=7, width=7680)  # with a text mask: both layers must keep it
    padded = tag_negative_mask(torch.cat([av_neg(2, tokens=4, width=7680), av_neg(3, tokens=3, width=7680)], dim=1),
                               t5_mask(7, 4))
    alpha = 0.5
    patched = apply_nasa(big, padded, alpha)
    calls = captured_calls(patched, av_keys([0]), positive, av_latent(frames=1, size=2, audio=3))
    assert len(calls) == 2 and all(kwargs["mask"].shape[-1] == 10 for _, kwargs, _ in calls)
    for (_, _, output), expected, name in zip(calls, ltx2_references(big, calls, 7, padded, 4, alpha), AV_SLOTS):
        rel = ((output.double() - expected).abs().max() / expected.abs().max()).item()
        print(f"LTX-2 {name} vs float64 reference: relative error {rel:.2e}")
        assert rel < 1e-5
    # the masks matter, and each half steers its own layer: the positive's or the negative's padding, or the other
    # half, would give another output
    swapped = torch.cat([padded[..., 3840:], padded[..., :3840]], dim=-1)
    for wrong in (ltx2_references(big, calls, 10, padded, 4, alpha), ltx2_references(big, calls, 7, padded, 7, alpha),
                  ltx2_references(big, calls, 7, swapped, 4, alpha)):
        for (_, _, output), other in zip(calls, wrong):
            assert (output.double() - other).abs().max() > 1e-4


@needs_ltx2
def test_ltx2_each_half_of_the_negative_reaches_only_its_own_layer(av_model):
    """Block 0's video attn2 does not read the negative's audio half, nor its audio_attn2 the video half (in block 0
    neither stream has yet met the other)."""
    negative = av_neg(2)
    other_audio, other_video = negative.clone(), negative.clone()
    other_audio[..., AV_HALF:] = av_neg(3)[..., AV_HALF:]
    other_video[..., :AV_HALF] = av_neg(3)[..., :AV_HALF]
    keys, pos = av_keys([0]), av_cond(1)
    video, audio = (call[2] for call in captured_calls(apply_nasa(av_model, negative, 0.7), keys, pos, av_latent()))
    video_a, audio_a = (call[2] for call in captured_calls(apply_nasa(av_model, other_audio, 0.7), keys, pos,
                                                           av_latent()))
    video_v, audio_v = (call[2] for call in captured_calls(apply_nasa(av_model, other_video, 0.7), keys, pos,
                                                           av_latent()))
    assert torch.equal(video_a, video) and torch.equal(audio_v, audio)
    assert (audio_a - audio).abs().max() > 1e-4 and (video_v - video).abs().max() > 1e-4


@needs_ltx2
def test_ltx2_the_negatives_padding_never_reaches_the_subtracted_term(av_model):
    pos, real = av_cond(1), av_neg(2, tokens=4)
    reference = av_sample(apply_nasa(av_model, real, 0.7), pos, steps=2)
    padded = [torch.cat([real, 3.0 * av_neg(5, tokens=4)], dim=1), {"attention_mask": t5_mask(8, 4)}]
    through_node, = ApplyNASAModelPatch().patch(av_model, 0.7, nasa_negative=[padded])
    torch.testing.assert_close(av_sample(through_node, pos, steps=2), reference, rtol=1e-6, atol=1e-6)
    zero_padded = torch.cat([real, torch.zeros(1, 4, AV_WIDTH)], dim=1)
    torch.testing.assert_close(av_sample(apply_nasa(av_model, zero_padded, 0.7), pos, steps=2), reference,
                               rtol=1e-6, atol=1e-6)
    untagged = torch.cat([real, av_neg(5, tokens=4)], dim=1)  # without its mask the padding is part of the negative
    assert (av_sample(apply_nasa(av_model, untagged, 0.7), pos, steps=2) - reference).abs().max() > 1e-4


@needs_ltx2
def test_ltx2_the_positive_text_and_the_other_layers_are_untouched(av_model):
    """The positive's masked tokens stay hidden exactly as without NASA; NASA in the last block only leaves the
    earlier blocks' video and audio tokens bit-identical, and no layer but the text cross-attentions is patched."""
    pos = av_cond(1, real=6)
    other = [[pos[0][0].clone(), dict(pos[0][1])]]
    other[0][0][:, 6:] = torch.randn(1, 3, AV_WIDTH)
    steered = apply_nasa(av_model, av_neg(2), 0.7)
    assert torch.equal(av_sample(steered, other, steps=2), av_sample(steered, pos, steps=2))
    last = apply_nasa(av_model, av_neg(2), 0.7, blocks={"output"})
    assert nasa_keys(last) == av_keys([DEPTH - 1]) and set(last.object_patches) == set(av_keys([DEPTH - 1]))
    blocks = av_model.model.diffusion_model.transformer_blocks
    outputs = []
    for m in (av_model, last):
        captures = [Capture(block) for block in blocks]
        try:
            av_sample(m, pos)
        finally:
            for c in captures:
                c.close()
        outputs.append([c.calls[0][2] for c in captures])
    for i in range(DEPTH - 1):
        assert all(torch.equal(a, b) for a, b in zip(outputs[0][i], outputs[1][i]))
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(outputs[0][-1], outputs[1][-1]))


@needs_ltx2
@pytest.mark.parametrize("blocks,chosen", [({"default"}, [0, 1, 2]), ({1}, [1]), ({"input"}, [0])])
def test_ltx2_block_choice(av_model, blocks, chosen):
    assert nasa_keys(apply_nasa(av_model, av_neg(2), 0.5, blocks=blocks)) == sorted(av_keys(chosen))


@needs_ltx2
def test_ltx2_per_prompt_negative_equals_model_wide_negative(av_model):
    dk.check_per_prompt_equals_model_wide(av_model, av_sample, av_cond, av_neg)


@needs_ltx2
def test_ltx2_cfg_leaves_the_uncond_branch_alone(av_model):
    dk.check_cfg_leaves_uncond_alone(av_model, av_sample, av_cond, av_neg)


@needs_ltx2
def test_ltx2_a_negative_of_the_wrong_width_is_named(av_model):
    """One half of the stream (or LTX-Video's T5) is not LTX-2's text: the error names both widths."""
    for width in (AV_HALF, 4096):
        with pytest.raises(NASAInputError) as err:
            apply_nasa(av_model, torch.randn(1, 5, width), 0.5)
        assert str(err.value) == wrong_width_message(width, AV_WIDTH, "LTXAV")
        assert f"{width}" in str(err.value) and f"{AV_WIDTH}" in str(err.value)
