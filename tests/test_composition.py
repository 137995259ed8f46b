"""NASA together with what users combine it with: LoRAs (before or after NASA), Perturbed Attention
Guidance, ControlNet, torch.compile. Real ComfyUI classes throughout."""
import torch

import comfy.controlnet
import comfy.model_management
import comfy.ops
from comfy.cldm.cldm import ControlNet as ControlNetModel

import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa


def attn2_weight_keys(patcher):
    return [k for k in patcher.model.state_dict() if ".attn2.to_k.weight" in k or ".attn2.to_v.weight" in k]


def lora_diffs(patcher, seed=11, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    sd = patcher.model.state_dict()
    return {k: torch.randn(sd[k].shape, generator=g) * scale / sd[k].shape[1] ** 0.5 for k in attn2_weight_keys(patcher)}


def with_lora(patcher, diffs):
    m = patcher.clone()
    m.add_patches({k: (d,) for k, d in diffs.items()}, 1.0)  # a "diff" patch, as LoRA/model-merge nodes add
    return m


def test_lora_weights_reach_the_negative_projection():
    """NASA on a LoRA-patched model equals NASA on a model whose weights hold the LoRA: the negative's K/V
    come from the patched W_k/W_v, whichever order the LoRA and NASA nodes come in."""
    base = tk.tiny_unet_patcher(seed=0)
    diffs = lora_diffs(base)
    neg, pos = tk.text(2), tk.conditioning(1)
    lora_then_nasa = tk.sample(apply_nasa(with_lora(base, diffs), neg, 0.5), pos, steps=2)

    baked = tk.tiny_unet_patcher(seed=0)
    with torch.no_grad():
        sd = dict(baked.model.named_parameters())
        for k, d in diffs.items():
            sd[k].add_(d)
    reference = tk.sample(apply_nasa(baked, neg, 0.5), pos, steps=2)
    assert torch.allclose(lora_then_nasa, reference, rtol=1e-4, atol=1e-3)

    nasa = apply_nasa(base, neg, 0.5)
    nasa_then_lora = with_lora(nasa, diffs)  # shares NASA's K/V cache with `nasa`
    without_lora = tk.sample(nasa, pos, steps=2)
    assert torch.allclose(tk.sample(nasa_then_lora, pos, steps=2), reference, rtol=1e-4, atol=1e-3)
    # back to the un-LoRA'd clone: the cache must notice the weights changed back
    assert torch.equal(tk.sample(nasa, pos, steps=2), without_lora)
    assert not torch.allclose(without_lora, reference, rtol=1e-4, atol=1e-3)


def pag(model, scale):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance
    if hasattr(PerturbedAttentionGuidance, "execute"):  # modern tree: V3 node schema
        out = PerturbedAttentionGuidance.execute(model, scale)
        return out[0] if isinstance(out, tuple) else out.result[0]
    return PerturbedAttentionGuidance().patch(model, scale)[0]


def test_with_perturbed_attention_guidance_in_either_order():
    base = tk.tiny_unet_patcher(seed=0)
    neg, pos, cfg_neg = tk.text(2), tk.conditioning(1), tk.conditioning(9)
    run = lambda m: tk.sample(m, pos, negative=cfg_neg, steps=2, cfg=3.0)
    pag_only, nasa_only = run(pag(base, 2.0)), run(apply_nasa(base, neg, 0.5))
    pag_then_nasa = apply_nasa(pag(base, 2.0), neg, 0.5)
    nasa_then_pag = pag(apply_nasa(base, neg, 0.5), 2.0)
    assert pag_then_nasa.model_options["sampler_post_cfg_function"]  # PAG's guidance pass kept
    a, b = run(pag_then_nasa), run(nasa_then_pag)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(a, pag_only) and not torch.allclose(a, nasa_only)


def tiny_controlnet():
    cfg = tk.tiny_unet_config()
    for k in ("out_channels", "transformer_depth_output", "dtype"):
        cfg.pop(k)
    model = ControlNetModel(hint_channels=3, operations=comfy.ops.disable_weight_init, **cfg)
    tk.init_weights(model, seed=5)
    device = comfy.model_management.get_torch_device()
    return comfy.controlnet.ControlNet(model, load_device=device, manual_cast_dtype=None)


def with_control(conditioning, control_net, hint, strength=1.0):
    out = []
    for cond, opts in conditioning:  # what the stock Apply ControlNet node does to a conditioning
        opts = opts.copy()
        opts["control"] = control_net.copy().set_cond_hint(hint.movedim(-1, 1), strength)
        opts["control_apply_to_uncond"] = True
        out.append([cond, opts])
    return out


def test_with_controlnet():
    base = tk.tiny_unet_patcher(seed=0)
    cn = tiny_controlnet()
    hint = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(4))
    pos = with_control(tk.conditioning(1), cn, hint)
    control_only = tk.sample(base, pos, steps=2)
    assert not torch.allclose(control_only, tk.sample(base, tk.conditioning(1), steps=2))  # the ControlNet acts
    both = tk.sample(apply_nasa(base, tk.text(2), 0.5), pos, steps=2)
    assert not torch.allclose(both, control_only)
    assert torch.equal(tk.sample(apply_nasa(base, tk.text(2), 0.0), pos, steps=2), control_only)


