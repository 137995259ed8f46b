"""NASA on ComfyUI's real Wan 2.1 (comfy.ldm.wan.model, modern tree only): text-to-video and image-to-video,
5-D video latents sampled through comfy.sample."""
import pytest
import torch

try:
    import comfy.ldm.wan.model  # noqa: F401
except ImportError:
    pytest.skip("this ComfyUI has no Wan (comfy.ldm.wan, from v0.3.30): the Wan adapter never matches here",
                allow_module_level=True)

import comfy.supported_models
import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa, prompt_hook
from comfyui_nasa.nasa_core.adapters.comfy_runtime import wrong_width_message
from comfyui_nasa.nasa_core.adapters.wan import WanAdapter, WanNASACrossAttention
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

WIDTH = 32  # text (T5) width of the tiny models
DEPTH = 3


@pytest.fixture(scope="module")
def t2v():
    return dk.wan_patcher(num_layers=DEPTH, text_dim=WIDTH)


@pytest.fixture(scope="module")
def i2v():
    return dk.wan_patcher(num_layers=2, text_dim=WIDTH, i2v=True, seed=3)


def cond(seed, tokens=7, **extra):
    return [[tk.text(seed, tokens=tokens, width=WIDTH), dict(extra)]]


def neg(seed, tokens=5, batch=1):
    return tk.text(seed, tokens=tokens, width=WIDTH, batch=batch)


def sample(m, positive, steps=1, **kw):
    return dk.sample_latent(m, positive, dk.video_latent(), steps=steps, **kw)  # 3 frames x 4 x 4 tokens


def test_adapter_is_chosen_and_alpha_zero_is_the_unpatched_model(t2v):
    base = dk.check_alpha_zero_is_the_unpatched_model(t2v, WanAdapter, sample, cond, neg, WIDTH)
    assert base.shape == (1, 16, 3, 8, 8)


def test_every_block_is_patched_once_per_step_and_the_model_is_restored(t2v):
    dk.check_every_layer_is_patched_and_the_model_restored(
        t2v, WanNASACrossAttention, [f"diffusion_model.blocks.{i}.cross_attn" for i in range(DEPTH)],
        "WanT2VCrossAttention", sample, cond, neg)


def test_block_against_plain_torch_reference_at_wan_1_3b_width():
    """Wan 2.1 1.3B's real widths (dim 1536, 12 heads, T5 4096), one block, few tokens: the patched
    cross-attention equals o(softmax(QK+)V+ - alpha softmax(QK-)V-) with K- = norm_k(W_k E-), computed here."""
    big = dk.wan_patcher(dim=1536, num_heads=12, num_layers=1, text_dim=4096, ffn_dim=8960, freq_dim=256)
    positive, negative, alpha = [[tk.text(1, tokens=6, width=4096), {}]], tk.text(2, tokens=4, width=4096), 0.5
    patched = apply_nasa(big, negative, alpha)
    key = "diffusion_model.blocks.0.cross_attn"
    capture = dk.Capture(patched.object_patches[key])
    try:
        dk.sample_latent(patched, positive, dk.video_latent(frames=2, size=4))  # 2 x 2 x 2 video tokens
    finally:
        capture.close()
    (args, kwargs, output), = capture.calls
    stock_layer = big.get_model_object(key)
    embedded = dk.wan_text_embed(big.model.diffusion_model, negative)
    expected = dk.wan_reference(stock_layer, args[0], args[1], embedded, alpha)
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-4), (output.double() - expected).abs().max()
    assert (dk.wan_reference(stock_layer, args[0], args[1], embedded, 0.0) - expected).abs().max() > 1e-3


def test_image_to_video_subtracts_from_the_text_attention_only(i2v):
    """I2V: the 257 CLIP-vision tokens at the front of the context attend through k_img/v_img and are added
    back unchanged; NASA's negative never includes them and nothing is subtracted from them."""
    negative, alpha = neg(2), 0.7
    positive = cond(1, clip_vision_output=dk.clip_vision_output(seed=4))
    base = dk.sample_latent(i2v, positive, dk.video_latent())
    patched = apply_nasa(i2v, negative, alpha)
    key = "diffusion_model.blocks.1.cross_attn"
    capture = dk.Capture(patched.object_patches[key])
    try:
        out = dk.sample_latent(patched, positive, dk.video_latent())
    finally:
        capture.close()
    assert (out - base).abs().max() > 1e-3
    (args, kwargs, output), = capture.calls
    assert kwargs["context_img_len"] == 257 and args[1].shape[1] == 257 + 7
    stock_layer = i2v.get_model_object(key)
    assert type(stock_layer).__name__ == "WanI2VCrossAttention"
    embedded = dk.wan_text_embed(i2v.model.diffusion_model, negative)
    expected = dk.wan_reference(stock_layer, args[0], args[1], embedded, alpha, context_img_len=257)
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-5)
    # the image part is really there (a different image changes the layer) and really untouched by NASA:
    # what NASA changes in the layer does not depend on the image tokens
    other = args[1].clone()
    other[:, :257] = torch.randn_like(other[:, :257])
    delta = lambda ctx: (dk.wan_reference(stock_layer, args[0], ctx, embedded, alpha, 257)  # noqa: E731
                         - dk.wan_reference(stock_layer, args[0], ctx, embedded, 0.0, 257))
    assert (delta(args[1]) - delta(other)).abs().max() < 1e-10
    with torch.no_grad():
        assert (stock_layer(args[0], other, context_img_len=257) - stock_layer(args[0], args[1], context_img_len=257)
                ).abs().max() > 1e-3


