"""What must hold on every ComfyUI release the pack runs on (scripts/test.sh runs this file on each release of the
matrix): NASA never silently does nothing (each cause of "touched nothing" is provoked and named), nothing stays
patched after a run, an error or an interrupt, the caches are freed when ComfyUI cleans up or unloads the model and
stay right when a LoRA is switched between prompts, and the composed FLUX route refuses a block it does not
reproduce. Each family runs where the release has its classes (looked up, not assumed from a version)."""
from __future__ import annotations

import gc
import importlib
import logging

import pytest
import torch

import comfy.model_management
import comfy.sample
import comfy.utils

import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa
from comfyui_nasa.nasa_core.adapters import comfy_runtime, joint, prompt_hook
from comfyui_nasa.nasa_core.attention import NASAInputError
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning

pytestmark = pytest.mark.compat


def has_module(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


HAS_PIXART = has_module("comfy.ldm.pixart.pixartms")
HAS_WAN = has_module("comfy.ldm.wan.model")
HAS_CALLBACKS = has_module("comfy.patcher_extension") and hasattr(importlib.import_module("comfy.patcher_extension"),
                                                                 "CallbacksMP")
HAS_OVERRIDE = joint.HAS_ATTENTION_OVERRIDE


class Family:
    """One supported family at test size: how to build it, its text width and latent, its NASA slots."""

    def __init__(self, name, make, width, latent, pooled=None):
        self.name, self.make, self.width, self.latent, self.pooled = name, make, width, latent, pooled

    def cond(self, seed, tokens=6):
        g = torch.Generator().manual_seed(seed)
        opts = {"pooled_output": torch.randn(1, self.pooled, generator=g)} if self.pooled else {}
        return [[torch.randn(1, tokens, self.width, generator=g), opts]]

    def sample(self, model, positive, steps=1, callback=None, seed=0):
        latent = self.latent()
        noise = comfy.sample.prepare_noise(latent, seed)
        negative = [[torch.zeros_like(positive[0][0][:1]), dict(positive[0][1])]]
        return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", positive, negative, latent,
                                   callback=callback, disable_pbar=True, seed=seed)


FAMILIES = [
    Family("unet", lambda: tk.tiny_unet_patcher(), 64, lambda: torch.zeros(1, 4, 16, 16)),
    Family("flux", lambda: dk.flux_patcher(), 32, lambda: torch.zeros(1, 16, 16, 16), pooled=16),
    Family("pixart", lambda: dk.pixart_patcher(depth=3, caption_channels=32), 32, lambda: torch.zeros(1, 4, 8, 88)),
    Family("wan", lambda: dk.wan_patcher(num_layers=3, text_dim=32), 32, lambda: dk.video_latent()),
]
AVAILABLE = {"unet": True, "flux": True, "pixart": HAS_PIXART, "wan": HAS_WAN}
REASON = {"pixart": "this ComfyUI has no PixArt (comfy.ldm.pixart); the PixArt adapter never matches here",
          "wan": "this ComfyUI has no Wan (comfy.ldm.wan); the Wan adapter never matches here"}


@pytest.fixture(params=[f.name for f in FAMILIES])
def family(request):
    f = next(f for f in FAMILIES if f.name == request.param)
    if not AVAILABLE[f.name]:
        pytest.skip(REASON[f.name])
    return f, f.make()


def nasa_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "comfyui-nasa" and r.levelno >= logging.WARNING]


def nasa_run(patched):
    return patched.model_options["model_function_wrapper"]


# ------------------------------------------------------------------------------------------------------------
# 1. No silent no-op: every cause is named


def test_it_works_and_warns_nothing(family, caplog):
    """Through the node, as a graph patches it: applied in every step, changes the output, no warning; alpha 0
    is the unpatched model."""
    f, model = family
    base = f.sample(model, f.cond(1))
    patched, = ApplyNASAModelPatch().patch(model, 0.8, nasa_negative=f.cond(2))
    with caplog.at_level(logging.WARNING, logger="comfyui-nasa"):
        out = f.sample(patched, f.cond(1), steps=2)
    assert nasa_run(patched).calls_applied == 2
    assert (out - f.sample(model, f.cond(1), steps=2)).abs().max() > 1e-4
    assert not nasa_warnings(caplog)
    off, = ApplyNASAModelPatch().patch(model, 0.0, nasa_negative=f.cond(2))
    assert torch.equal(f.sample(off, f.cond(1)), base)


