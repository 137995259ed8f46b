"""NASA on ComfyUI's real Kandinsky 5 (comfy.ldm.kandinsky5.model.Kandinsky5 through supported_models.Kandinsky5 and
Kandinsky5Image), sampled through comfy.sample; prompts carry a pooled CLIP-L output as its text encoder gives them."""
import pytest
import torch

try:
    from comfy.ldm.kandinsky5.model import Kandinsky5  # noqa: F401
except ImportError:
    pytest.skip("this ComfyUI has no Kandinsky 5 (comfy.ldm.kandinsky5.model.Kandinsky5, from v0.5.1): the Kandinsky 5 "
                "adapter never matches here", allow_module_level=True)

import comfy.supported_models
import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import adapter_for, apply_nasa
from comfyui_nasa.nasa_core.adapters.comfy_runtime import wrong_width_message
from comfyui_nasa.nasa_core.adapters.kandinsky5 import K5NASACrossAttention, K5NASATextBlock, Kandinsky5Adapter
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)

WIDTH = 32   # Qwen2.5-VL width of the tiny models
POOLED = 16  # CLIP-L pooled width of the tiny models
DEPTH = 3


def k5_patcher(image=False, model_dim=64, ff_dim=128, time_dim=32, text_dim=WIDTH, pooled_dim=POOLED,
               axes=(4, 6, 6), text_blocks=2, visual_blocks=DEPTH, seed=0, dtype=None):
    """Kandinsky 5 through ComfyUI's configs: Kandinsky5 (video: 16-channel latent plus its 17 concat channels,
    visual_embed_dim 132) or Kandinsky5Image (Flux latent, visual_embed_dim 64)."""
    config_class = comfy.supported_models.Kandinsky5Image if image else comfy.supported_models.Kandinsky5
    config = config_class({"image_model": "kandinsky5", "model_dim": model_dim, "ff_dim": ff_dim,
                           "time_dim": time_dim, "in_text_dim": text_dim, "in_text_dim2": pooled_dim,
                           "visual_embed_dim": 64 if image else 132,
                           "patch_size": [1, 2, 2], "num_text_blocks": text_blocks, "num_visual_blocks": visual_blocks,
                           "axes_dims": list(axes)})
    if dtype is not None:
        config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    tk.init_weights(model.diffusion_model, seed)
    return dk.patcher(model)


@pytest.fixture(scope="module")
def model():
    return k5_patcher()


def pooled(seed, width=POOLED):
    return torch.randn(1, width, generator=torch.Generator().manual_seed(1000 + seed))


def cond(seed, tokens=7, width=WIDTH, pooled_width=POOLED):
    return [[tk.text(seed, tokens=tokens, width=width), {"pooled_output": pooled(seed, pooled_width)}]]


def neg(seed, tokens=5, batch=1, width=WIDTH):
    return tk.text(seed, tokens=tokens, width=width, batch=batch)


def sample(m, positive, steps=1, negative=None, latent=None, **kw):
    if negative is None:
        negative = [[torch.zeros(1, 1, WIDTH), {"pooled_output": torch.zeros(1, POOLED)}]]
    latent = dk.video_latent(frames=2, size=4) if latent is None else latent
    return dk.sample_latent(m, positive, latent, steps=steps, negative=negative, **kw)


# ------------------------------------------------------------------------------------------------------------
# Plain-torch reference (float64) of one visual block's cross-attention


def rms(x, norm):
    eps = norm.eps if getattr(norm, "eps", None) is not None else torch.finfo(torch.float32).eps
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight.double()


def per_head(x, heads):
    return x.reshape(*x.shape[:-1], heads, -1)


