"""NASA on ComfyUI's real PixArt (comfy.ldm.pixart, modern tree only), sampled through comfy.sample."""
import pytest
import torch

try:
    import comfy.ldm.pixart.pixartms  # noqa: F401
except ImportError:
    pytest.skip("this ComfyUI has no PixArt (comfy.ldm.pixart; the PyPI copy has none): the PixArt adapter never matches here",
                allow_module_level=True)

import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa
from comfyui_nasa.nasa_core.adapters.comfy_runtime import wrong_width_message
from comfyui_nasa.nasa_core.adapters.pixart import PixArtAdapter, PixArtNASACrossAttention
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

WIDTH = 32  # caption (T5) width of the tiny model
DEPTH = 3


@pytest.fixture(scope="module")
def model():
    return dk.pixart_patcher(depth=DEPTH, caption_channels=WIDTH)


def cond(seed, tokens=7):
    return tk.conditioning(seed, tokens=tokens, width=WIDTH)


def neg(seed, tokens=5, batch=1):
    return tk.text(seed, tokens=tokens, width=WIDTH, batch=batch)


def sample(m, positive, **kw):
    # PixArt's position embedding needs (H + W) / 2 >= 48 latent pixels: 8 x 88 keeps it at 4 x 44 tokens
    return dk.sample_latent(m, positive, torch.zeros(1, 4, 8, 88), **kw)


def test_adapter_is_chosen_and_alpha_zero_is_the_unpatched_model(model):
    dk.check_alpha_zero_is_the_unpatched_model(model, PixArtAdapter, sample, cond, neg, WIDTH)


def test_every_block_is_patched_and_the_model_is_restored(model):
    """The negative goes through the caption embedder once and each block's kv_linear once, for all three steps; the
    caption embedder is not pulled into the block's patch."""
    dk.check_every_layer_is_patched_and_the_model_restored(
        model, PixArtNASACrossAttention, [f"diffusion_model.blocks.{i}.cross_attn" for i in range(DEPTH)],
        "MultiHeadCrossAttention", sample, cond, neg)


def test_block_against_plain_torch_reference_at_pixart_alpha_width():
    """PixArt-alpha's real widths (hidden 1152, 16 heads, T5 4096), one block, few tokens: the patched block's
    cross-attention output equals proj(softmax(QK+)V+ - alpha softmax(QK-)V-) computed here from its weights."""
    big = dk.pixart_patcher(hidden_size=1152, num_heads=16, depth=1, caption_channels=4096, model_max_length=120)
    positive, negative, alpha = tk.conditioning(1, tokens=6, width=4096), tk.text(2, tokens=4, width=4096), 0.5
    patched = apply_nasa(big, negative, alpha)
    patch = patched.object_patches["diffusion_model.blocks.0.cross_attn"]
    capture = dk.Capture(patch)
    try:
        dk.sample_latent(patched, positive, torch.zeros(1, 4, 8, 88))  # 4 x 44 = 176 image tokens
    finally:
        capture.close()
    (args, kwargs, output), = capture.calls
    x, y = args[0], args[1]
    dm = big.model.diffusion_model
    stock_layer = big.get_model_object("diffusion_model.blocks.0.cross_attn")  # the stock module, patched or not
    expected = dk.pixart_reference(stock_layer, x, y, dk.pixart_caption_embed(dm.y_embedder, negative), alpha)
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-4), (output.double() - expected).abs().max()
    # and the stock layer on the same input is what NASA moved away from
    stock = dk.pixart_reference(stock_layer, x, y, dk.pixart_caption_embed(dm.y_embedder, negative), 0.0)
    assert (stock - expected).abs().max() > 1e-3


def test_per_prompt_negative_equals_model_wide_negative(model):
    dk.check_per_prompt_equals_model_wide(model, sample, cond, neg)


def test_negative_conditioning_alone_equals_the_model_patch(model):
    """PixArt's blocks get no per-prompt options: NASA Negative Conditioning alone puts its object patches into the live
    model for its prompt's calls and publishes the call's state, so it gives what the patch gives."""
    dk.check_negative_conditioning_alone(model, sample, cond, neg)


def test_cfg_leaves_the_uncond_branch_alone(model):
    dk.check_cfg_leaves_uncond_alone(model, sample, cond, neg)


def test_existing_object_patch_on_the_slot_is_chained_not_dropped(model):
    dm = model.model.diffusion_model
    key = "diffusion_model.blocks.1.cross_attn"
    other = model.clone()
    stock_layer = model.get_model_object(key)  # the stock module even while another clone's patch is loaded
    assert type(stock_layer).__name__ == "MultiHeadCrossAttention"
    offset = dk.OffsetLayer(stock_layer, torch.full((96,), 0.25))
    other.add_object_patch(key, offset)
    negative, alpha = neg(2), 0.5
    patched = apply_nasa(other, negative, alpha)
    capture = dk.Capture(patched.object_patches[key])
    try:
        sample(patched, cond(1))
    finally:
        capture.close()
    assert offset.calls == 1
    (args, _, output), = capture.calls
    expected = dk.pixart_reference(stock_layer, args[0], args[1],
                                   dk.pixart_caption_embed(dm.y_embedder, negative), alpha) + 0.25
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-5)


def test_nasa_applied_twice_subtracts_both_negatives(model):
    """Two NASA patches on one model (each with its own call state published for PixArt's blocks): the second
    chains the first's object patch, and the layer subtracts both negatives."""
    key = "diffusion_model.blocks.0.cross_attn"
    n1, n2 = neg(2), neg(3, tokens=4)
    twice = apply_nasa(apply_nasa(model, n1, 0.3), n2, 0.6)
    capture = dk.Capture(twice.object_patches[key])
    try:
        sample(twice, cond(1))
    finally:
        capture.close()
    (args, _, output), = capture.calls
    stock_layer = model.get_model_object(key)
    embedder = model.model.diffusion_model.y_embedder
    plain = dk.pixart_reference(stock_layer, args[0], args[1], dk.pixart_caption_embed(embedder, n1), 0.0)
    one = dk.pixart_reference(stock_layer, args[0], args[1], dk.pixart_caption_embed(embedder, n1), 0.3)
    two = dk.pixart_reference(stock_layer, args[0], args[1], dk.pixart_caption_embed(embedder, n2), 0.6)
    assert torch.allclose(output.double(), one + two - plain, rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_named(model):
    with pytest.raises(NASAInputError) as err:
        apply_nasa(model, torch.randn(1, 5, 768), 0.5)
    assert str(err.value) == wrong_width_message(768, WIDTH, "PixArtAlpha")
    enabled, = ApplyNASAModelPatch().patch(model, 0.5)
    positive, = NASANegativeConditioning().attach(cond(1), [[torch.randn(1, 5, 768), {}]], 0.5)
    with pytest.raises(NASAInputError, match="768 .*wide but this PixArtAlpha model's cross-attention takes 32"):
        sample(enabled, positive)
    with pytest.raises(NASAInputError, match="alpha"):
        apply_nasa(model, neg(2), float("nan"))
