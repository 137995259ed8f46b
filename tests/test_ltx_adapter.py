"""NASA on ComfyUI's real LTX-Video (comfy.ldm.lightricks.model.LTXVModel through supported_models.LTXV), 5-D video
latents sampled through comfy.sample; the positive carries T5's attention mask as the text encoder gives it."""
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

import comfy.supported_models
import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa
from comfyui_nasa.nasa_core.adapters.base import UnsupportedModelError
from comfyui_nasa.nasa_core.adapters.comfy_runtime import wrong_width_message
from comfyui_nasa.nasa_core.adapters.dit_crossattn import tag_negative_mask
from comfyui_nasa.nasa_core.adapters.ltx import LTXNASACrossAttention, LTXVAdapter
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

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


def caption_projection(model, text):
    p = model.caption_projection
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
        self.calls.append(([copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}, output.detach().clone()))


def captured_call(patched, key, positive, latent):
    capture = Capture(patched.object_patches[key])
    try:
        dk.sample_latent(patched, positive, latent, negative=[[torch.zeros_like(positive[0][0][:, :1]), {}]])
    finally:
        capture.close()
    (args, kwargs, output), = capture.calls
    return args, kwargs, output


# ------------------------------------------------------------------------------------------------------------


def test_adapter_is_chosen_and_alpha_zero_is_the_unpatched_model(model):
    assert isinstance(adapter_for(model), LTXVAdapter)
    pos = cond(1)
    base = sample(model, pos, steps=2)
    assert base.shape == (1, 128, 2, 4, 4)
    assert torch.equal(sample(apply_nasa(model, neg(2), 0.0), pos, steps=2), base)
    patched, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=[[torch.zeros(1, 5, WIDTH), {}]])
    assert torch.equal(sample(patched, pos, steps=2), base)


def test_every_attn2_is_patched_and_the_model_is_restored(model):
    pos = cond(1)
    base = sample(model, pos, steps=2)
    patched = apply_nasa(model, neg(2), 0.5)
    keys = sorted(k for k, v in patched.object_patches.items() if isinstance(v, LTXNASACrossAttention))
    assert keys == [f"diffusion_model.transformer_blocks.{i}.attn2" for i in range(DEPTH)]
    run = patched.model_options["model_function_wrapper"]
    out = sample(patched, pos, steps=3)
    assert (out - base).abs().max() > 1e-3
    assert run.calls_applied == 3
    assert (run.dit_cache.embedded, run.dit_cache.computed) == (1, DEPTH)  # K-/V- cached across the 3 steps
    assert torch.equal(sample(model, pos, steps=2), base)
    for i, block in enumerate(model.model.diffusion_model.transformer_blocks):
        assert type(block.attn2).__name__ == "CrossAttention"
        patch = patched.object_patches[f"diffusion_model.transformer_blocks.{i}.attn2"]
        assert dict(patch.named_parameters()) == dict(block.attn2.named_parameters())


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


def test_negative_conditioning_alone_changes_nothing(model):
    """NASA's LTX-Video patches are object patches, which a conditioning hook cannot carry: NASA Negative Conditioning
    without Apply NASA Model Patch leaves the model exactly as it is (nothing half-applied; the console says to add
    the model patch), and with it the prompt's negative applies."""
    pos = cond(1)
    carried, = NASANegativeConditioning().attach(pos, [[neg(2), {}]], 0.7)
    assert torch.equal(sample(model, carried, steps=2), sample(model, pos, steps=2))
    enabled, = ApplyNASAModelPatch().patch(model, 0.7)
    assert (sample(enabled, carried, steps=2) - sample(model, pos, steps=2)).abs().max() > 1e-3


def test_cfg_leaves_the_uncond_branch_alone(model):
    dk.check_cfg_leaves_uncond_alone(model, sample, cond, neg)


class OffsetCrossAttention(torch.nn.Module):
    """Someone else's object patch on the same slot: the stock layer plus a constant."""

    def __init__(self, inner, offset):
        super().__init__()
        self.inner, self.offset, self.calls = inner, offset, 0

    def forward(self, x, context=None, mask=None, **kwargs):
        self.calls += 1
        return self.inner(x, context=context, mask=mask, **kwargs) + self.offset


def test_existing_patches_are_chained_not_dropped(model):
    """An object patch already on a block's attn2 is called (with the text mask) and NASA subtracts after it; a
    ("double_block", i) replace patch around the whole block keeps running with NASA inside."""
    key = "diffusion_model.transformer_blocks.1.attn2"
    other = model.clone()
    stock = model.get_model_object(key)
    offset = OffsetCrossAttention(stock, torch.full((32,), 0.25))
    other.add_object_patch(key, offset)
    block_calls = []

    def block_patch(args, extra):
        block_calls.append(1)
        return extra["original_block"](args)

    other.set_model_patch_replace(block_patch, "dit", "double_block", 2)
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


@pytest.mark.skipif(not hasattr(comfy.supported_models, "LTXAV"),
                    reason="this ComfyUI has no LTX-2 (supported_models.LTXAV, from v0.8.0)")
def test_ltx2_is_refused_by_name():
    config = comfy.supported_models.LTXAV({
        "image_model": "ltxav", "in_channels": 128, "audio_in_channels": 128, "num_layers": 1,
        "attention_head_dim": 16, "num_attention_heads": 2, "cross_attention_dim": 32,
        "audio_attention_head_dim": 8, "audio_num_attention_heads": 2, "audio_cross_attention_dim": 16,
        "caption_channels": 16})
    m = dk.patcher(config.get_model({}))
    with pytest.raises(UnsupportedModelError, match="LTX-2 \\(LTXAV"):
        apply_nasa(m, torch.randn(1, 5, 32), 0.5)