def k5_reference(attn, x, context, refined_negative, alpha):
    """out_layer(softmax(Q K+^T/sqrt d) V+ - alpha softmax(Q K-^T/sqrt d) V-), Q/K RMS-normed per head."""
    h = attn.num_heads
    flat = lambda t: t.reshape(*t.shape[:-2], -1)  # noqa: E731
    q = flat(rms(per_head(dk.linear(x, attn.to_query), h), attn.query_norm))
    k = flat(rms(per_head(dk.linear(context, attn.to_key), h), attn.key_norm))
    v = dk.linear(context, attn.to_value)
    k_neg = flat(rms(per_head(dk.linear(refined_negative, attn.to_key), h), attn.key_norm)).expand(x.shape[0], -1, -1)
    v_neg = dk.linear(refined_negative, attn.to_value).expand(x.shape[0], -1, -1)
    z = dk.softmax_attention(q, k, v, h) - alpha * dk.softmax_attention(q, k_neg, v_neg, h)
    return dk.linear(z, attn.out_layer)


def first_call(m, key, positive, latent, patched_key=None):
    """(args, kwargs, output) of the first call of the module at ``key`` in a one-step run of ``m``."""
    module = m.object_patches[key] if key in m.object_patches else m.get_model_object(key)
    capture = dk.Capture(module)
    try:
        sample(m, positive, latent=latent)
    finally:
        capture.close()
    return capture.calls[0]


# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", [False, True], ids=["video", "image"])
def test_adapter_is_chosen_and_alpha_zero_is_the_unpatched_model(image, model):
    m = k5_patcher(image=True) if image else model
    latent = torch.zeros(1, 16, 8, 8) if image else None
    assert isinstance(adapter_for(m), Kandinsky5Adapter)
    pos = cond(1)
    base = sample(m, pos, steps=2, latent=latent)
    assert torch.equal(sample(apply_nasa(m, neg(2), 0.0), pos, steps=2, latent=latent), base)
    patched, = ApplyNASAModelPatch().patch(m, 0.5, nasa_negative=[[torch.zeros(1, 5, WIDTH), {}]])
    assert torch.equal(sample(patched, pos, steps=2, latent=latent), base)
    assert (sample(apply_nasa(m, neg(2), 0.5), pos, steps=2, latent=latent) - base).abs().max() > 1e-3


def test_every_cross_attention_is_patched_and_the_negative_refined_once_per_call(model):
    pos = cond(1)
    base = sample(model, pos, steps=2)
    patched = apply_nasa(model, neg(2), 0.5)
    keys = sorted(k for k, v in patched.object_patches.items() if isinstance(v, K5NASACrossAttention))
    assert keys == [f"diffusion_model.visual_transformer_blocks.{i}.cross_attention" for i in range(DEPTH)]
    assert isinstance(patched.object_patches["diffusion_model.text_transformer_blocks.0"], K5NASATextBlock)
    run = patched.model_options["model_function_wrapper"]
    embedded = []
    hook = model.model.diffusion_model.text_embeddings.register_forward_hook(
        lambda mod, a, out: embedded.append(a[0].shape[1]))
    try:
        out = sample(patched, pos, steps=3)
    finally:
        hook.remove()
    assert (out - base).abs().max() > 1e-3
    assert run.calls_applied == 3
    assert embedded == [7, 5] * 3  # per call: the prompt, then the negative once (not once per block)
    assert torch.equal(sample(model, pos, steps=2), base)
    for i, block in enumerate(model.model.diffusion_model.visual_transformer_blocks):
        assert type(block.cross_attention).__name__ == "CrossAttention"
        patch = patched.object_patches[f"diffusion_model.visual_transformer_blocks.{i}.cross_attention"]
        assert dict(patch.named_parameters()) == dict(block.cross_attention.named_parameters())
    assert type(model.model.diffusion_model.text_transformer_blocks[0]).__name__ == "TransformerEncoderBlock"