class NotNASA(torch.nn.Module):
    """Another node's module patched over a DiT's cross-attention slot (it ignores the text)."""

    def forward(self, x, *args, **kwargs):
        return torch.zeros_like(x)


def take_every_slot(patched):
    """What a node applied after NASA that replaces the same slots without chaining does."""
    for kind, key, _ in nasa_run(patched).slots:
        if kind == "attn2":
            patched.set_model_attn2_replace(lambda q, k, v, extra: q, *key)
        elif kind == "dit":
            patched.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", *key)
        else:
            patched.add_object_patch(key, NotNASA())


def test_cause_named_another_node_took_the_slots(family, caplog):
    f, model = family
    patched = apply_nasa(model, f.cond(2)[0][0], 0.8)
    take_every_slot(patched)
    with caplog.at_level(logging.WARNING, logger="comfyui-nasa"):
        f.sample(patched, f.cond(1))
    warned = nasa_warnings(caplog)
    assert len(warned) == 1 and "another node replaced NASA's patches" in warned[0], warned


class SilentWrapper:
    """A chaining patch (it keeps the previous occupant as ``previous``, as NASA's own do) that never calls it."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, q, k, v, extra_options):
        return q


def test_cause_named_patches_in_place_but_never_called(caplog):
    model = tk.tiny_unet_patcher()
    patched = apply_nasa(model, tk.text(2), 0.8)
    for kind, key, patch in nasa_run(patched).slots:
        patched.set_model_attn2_replace(SilentWrapper(patch), *key)
    with caplog.at_level(logging.WARNING, logger="comfyui-nasa"):
        tk.sample(patched, tk.conditioning(1))
    warned = nasa_warnings(caplog)
    assert len(warned) == 1 and "the model never called them" in warned[0], warned


@pytest.mark.skipif(not HAS_PIXART, reason=REASON["pixart"])
def test_cause_named_the_release_does_not_pass_the_call_state(caplog):
    """PixArt's blocks get no transformer_options on any release; NASA's layers read the call state that its
    APPLY_MODEL wrapper publishes. Without that wrapper (as on a release that would not run it) the layers run
    stateless, and the warning says so."""
    import comfy.patcher_extension
    f = next(f for f in FAMILIES if f.name == "pixart")
    patched = apply_nasa(f.make(), f.cond(2)[0][0], 0.8)
    wrappers = patched.wrappers[comfy.patcher_extension.WrappersMP.APPLY_MODEL]
    ours = [key for key in wrappers if str(key).startswith("comfyui_nasa_")]
    assert ours
    for key in ours:
        del wrappers[key]
    with caplog.at_level(logging.WARNING, logger="comfyui-nasa"):
        f.sample(patched, f.cond(1))
    warned = nasa_warnings(caplog)
    assert len(warned) == 1 and "did not receive the call's NASA state" in warned[0], warned


def test_cause_named_a_block_choice_that_matches_no_block():
    with pytest.raises(NASAInputError, match="found no text cross-attention layer in blocks"):
        apply_nasa(dk.flux_patcher(depth=1, single=0), tk.text(2, width=32), 0.8, blocks={"output"})


HAS_HOOKS = prompt_hook.hooks_api() is not None


@pytest.mark.parametrize("name", ["unet", "flux", "wan", "pixart"])
def test_negative_conditioning_on_an_unpatched_model_works_or_says_why(name, monkeypatch, caplog):
    """CLIP Text Encode -> NASA Negative Conditioning -> the sampler, the MODEL not patched. Where ComfyUI has
    conditioning hooks (v0.3.30+) the prompt's hook installs NASA for that prompt: the result is what Apply NASA
    Model Patch gives with the same negative and alpha, with no warning (PixArt and Wan: their object patches in the
    live model for the hooked calls only). Without hooks the negative is ignored and the console says why."""
    f = next(f for f in FAMILIES if f.name == name)
    if not AVAILABLE[name]:
        pytest.skip(REASON[name])
    model = f.make()
    monkeypatch.setattr(comfy_runtime, "_unclaimed_warned", [-1e9])
    positive, = NASANegativeConditioning().attach(f.cond(1), f.cond(2), 0.8)
    with caplog.at_level(logging.WARNING, logger="comfyui-nasa"):
        alone = f.sample(model, positive, steps=2)
        gc.collect()
    warned = nasa_warnings(caplog)
    plain = f.sample(model, f.cond(1), steps=2)
    if HAS_HOOKS:
        patched, = ApplyNASAModelPatch().patch(model, 0.8, nasa_negative=f.cond(2))
        assert not warned, warned
        torch.testing.assert_close(alone, f.sample(patched, f.cond(1), steps=2), atol=1e-5, rtol=1e-5)  # float order
        assert (alone - plain).abs().max() > 1e-4
        assert not model.model_options.get("model_function_wrapper") and not model.object_patches  # input untouched
    else:
        assert len(warned) == 1 and "does not go through Apply NASA Model Patch" in warned[0], warned
        assert "no conditioning hooks" in warned[0]
        assert torch.equal(alone, plain)  # what the warning says: it was ignored


@pytest.mark.skipif(not HAS_HOOKS, reason="this ComfyUI has no conditioning hooks (comfy.hooks.TransformerOptionsHook, "
                    "from v0.3.30): NASA Negative Conditioning needs Apply NASA Model Patch here (tested above)")
def test_negative_conditioning_alone_with_cfg_and_beside_a_patched_model():
    """With CFG > 1 the hooked prompt runs on its own (ComfyUI batches prompts only with equal hooks) and still
    matches the model patch; with the MODEL patched too, the prompt's negative is applied once, by the patch."""
    model = tk.tiny_unet_patcher()
    positive, = NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2), 0.5)
    enabled, = ApplyNASAModelPatch().patch(model, 0.5)
    both = tk.sample(enabled, positive, negative=tk.conditioning(9), cfg=3.0, steps=2)
    alone = tk.sample(model, positive, negative=tk.conditioning(9), cfg=3.0, steps=2)
    plain = tk.sample(model, tk.conditioning(1), negative=tk.conditioning(9), cfg=3.0, steps=2)
    torch.testing.assert_close(alone, both, atol=1e-5, rtol=1e-5)
    assert (alone - plain).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------------------