def test_per_prompt_negative_equals_model_wide_negative(t2v):
    dk.check_per_prompt_equals_model_wide(t2v, sample, cond, neg)


def test_cfg_leaves_the_uncond_branch_alone(t2v):
    dk.check_cfg_leaves_uncond_alone(t2v, sample, cond, neg)


def test_existing_patches_are_chained_not_dropped(t2v):
    """An object patch already on a block's cross_attn is called and NASA subtracts after it; a
    ("double_block", i) replace patch around the whole block keeps running with NASA inside."""
    key = "diffusion_model.blocks.1.cross_attn"
    other = t2v.clone()
    stock_layer = t2v.get_model_object(key)
    offset = dk.OffsetLayer(stock_layer, torch.full((64,), 0.25))
    other.add_object_patch(key, offset)
    block_calls = dk.record_block_calls(other, 2)
    negative, alpha = neg(2), 0.5
    patched = apply_nasa(other, negative, alpha)
    run = patched.model_options["model_function_wrapper"]
    touched = []
    report = run.report
    run.report = lambda state: (touched.append(state.touched), report(state))
    capture = dk.Capture(patched.object_patches[key])
    try:
        sample(patched, cond(1))
    finally:
        capture.close()
        run.report = report
    assert offset.calls == 1 and block_calls == [1] and touched == [DEPTH]
    (args, kwargs, output), = capture.calls
    embedded = dk.wan_text_embed(t2v.model.diffusion_model, negative)
    expected = dk.wan_reference(stock_layer, args[0], args[1], embedded, alpha) + 0.25
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_named(t2v):
    with pytest.raises(NASAInputError) as err:
        apply_nasa(t2v, torch.randn(1, 5, 2048), 0.5)
    assert str(err.value) == wrong_width_message(2048, WIDTH, "WAN21_T2V")
    enabled, = ApplyNASAModelPatch().patch(t2v, 0.5)
    positive, = NASANegativeConditioning().attach(cond(1), [[torch.randn(1, 5, 768), {}]], 0.5)
    with pytest.raises(NASAInputError, match="768 .*wide but this WAN21_T2V model's cross-attention takes 32"):
        sample(enabled, positive)
    with pytest.raises(NASAInputError, match="batch 3 but the latent batch is 1"):
        sample(apply_nasa(t2v, neg(2, batch=3), 0.5), cond(1))