def test_block_against_plain_torch_reference_at_kandinsky5_lite_width():
    """Kandinsky 5 lite's real widths (model 1792 = 28 heads x 64, ff 7168, time 512, Qwen2.5-VL 3584, CLIP-L 768,
    its two text blocks), one visual block: the patched cross-attention equals
    out_layer(softmax(QK+)V+ - alpha softmax(QK-)V-), computed here in float64, with K-/V- from the negative as the
    model's own text blocks refine it: the context the unpatched model gives that text as the prompt, with its own
    pooled CLIP-L, in the same step."""
    big = k5_patcher(model_dim=1792, ff_dim=7168, time_dim=512, text_dim=3584, pooled_dim=768, axes=(16, 24, 24),
                     visual_blocks=1)
    positive = cond(1, tokens=6, width=3584, pooled_width=768)
    negative, alpha = neg(2, tokens=4, width=3584), 0.5
    extra = {"pooled_output": pooled(2, 768)}  # the negative's CONDITIONING dict, as Apply NASA Model Patch passes it
    latent = dk.video_latent(frames=1, size=4)  # 1 x 2 x 2 visual tokens
    key = "diffusion_model.visual_transformer_blocks.0.cross_attention"
    patched = apply_nasa(big, negative, alpha, negative_extra=extra)
    args, kwargs, output = first_call(patched, key, positive, latent)
    as_prompt = [[negative, extra]]
    (n_args, _, _) = first_call(big, key, as_prompt, latent)
    refined = n_args[1]
    assert refined.shape == (1, 4, 1792)
    stock = big.get_model_object(key)
    expected = k5_reference(stock, args[0], args[1], refined, alpha)
    rel = ((output.double() - expected).abs().max() / expected.abs().max()).item()
    print(f"Kandinsky 5 lite cross-attention vs float64 reference: relative error {rel:.2e}")
    assert rel < 1e-5
    # the refinement matters: the caption embedding alone (text_embeddings, no text blocks) gives another layer
    raw = big.model.diffusion_model.text_embeddings(negative)
    assert (k5_reference(stock, args[0], args[1], raw, alpha) - expected).abs().max() > 1e-4


def test_bf16_weights_and_compute():
    """bf16 end to end: the negative is refined and projected in the model's dtype, alpha 0 is the plain model."""
    m = k5_patcher(dtype=torch.bfloat16)
    assert next(m.model.diffusion_model.parameters()).dtype == torch.bfloat16
    pos = cond(1)
    base = sample(m, pos, steps=2)
    assert torch.equal(sample(apply_nasa(m, neg(2), 0.0), pos, steps=2), base)
    out = sample(apply_nasa(m, neg(2), 0.5), pos, steps=2)
    assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-2


@pytest.mark.parametrize("blocks,chosen", [({"default"}, [0, 1, 2]), ({"all"}, [0, 1, 2]), ({1}, [1]),
                                           ({"input"}, [0])])
def test_block_choice(model, blocks, chosen):
    """The block choice picks visual blocks; the negative's refinement is installed whatever it is."""
    patched = apply_nasa(model, neg(2), 0.5, blocks=blocks)
    keys = sorted(k for k, v in patched.object_patches.items() if isinstance(v, K5NASACrossAttention))
    assert keys == [f"diffusion_model.visual_transformer_blocks.{i}.cross_attention" for i in chosen]
    assert isinstance(patched.object_patches["diffusion_model.text_transformer_blocks.0"], K5NASATextBlock)
    assert (sample(patched, cond(1)) - sample(model, cond(1))).abs().max() > 1e-4


def test_the_negatives_own_pooled_clip_through_the_node(model):
    """Apply NASA Model Patch passes the negative's CONDITIONING dict: its pooled CLIP-L sets the time_embed it is
    refined with (what the model would give it as a prompt); without one, each row's own time_embed is used."""
    pos = cond(1)
    node, = ApplyNASAModelPatch().patch(model, 0.7, nasa_negative=[[neg(2), {"pooled_output": pooled(2)}]])
    direct = apply_nasa(model, neg(2), 0.7, negative_extra={"pooled_output": pooled(2)})
    out = sample(node, pos, steps=2)
    assert torch.equal(out, sample(direct, pos, steps=2))
    rows_own = sample(apply_nasa(model, neg(2), 0.7), pos, steps=2)
    assert (out - rows_own).abs().max() > 1e-4
    same_as_prompt = sample(apply_nasa(model, neg(2), 0.7, negative_extra={"pooled_output": pooled(1)}), pos, steps=2)
    torch.testing.assert_close(same_as_prompt, rows_own, rtol=1e-5, atol=1e-5)
    with pytest.raises(NASAInputError, match="pooled CLIP-L"):
        apply_nasa(model, neg(2), 0.7, negative_extra={"pooled_output": torch.randn(1, 768)})