# 2. Nothing stays behind


def live_modules(model):
    """The module objects of the model as ComfyUI loads it for this MODEL. ComfyUI keeps the clone it sampled last
    loaded (with that clone's object patches) until another is loaded, after any run; loading the input MODEL
    again must give its own modules back."""
    comfy.model_management.load_models_gpu([model])
    return {name: id(m) for name, m in model.model.named_modules()}


def patcher_state(model):
    return repr(model.model_options), repr(model.object_patches), repr(getattr(model, "wrappers", None))


def interrupt_at_first_step(step, *args):
    comfy.model_management.interrupt_current_processing(True)
    comfy.model_management.throw_exception_if_processing_interrupted()  # what ComfyUI's progress hook does


def test_nothing_stays_patched_after_a_run_an_error_or_an_interrupt(family):
    f, model = family
    options_before = patcher_state(model)
    modules_before = live_modules(model)
    base = f.sample(model, f.cond(1), steps=3)
    patched = apply_nasa(model, f.cond(2)[0][0], 0.8)
    steered = f.sample(patched, f.cond(1), steps=3)

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        f.sample(patched, f.cond(1), steps=3, callback=interrupt_at_first_step)
    comfy.model_management.interrupt_current_processing(False)
    assert patcher_state(model) == options_before and live_modules(model) == modules_before

    wrong = [[f.cond(1)[0][0], dict(f.cond(1)[0][1])]]
    bad, = NASANegativeConditioning().attach(wrong, [[torch.randn(1, 4, f.width + 8), {}]], 0.5)
    with pytest.raises(NASAInputError, match="wide but this"):
        f.sample(patched, bad, steps=3)
    assert patcher_state(model) == options_before and live_modules(model) == modules_before

    assert torch.equal(f.sample(model, f.cond(1), steps=3), base)
    assert torch.equal(f.sample(patched, f.cond(1), steps=3), steered)
    fresh = apply_nasa(f.make(), f.cond(2)[0][0], 0.8)
    assert torch.equal(f.sample(fresh, f.cond(1), steps=3), steered)