def test_lora_on_the_cross_attention_reaches_the_negative_in_either_order(t2v):
    """A LoRA-style weight patch on the blocks' cross_attn k/v (what LoraLoaderModelOnly adds, e.g. CausVid) goes
    through NASA's object patch under the same names: NASA's negative keys and values use the patched weights,
    whether the LoRA comes before or after NASA, and the cached K/V notice when the weights change back."""
    keys = [f"diffusion_model.blocks.{i}.cross_attn.{n}.weight" for i in range(DEPTH) for n in ("k", "v")]
    sd = t2v.model.state_dict()
    g = torch.Generator().manual_seed(11)
    diffs = {k: torch.randn(sd[k].shape, generator=g) * 0.5 / sd[k].shape[1] ** 0.5 for k in keys}

    def with_lora(m):
        m = m.clone()
        m.add_patches({k: (d,) for k, d in diffs.items()}, 1.0)
        return m

    negative, pos = neg(2), cond(1)
    baked = dk.wan_patcher(num_layers=DEPTH, text_dim=WIDTH)  # same seed: the same weights, LoRA added in place
    with torch.no_grad():
        params = dict(baked.model.named_parameters())
        for k, d in diffs.items():
            params[k].add_(d)
    reference = sample(apply_nasa(baked, negative, 0.5), pos, steps=2)
    assert torch.allclose(sample(apply_nasa(with_lora(t2v), negative, 0.5), pos, steps=2), reference,
                          rtol=1e-4, atol=1e-4)
    nasa = apply_nasa(t2v, negative, 0.5)
    without = sample(nasa, pos, steps=2)
    assert torch.allclose(sample(with_lora(nasa), pos, steps=2), reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(sample(nasa, pos, steps=2), without)  # shared cache: the LoRA'd K/V are not reused
    assert not torch.allclose(without, reference, atol=1e-3)


@pytest.mark.skipif(prompt_hook.hooks_api() is None,
                    reason="NASA Negative Conditioning reaches a model on its own only where ComfyUI has conditioning "
                           "hooks (v0.3.30+); before, the console says to add Apply NASA Model Patch "
                           "(tests/test_release_compat.py)")
@pytest.mark.parametrize("kind", ["t2v", "i2v"])
def test_negative_conditioning_alone_steers_the_text_attention(kind, t2v, i2v):
    """The conditioning hook's route on Wan (the object patches of each block's cross_attn in the live model for the
    hooked calls only; I2V: the image tokens' part left as it is) gives what Apply NASA Model Patch gives, and leaves
    the live model's modules as they were."""
    model = {"t2v": t2v, "i2v": i2v}[kind]
    extra = {"clip_vision_output": dk.clip_vision_output(seed=4)} if kind == "i2v" else {}
    positive = cond(1, **extra)
    carried, = NASANegativeConditioning().attach(positive, [[neg(2), {}]], 0.7)
    alone = sample(model, carried, steps=2)
    patched, = ApplyNASAModelPatch().patch(model, 0.7, nasa_negative=[[neg(2), {}]])
    torch.testing.assert_close(alone, sample(patched, positive, steps=2), atol=1e-5, rtol=1e-5)
    assert (alone - sample(model, positive, steps=2)).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- Wan 2.2


def test_wan22_a14b_two_experts_in_two_samplers(t2v):
    """Wan 2.2 A14B runs a high-noise expert for the first steps and a low-noise expert for the rest (two
    KSamplerAdvanced, the first returning its leftover noise). Both experts are Wan 2.1-architecture models
    (ComfyUI's WAN21 configs); NASA patched on each acts in its own steps, and alpha 0 on both is the plain run."""
    import comfy.sample
    high, low = t2v, dk.wan_patcher(num_layers=DEPTH, text_dim=WIDTH, seed=7)
    latent = dk.video_latent()
    noise = comfy.sample.prepare_noise(latent, 0)
    positive, empty = cond(1), [[torch.zeros(1, 1, WIDTH), {}]]

    def two_experts(a, b):
        mid = comfy.sample.sample(a, noise, 4, 1.0, "euler", "simple", positive, empty, latent, start_step=0,
                                  last_step=2, force_full_denoise=False, disable_pbar=True, seed=0)
        return comfy.sample.sample(b, noise, 4, 1.0, "euler", "simple", positive, empty, mid, start_step=2,
                                   last_step=4, disable_noise=True, disable_pbar=True, seed=0)

    plain = two_experts(high, low)
    patched_high, = ApplyNASAModelPatch().patch(high, 0.7, nasa_negative=[[neg(2), {}]])
    patched_low, = ApplyNASAModelPatch().patch(low, 0.7, nasa_negative=[[neg(2), {}]])
    steered = two_experts(patched_high, patched_low)
    runs = [m.model_options["model_function_wrapper"] for m in (patched_high, patched_low)]
    assert [r.calls_applied for r in runs] == [2, 2]
    assert (steered - plain).abs().max() > 1e-3
    off = [ApplyNASAModelPatch().patch(m, 0.0, nasa_negative=[[neg(2), {}]])[0] for m in (high, low)]
    assert torch.equal(two_experts(*off), plain)


@pytest.mark.skipif(not hasattr(comfy.supported_models, "WAN22_T2V"),
                    reason="this ComfyUI has no Wan 2.2 TI2V config (comfy.supported_models.WAN22_T2V; the matrix has it "
                           "from v0.3.59)")
def test_wan22_ti2v_5b_with_a_given_first_frame():
    """TI2V 5B (WAN22_T2V: 48-channel latent; with a given first frame ComfyUI's denoise mask gives each frame its
    own timestep): NASA acts in every step, alpha 0 is the plain model, and the given frame stays as given."""
    import comfy.sample
    model = dk.wan_patcher(num_layers=2, text_dim=WIDTH, ti2v=True, seed=5)
    assert isinstance(adapter_for(model), WanAdapter)
    latent = torch.randn(1, 48, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0.0  # the first frame is given (image to video)
    noise = comfy.sample.prepare_noise(latent, 0)
    positive, empty = cond(1), [[torch.zeros(1, 1, WIDTH), {}]]

    def run(m):
        return comfy.sample.sample(m, noise, 3, 1.0, "euler", "simple", positive, empty, latent, noise_mask=mask,
                                   disable_pbar=True, seed=0)

    plain = run(model)
    patched, = ApplyNASAModelPatch().patch(model, 0.7, nasa_negative=[[neg(2), {}]])
    out = run(patched)
    assert patched.model_options["model_function_wrapper"].calls_applied == 3
    assert (out - plain).abs().max() > 1e-3
    torch.testing.assert_close(out[:, :, 0], latent[:, :, 0])
    off, = ApplyNASAModelPatch().patch(model, 0.0, nasa_negative=[[neg(2), {}]])
    assert torch.equal(run(off), plain)