def test_per_prompt_negative_equals_model_wide_negative(model):
    dk.check_per_prompt_equals_model_wide(model, sample, cond, neg)


def test_negative_conditioning_alone_equals_the_model_patch(model):
    """NASA's Kandinsky 5 patches are object patches: NASA Negative Conditioning without Apply NASA Model Patch puts them
    into the live model for its prompt's calls only, so it gives what the patch gives and leaves the live modules as
    they were; with the patch too, the prompt's negative is applied once."""
    dk.check_negative_conditioning_alone(model, sample, cond, neg)


def test_cfg_leaves_the_uncond_branch_alone(model):
    """Under CFG the cond rows are steered with a negative refined under their own time_embed, the uncond rows
    (another pooled CLIP-L) are bit-identical."""
    dk.check_cfg_leaves_uncond_alone(model, sample, cond, neg)


@pytest.mark.parametrize("own_pooled", [False, True], ids=["row-time-embed", "negative-pooled"])
def test_under_cfg_the_cond_row_is_refined_with_its_own_time_embed(model, own_pooled):
    """In a CFG batch (cond and uncond rows, each with its own pooled CLIP-L), the negative NASA subtracts from the
    cond row is refined under that row's time_embed (or its timestep and the negative's own pooled CLIP-L): the cond
    prediction is the one of the cfg-1 run."""
    conds = {}

    def capture(tag):
        def post(args):
            conds.setdefault(tag, args["cond_denoised"].clone())
            return args["denoised"]
        return post

    for tag, cfg in (("cfg1", 1.0), ("cfg4", 4.0)):
        m = apply_nasa(model, neg(2), 0.7, negative_extra={"pooled_output": pooled(2)} if own_pooled else None)
        m.set_model_sampler_post_cfg_function(capture(tag))
        sample(m, cond(1), negative=cond(9), cfg=cfg)
    torch.testing.assert_close(conds["cfg4"], conds["cfg1"], rtol=1e-5, atol=1e-5)


class ScaledTextBlock(torch.nn.Module):
    """Someone else's object patch on the first text block: the stock block, scaled."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x, time_embed, freqs, transformer_options={}):
        self.calls += 1
        return self.inner(x, time_embed, freqs, transformer_options=transformer_options) * 0.5


def test_existing_patches_are_chained_not_dropped(model):
    """Object patches already on a visual block's cross_attention and on the first text block are called; NASA
    subtracts after the first, and the negative goes through the second as the prompt does."""
    key = "diffusion_model.visual_transformer_blocks.1.cross_attention"
    text_key = "diffusion_model.text_transformer_blocks.0"
    other = model.clone()
    stock = model.get_model_object(key)
    offset = dk.OffsetLayer(stock, torch.full((64,), 0.25))
    scaled = ScaledTextBlock(model.get_model_object(text_key))
    other.add_object_patch(key, offset)
    other.add_object_patch(text_key, scaled)
    # (no ("double_block", i) replace patch here: ComfyUI's own Kandinsky 5 block_wrap calls the block with x=...,
    # a keyword its forward does not take, so a dit replace patch fails on Kandinsky 5 with or without NASA)
    negative, alpha = neg(2), 0.5
    patched = apply_nasa(other, negative, alpha)
    args, kwargs, output = first_call(patched, key, cond(1), dk.video_latent(frames=2, size=4))
    assert offset.calls == 1 and scaled.calls == 2  # the prompt and the negative
    (n_args, _, _) = first_call(other, key, [[negative, dict(cond(1)[0][1])]], dk.video_latent(frames=2, size=4))
    expected = k5_reference(stock, args[0], args[1], n_args[1], alpha) + 0.25
    assert torch.allclose(output.double(), expected, rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_named(model):
    with pytest.raises(NASAInputError) as err:
        apply_nasa(model, torch.randn(1, 5, 4096), 0.5)
    assert str(err.value) == wrong_width_message(4096, WIDTH, "Kandinsky5")
    with pytest.raises(NASAInputError, match="batch 3 but the latent batch is 1"):
        sample(apply_nasa(model, neg(2, batch=3), 0.5), cond(1))