def test_torch_compile_sees_no_new_graph_breaks():
    import torch._dynamo
    base = tk.tiny_unet_patcher(seed=0)
    patched = apply_nasa(base, tk.text(2), 0.5)
    unet = base.model.diffusion_model
    run = patched.model_options["model_function_wrapper"]
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), tk.text(1)

    def graph_breaks(options):
        torch._dynamo.reset()
        fn = lambda x, t, ctx: unet(x, t, context=ctx, transformer_options=dict(options))
        return torch._dynamo.explain(fn)(x, t, ctx).graph_break_count

    state = run.plan(x, torch.tensor([1.0]), {}, [0])
    patched_options = dict(patched.model_options["transformer_options"], **{run.state_key: state})
    assert graph_breaks(patched_options) == graph_breaks({})
    assert state.touched > 0  # NASA really ran inside the traced call


def call_like_the_sampler(patcher, x, sigma, ctx):
    """One denoiser call the way comfy.samplers.calc_cond_batch makes it, without reloading the model."""
    to = dict(patcher.model_options["transformer_options"], cond_or_uncond=[0], sigmas=sigma)
    args = {"input": x, "timestep": sigma, "c": {"c_crossattn": ctx, "transformer_options": to}, "cond_or_uncond": [0]}
    with torch.no_grad():
        return patcher.model_options["model_function_wrapper"](patcher.model.apply_model, args)


def test_lowvram_offloaded_lora_weights():
    """ComfyUI's lowvram load leaves weights unpatched and applies LoRA patches while casting each layer
    (weight_function): NASA's negative must get the LoRA too, and must not reuse K/V across such calls."""
    base = tk.tiny_unet_patcher(seed=0)
    model = apply_nasa(with_lora(base, lora_diffs(base)), tk.text(2), 0.5)
    run = model.model_options["model_function_wrapper"]
    x, sigma, ctx = torch.randn(1, 4, 8, 8), torch.tensor([3.0]), tk.text(1)
    cpu = torch.device("cpu")
    try:
        model.patch_model(cpu, lowvram_model_memory=1)  # partial load: every layer cast on the fly
        k_layers = [m for n, m in base.model.named_modules() if n.endswith("attn2.to_k")]
        assert all(getattr(m, "weight_function", None) for m in k_layers)
        before = run.cache.computed
        low_a = call_like_the_sampler(model, x, sigma, ctx)
        low_b = call_like_the_sampler(model, x, sigma, ctx)
        assert run.cache.computed - before == 2 * len(k_layers)  # recomputed per call under weight_function
    finally:
        model.unpatch_model(cpu)
    try:
        model.patch_model(cpu)  # full load: LoRA merged into the weights
        full = call_like_the_sampler(model, x, sigma, ctx)
    finally:
        model.unpatch_model(cpu)
    assert torch.equal(low_a, low_b)
    assert torch.allclose(low_a, full, rtol=1e-4, atol=1e-4)
