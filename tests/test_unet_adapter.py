"""NASA on ComfyUI's real UNetModel, sampled through comfy.sample as KSampler does."""
import copy

import pytest
import torch

import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa, adapter_for
from comfyui_nasa.nasa_core.adapters.comfy_runtime import NASACrossAttentionPatch, NASARun, wrong_width_message
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, ApplyNASAModelPatchAdvanced, NASANegativeConditioning

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)


@pytest.fixture(scope="module")
def model():
    return tk.tiny_unet_patcher()


def nasa_run(patched) -> NASARun:
    return patched.model_options["model_function_wrapper"]


def attn2_patches(patched):
    return patched.model_options["transformer_options"]["patches_replace"]["attn2"]


def test_alpha_zero_and_empty_negative_give_the_unpatched_output(model):
    pos = tk.conditioning(1)
    base = tk.sample(model, pos, steps=2)
    assert torch.equal(tk.sample(apply_nasa(model, tk.text(2), 0.0), pos, steps=2), base)
    zero_negative = [[torch.zeros(1, 7, 64), {}]]  # ConditioningZeroOut
    patched, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=zero_negative)
    assert torch.equal(tk.sample(patched, pos, steps=2), base)
    positive, = NASANegativeConditioning().attach(pos, zero_negative, 0.5)
    assert torch.equal(tk.sample(patched, positive, steps=2), base)


def test_nasa_changes_the_output_and_leaves_the_input_model_alone(model):
    pos = tk.conditioning(1)
    options_before = copy.deepcopy(model.model_options)
    base = tk.sample(model, pos)
    patched, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=tk.conditioning(2))
    out = tk.sample(patched, pos)
    assert (out - base).abs().max() > 1e-2
    assert model.model_options == options_before
    assert torch.equal(tk.sample(model, pos), base)  # nothing stayed patched on the shared model


def test_every_text_cross_attention_is_patched_and_nothing_else(model):
    patched = apply_nasa(model, tk.text(2), 0.5)
    unet = model.model.diffusion_model
    n_attn2 = sum(1 for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    assert len(attn2_patches(patched)) == n_attn2 == 7  # 2 input, 1 middle, 4 output in the tiny UNet
    assert "attn1" not in patched.model_options["transformer_options"]["patches_replace"]
    # every patched layer applies NASA in a call
    seen = []
    run = nasa_run(patched)
    report = run.report
    run.report = lambda state: (seen.append(state.touched), report(state))
    try:
        tk.sample(patched, tk.conditioning(1))
    finally:
        run.report = report
    assert seen == [7]


def test_negative_kv_is_projected_once_per_layer_across_steps(model):
    patched = apply_nasa(model, tk.text(2), 0.5)
    tk.sample(patched, tk.conditioning(1), steps=4)
    assert nasa_run(patched).cache.computed == 7


def test_per_prompt_negative_equals_model_wide_negative(model):
    pos, neg = tk.conditioning(1), tk.conditioning(2)
    model_wide, = ApplyNASAModelPatch().patch(model, 0.4, nasa_negative=neg)
    enabled, = ApplyNASAModelPatch().patch(model, 0.4)
    positive, = NASANegativeConditioning().attach(pos, neg, 0.4)
    a = tk.sample(model_wide, pos, steps=2)
    b = tk.sample(enabled, positive, steps=2)
    assert torch.allclose(a, b, atol=1e-5)
    assert nasa_run(enabled).cache.computed == 7  # dedup of the re-batched negative keeps the cache


def test_prompts_in_sequence_do_not_leak_negatives(model):
    enabled, = ApplyNASAModelPatch().patch(model, 0.5)
    first, = NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2), 0.5)
    second, = NASANegativeConditioning().attach(tk.conditioning(3), tk.conditioning(4), 0.5)
    tk.sample(enabled, first, steps=2)
    after_first = tk.sample(enabled, second, steps=2)
    fresh, = ApplyNASAModelPatch().patch(model, 0.5)
    assert torch.equal(after_first, tk.sample(fresh, second, steps=2))
    # and the model-wide path: two patched clones from one model, run alternately
    a = apply_nasa(model, tk.text(5), 0.5)
    b = apply_nasa(model, tk.text(6), 0.5)
    ra = tk.sample(a, tk.conditioning(1))
    tk.sample(b, tk.conditioning(1))
    assert torch.equal(tk.sample(a, tk.conditioning(1)), ra)