@pytest.mark.skipif(not HAS_HOOKS, reason="this ComfyUI has no conditioning hooks (comfy.hooks.TransformerOptionsHook, "
                    "from v0.3.30): NASA Negative Conditioning alone installs nothing here")
def test_negative_conditioning_alone_leaves_nothing_after_a_run_an_error_or_an_interrupt(family):
    """NASA Negative Conditioning on the unpatched MODEL: its hook puts object patches (PixArt, Wan) into the live
    model for each hooked call only; after a run, an interrupt at the first step and a bad negative, the MODEL's
    options and the live model's modules are as before, and a plain run is the plain result."""
    f, model = family
    options_before = patcher_state(model)
    modules_before = live_modules(model)
    base = f.sample(model, f.cond(1), steps=3)
    carried, = NASANegativeConditioning().attach(f.cond(1), f.cond(2), 0.8)
    steered = f.sample(model, carried, steps=3)
    assert (steered - base).abs().max() > 1e-4
    assert patcher_state(model) == options_before and live_modules(model) == modules_before

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        f.sample(model, carried, steps=3, callback=interrupt_at_first_step)
    comfy.model_management.interrupt_current_processing(False)
    assert patcher_state(model) == options_before and live_modules(model) == modules_before

    bad, = NASANegativeConditioning().attach(f.cond(1), [[torch.randn(1, 4, f.width + 8), {}]], 0.5)
    with pytest.raises(NASAInputError, match="wide but this"):
        f.sample(model, bad, steps=3)
    assert patcher_state(model) == options_before and live_modules(model) == modules_before
    assert torch.equal(f.sample(model, f.cond(1), steps=3), base)
    assert torch.equal(f.sample(model, carried, steps=3), steered)


def cache_entries(run):
    return len(run.cache.entries)  # the run's one cache: negative K/V (and a DiT's embedded negative)


@pytest.mark.skipif(not HAS_CALLBACKS, reason="this ComfyUI has no model callbacks (comfy.patcher_extension."
                    "CallbacksMP): the caches, one entry per layer, live as long as the patched MODEL")
@pytest.mark.parametrize("name", ["unet", "wan"])
def test_caches_are_freed_when_comfyui_cleans_up_or_unloads_the_model(name):
    f = next(f for f in FAMILIES if f.name == name)
    if not AVAILABLE[name]:
        pytest.skip(REASON[name])
    patched = apply_nasa(f.make(), f.cond(2)[0][0], 0.8)
    run = nasa_run(patched)
    during = []
    with torch.inference_mode():  # as ComfyUI's executor samples (no cache while autograd records)
        f.sample(patched, f.cond(1), steps=2, callback=lambda *a: during.append(cache_entries(run)))
    assert during and during[0] > 0, "the negative K/V should be cached between steps"
    assert cache_entries(run) == 0 and run._model_negative_on is None, "not freed after sampling (ON_CLEANUP)"

    comfy.model_management.load_models_gpu([patched])  # loaded as the sampler loads it, then used directly
    x, t = f.latent(), torch.tensor([1.0])
    to = dict(patched.model_options.get("transformer_options", {}), cond_or_uncond=[0], sigmas=t,
              wrappers=patched.wrappers)  # as the sampler hands them to apply_model
    c = {"c_crossattn": f.cond(1)[0][0], "transformer_options": to}
    with torch.inference_mode():
        run(patched.model.apply_model, {"input": x, "timestep": t, "c": c, "cond_or_uncond": [0]})
    assert cache_entries(run) > 0
    comfy.model_management.unload_all_models()
    assert cache_entries(run) == 0, "not freed when ComfyUI unloaded the model (ON_DETACH)"