def test_batch_with_one_negative_or_one_per_element(model):
    pos = tk.conditioning(1)
    n1, n2 = tk.text(2), tk.text(3)
    single = [tk.sample(apply_nasa(model, n, 0.5), pos, batch=1, seed=0) for n in (n1, n2)]
    both = tk.sample(apply_nasa(model, torch.cat([n1, n2]), 0.5), pos, batch=2, seed=0)
    ref_batch = tk.sample(model, pos, batch=2, seed=0)
    # batch element 0 gets negative 0; element 1 gets negative 1 (noise differs per element, so compare
    # against the same batch run with a broadcast negative)
    b1 = tk.sample(apply_nasa(model, n1, 0.5), pos, batch=2, seed=0)
    b2 = tk.sample(apply_nasa(model, n2, 0.5), pos, batch=2, seed=0)
    assert torch.allclose(both[0], b1[0], rtol=1e-4, atol=1e-3) and torch.allclose(both[1], b2[1], rtol=1e-4, atol=1e-3)
    assert not torch.allclose(both, ref_batch)
    assert single[0].shape[0] == 1
    with pytest.raises(NASAInputError, match="batch 3 but the latent batch is 2"):
        tk.sample(apply_nasa(model, tk.text(4, batch=3), 0.5), pos, batch=2)


def test_cfg_keeps_the_ordinary_negative_on_the_uncond_branch(model):
    pos, cfg_negative = tk.conditioning(1), tk.conditioning(9)
    captured = {}

    def capture(tag):
        def cfg_fn(args):
            captured.setdefault(tag, []).append((args["cond_denoised"].clone(), args["uncond_denoised"].clone()))
            return args["uncond_denoised"] + (args["cond_denoised"] - args["uncond_denoised"]) * args["cond_scale"]
        return cfg_fn

    plain = model.clone()
    plain.set_model_sampler_cfg_function(capture("plain"))
    nasa = apply_nasa(plain, tk.text(2), 0.8)
    nasa.set_model_sampler_cfg_function(capture("nasa"))
    tk.sample(plain, pos, negative=cfg_negative, steps=1, cfg=5.0)
    tk.sample(nasa, pos, negative=cfg_negative, steps=1, cfg=5.0)
    (pc, pu), = captured["plain"]
    (nc, nu), = captured["nasa"]
    assert torch.equal(pu, nu)              # CFG's negative branch untouched
    assert (pc - nc).abs().max() > 1e-2    # NASA acted on the positive branch


def test_sigma_window_and_block_choice(model):
    pos, neg = tk.conditioning(1), tk.conditioning(2)
    base = tk.sample(model, pos, steps=2)
    node = ApplyNASAModelPatchAdvanced()
    # two steps of the normal scheduler run at sigma 14.6 and 0.029: a 50%-90% window holds neither
    outside, = node.patch(model, 0.5, nasa_negative=neg, start_percent=0.5, end_percent=0.9)
    assert torch.equal(tk.sample(outside, pos, steps=2), base)
    first_only, = node.patch(model, 0.5, nasa_negative=neg, start_percent=0.0, end_percent=0.5)
    full, = node.patch(model, 0.5, nasa_negative=neg)
    out_first, out_full = tk.sample(first_only, pos, steps=2), tk.sample(full, pos, steps=2)
    assert not torch.equal(out_first, base) and not torch.equal(out_first, out_full)
    middle_only, = node.patch(model, 0.5, nasa_negative=neg, input_blocks=False, output_blocks=False)
    assert set(k[0] for k in attn2_patches(middle_only)) == {"middle"}
    assert not torch.equal(tk.sample(middle_only, pos, steps=2), base)
    with pytest.raises(NASAInputError, match="start_percent <= end_percent"):
        node.patch(model, 0.5, nasa_negative=neg, start_percent=0.8, end_percent=0.2)


def test_wrong_width_negative_names_both_widths(model):
    with pytest.raises(NASAInputError, match="32 wide .* takes 64"):
        ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=tk.conditioning(2, width=32))
    enabled, = ApplyNASAModelPatch().patch(model, 0.5)
    positive, = NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2, width=32), 0.5)
    with pytest.raises(NASAInputError, match="32 wide .* takes 64"):
        tk.sample(enabled, positive)
    msg = wrong_width_message(768, 2048, "SDXL")
    assert "768 (CLIP-L (SD1.x))" in msg and "2048 (CLIP-L + OpenCLIP-bigG (SDXL))" in msg


@pytest.mark.parametrize("alpha", [float("nan"), float("inf")])
def test_non_finite_alpha_is_a_clear_error(model, alpha):
    with pytest.raises(NASAInputError, match="finite"):
        ApplyNASAModelPatch().patch(model, alpha, nasa_negative=tk.conditioning(2))
    with pytest.raises(NASAInputError, match="finite"):
        NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2), alpha)


def test_unsupported_family_is_named():
    import comfy.supported_models
    # AuraFlow: a joint-attention DiT with no NASA adapter (FLUX and SD3 have theirs: tests/test_joint_adapters.py)
    config = comfy.supported_models.AuraFlow({"cond_seq_dim": 64, "in_channels": 4, "out_channels": 4, "dim": 64,
                                              "n_layers": 2, "n_double_layers": 1, "n_heads": 2,
                                              "global_conddim": 64, "max_seq": 64})
    aura = comfy.model_patcher.ModelPatcher(config.get_model({}), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(NASAInputError, match=r"no adapter for this model family \(AuraFlow.*Supported: UNet.*FLUX.*SD3"):
        ApplyNASAModelPatch().patch(aura, 0.5, nasa_negative=tk.conditioning(2))


def test_chains_an_existing_attn2_replacement(model):
    """An IPAdapter-style patch already in the slot keeps working; NASA subtracts from its output."""
    calls = []

    def ip_style(q, k, v, extra):
        import comfy.ldm.modules.attention as attention
        calls.append(1)
        return attention.optimized_attention(q, k, v, extra["n_heads"]) + 0.1 * q  # text attention + "image" part

    with_ip = model.clone()
    for key, _ in adapter_for(model).layers(model, {"input", "middle", "output"}):
        with_ip.set_model_attn2_replace(ip_style, *key)
    keys = set(attn2_patches(with_ip))
    ip_only = tk.sample(with_ip, tk.conditioning(1))
    n_ip = len(calls)
    both = apply_nasa(with_ip, tk.text(2), 0.5)
    assert all(isinstance(p, NASACrossAttentionPatch) and p.previous is ip_style for p in attn2_patches(both).values())
    assert set(attn2_patches(both)) == keys
    out = tk.sample(both, tk.conditioning(1))
    assert len(calls) == 2 * n_ip and not torch.equal(out, ip_only)
    assert torch.equal(tk.sample(apply_nasa(with_ip, tk.text(2), 0.0), tk.conditioning(1)), ip_only)


def test_nasa_twice_chains(model):
    once = apply_nasa(model, tk.text(2), 0.3)
    twice = apply_nasa(once, tk.text(3), 0.3)
    a, b = tk.sample(once, tk.conditioning(1)), tk.sample(twice, tk.conditioning(1))
    assert not torch.equal(a, b)


def test_adapter_reports_the_family(model):
    assert adapter_for(model).family.startswith("UNet")


def test_model_loaded_and_sampled_under_inference_mode():
    """ComfyUI's executor runs every node under torch.inference_mode, so weights have no version counter."""
    with torch.inference_mode():
        model = tk.tiny_unet_patcher(seed=3)
        patched = apply_nasa(model, tk.text(2), 0.5)
        base = tk.sample(model, tk.conditioning(1), steps=2)
        out = tk.sample(patched, tk.conditioning(1), steps=2)
    assert (out - base).abs().max() > 1e-2
    assert nasa_run(patched).cache.computed == 7  # still projected once per layer


# ------------------------------------------------------------------------------------------------------------------
# A reference prompt (apply_nasa's ``reference``, the Advanced node's nasa_reference; beyond the paper)

def plain_torch_reference_model(model, negative, reference, alpha):
    """A clone whose every text cross-attention computes Z+ - alpha (Z- - Z_ref) in plain torch with the layer's own
    W_k, W_v, through ComfyUI's attn2 replace slots: the independent computation the patch is checked against."""
    unet = model.model.diffusion_model
    groups = (("input", enumerate(unet.input_blocks)), ("middle", [(0, unet.middle_block)]),
              ("output", enumerate(unet.output_blocks)))

    def attend(q, k, v, heads):
        b, n, c = q.shape
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, c // heads).transpose(1, 2)  # noqa: E731
        p = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (c // heads) ** 0.5, dim=-1)
        return (p @ split(v).expand(b, -1, -1, -1)).transpose(1, 2).reshape(b, n, c)

    def replacement(attn2):
        def replace(q, k, v, extra_options):
            heads = extra_options["n_heads"]
            z = [attend(q, attn2.to_k(t), attn2.to_v(t), heads) for t in (negative, reference)]
            return attend(q, k, v, heads) - alpha * (z[0] - z[1])
        return replace

    plain = model.clone()
    for name, blocks in groups:
        for number, block in blocks:
            for layer in block:
                for index, tblock in enumerate(getattr(layer, "transformer_blocks", [])):
                    plain.set_model_attn2_replace(replacement(tblock.attn2), name, number, index)
    return plain


def test_a_reference_prompt_matches_the_equations(model):
    pos, neg, ref = tk.conditioning(1), tk.text(2), tk.text(5, tokens=3)
    patched = apply_nasa(model, neg, 0.6, reference=ref)
    expected = tk.sample(plain_torch_reference_model(model, neg, ref, 0.6), pos, steps=2)
    rel_err = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel_err(tk.sample(patched, pos, steps=2), expected) < 1e-5
    assert rel_err(tk.sample(apply_nasa(model, neg, 0.6), pos, steps=2), expected) > 1e-3  # the reference counts
    # the reference equal to the negative cancels it; alpha 0 is the unpatched model exactly
    base = tk.sample(model, pos, steps=2)
    assert rel_err(tk.sample(apply_nasa(model, neg, 0.6, reference=neg), pos, steps=2), base) < 1e-5
    assert torch.equal(tk.sample(apply_nasa(model, neg, 0.0, reference=ref), pos, steps=2), base)


def test_a_reference_prompt_applies_to_per_prompt_negatives_and_to_cond_rows_only(model):
    pos, neg, ref = tk.conditioning(1), tk.conditioning(2), tk.conditioning(5, tokens=3)
    node = ApplyNASAModelPatchAdvanced()
    model_wide, = node.patch(model, 0.4, nasa_negative=neg, nasa_reference=ref)
    enabled, = node.patch(model, 0.4, nasa_reference=ref)
    positive, = NASANegativeConditioning().attach(pos, neg, 0.4)
    a, b = tk.sample(model_wide, pos, steps=2), tk.sample(enabled, positive, steps=2)
    assert ((a - b).norm() / a.norm()).item() < 1e-5
    without = tk.sample(apply_nasa(model, neg[0][0], 0.4), pos, steps=2)
    assert ((a - without).norm() / a.norm()).item() > 1e-3
    # under CFG both runs act on the positive (cond) rows: the uncond branch is as without NASA
    captured = []

    def cfg_fn(args):
        captured.append(args["uncond_denoised"].clone())
        return args["uncond_denoised"] + (args["cond_denoised"] - args["uncond_denoised"]) * args["cond_scale"]

    for m in (model, model_wide):
        m = m.clone()
        m.set_model_sampler_cfg_function(cfg_fn)
        tk.sample(m, pos, negative=tk.conditioning(9), steps=1, cfg=4.0)
    assert torch.equal(captured[0], captured[1])


def test_a_bad_or_empty_reference_is_explained(model, caplog):
    with pytest.raises(NASAInputError, match="reference conditioning is 32 wide .* takes 64"):
        apply_nasa(model, tk.text(2), 0.5, reference=tk.text(3, width=32))
    with pytest.raises(NASAInputError, match=r"reference must be one prompt's conditioning, \[1, tokens, width\]"):
        apply_nasa(model, tk.text(2), 0.5, reference=tk.text(3, batch=2))
    zeroed = [[torch.zeros(1, 7, 64), {}]]  # ConditioningZeroOut: no reference, and the console says so
    with caplog.at_level("WARNING", logger="comfyui-nasa"):
        patched, = ApplyNASAModelPatchAdvanced().patch(model, 0.5, nasa_negative=tk.conditioning(2),
                                                        nasa_reference=zeroed)
    assert "nasa_reference conditioning is empty" in caplog.text
    assert torch.equal(tk.sample(patched, tk.conditioning(1)),
                       tk.sample(apply_nasa(model, tk.text(2), 0.5), tk.conditioning(1)))