def attn2_key_weights(model):
    sd = model.model.state_dict()
    return [k for k in sd if k.endswith("attn2.to_k.weight") or k.endswith("attn2.to_v.weight")]


def with_lora(patched, seed):
    """A clone of ``patched`` with a LoRA-like weight patch on every cross-attention K/V, applied in place."""
    lora = patched.clone()
    lora.weight_inplace_update = True
    g = torch.Generator().manual_seed(seed)
    sd = lora.model.state_dict()
    lora.add_patches({k: (torch.randn(sd[k].shape, generator=g) * 0.2,) for k in attn2_key_weights(lora)}, 1.0)
    return lora


def test_lora_switched_between_prompts_under_inference_mode():
    """LoRAs applied after NASA share its run (and cache); ComfyUI's executor loads and patches weights in place
    under inference_mode, where tensors keep no version counter. Switching the LoRA between prompts must give
    what a fresh NASA over that LoRA gives."""
    model = tk.tiny_unet_patcher()
    patched = apply_nasa(model, tk.text(2), 0.8)
    with torch.inference_mode():
        a1 = tk.sample(with_lora(patched, 1), tk.conditioning(1), steps=2)
        b = tk.sample(with_lora(patched, 2), tk.conditioning(1), steps=2)
        a2 = tk.sample(with_lora(patched, 1), tk.conditioning(1), steps=2)
        fresh_b = tk.sample(with_lora(apply_nasa(tk.tiny_unet_patcher(), tk.text(2), 0.8), 2), tk.conditioning(1),
                            steps=2)
    assert not torch.allclose(a1, b, atol=1e-4)
    assert torch.equal(a1, a2)
    assert torch.equal(b, fresh_b)


# ------------------------------------------------------------------------------------------------------------
# 3. The composed FLUX/SD3 route where ComfyUI has no attention override


@pytest.mark.skipif(HAS_OVERRIDE, reason="this ComfyUI has the attention override (wrap_attn): NASA runs the "
                    "block's own forward and never composes it")
def test_composed_route_refuses_a_block_it_does_not_reproduce(monkeypatch):
    """A block whose forward computes something the composition does not (here: a forward hook on the block,
    as a release with a changed block would) is refused with an error naming the release, not guessed at."""
    monkeypatch.setattr(joint, "_COMPOSED_VERIFIED", {})
    f = next(f for f in FAMILIES if f.name == "flux")
    model = f.make()
    handle = model.model.diffusion_model.double_blocks[0].register_forward_hook(
        lambda module, args, out: (out[0] + 1e-3, out[1]))
    try:
        patched = apply_nasa(model, f.cond(2)[0][0], 0.8)
        with pytest.raises(NASAInputError, match="does not compute what NASA's composed route computes"):
            f.sample(patched, f.cond(1))
    finally:
        handle.remove()


@pytest.mark.skipif(HAS_OVERRIDE, reason="this ComfyUI has the attention override: the composed route is unused")
def test_composed_route_verified_on_this_release(monkeypatch):
    """On this release the composition reproduces FLUX's double and single blocks and SD3's joint block bit for
    bit (the run-time check passes), so NASA runs here."""
    monkeypatch.setattr(joint, "_COMPOSED_VERIFIED", {})
    sd3 = Family("sd3", dk.sd3_patcher, 48, lambda: torch.zeros(1, 16, 16, 16), pooled=16)
    for f, blocks in ((FAMILIES[1], {"double", "single"}), (sd3, {"double"})):
        f.sample(apply_nasa(f.make(), f.cond(2)[0][0], 0.5, blocks=blocks), f.cond(1))
    assert joint._COMPOSED_VERIFIED and all(joint._COMPOSED_VERIFIED.values()), joint._COMPOSED_VERIFIED
