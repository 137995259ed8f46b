"""The nodes' settings as a ComfyUI user expects them: resolved when sampling, not when patching; per-prompt
negatives ahead of every model-wide one; alpha 0 in NASA Negative Conditioning turns NASA off for that prompt."""
import gc
import logging

import pytest
import torch

import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import comfy_runtime
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, ApplyNASAModelPatchAdvanced, NASANegativeConditioning

pytestmark = pytest.mark.compat


def nasa_run(patched):
    return patched.model_options["model_function_wrapper"]


def steps_applied(patched, positive, steps):
    """The sigmas of the denoiser calls in which NASA acted."""
    run = nasa_run(patched)
    plan, applied = run.plan, []

    def recording(x, timestep, c, cond_or_uncond, model_sampling=None):
        state = plan(x, timestep, c, cond_or_uncond, model_sampling)
        if state is not None:
            applied.append(round(float(timestep.reshape(-1)[0]), 4))
        return state

    run.plan = recording
    tk.sample(patched, positive, steps=steps)
    return applied


def with_model_sampling(model, linear_end):
    """What a ModelSamplingDiscrete-style node placed after NASA does: an object patch of the model's
    ``model_sampling`` with another noise schedule (ComfyUI's own sampling classes)."""
    from types import SimpleNamespace
    import comfy.model_sampling

    class Sampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    config = SimpleNamespace(sampling_settings=dict(model.model.model_config.sampling_settings, linear_end=linear_end))
    out = model.clone()
    out.add_object_patch("model_sampling", Sampling(config))
    return out


def test_sigma_window_uses_the_model_sampling_in_force_when_sampling():
    """Advanced node (first half of sampling), then another model sampling placed after it: NASA acts in the first
    half of the sigmas actually sampled, as ComfyUI's own percent settings do, not in a window fixed at patch time."""
    import comfy.samplers
    model = tk.tiny_unet_patcher()
    patched, = ApplyNASAModelPatchAdvanced().patch(model, 0.5, nasa_negative=tk.conditioning(2), start_percent=0.0,
                                                   end_percent=0.5)
    resampled = with_model_sampling(patched, linear_end=0.006)
    new_sampling, old_sampling = resampled.get_model_object("model_sampling"), model.get_model_object("model_sampling")
    schedule = [round(s, 4) for s in comfy.samplers.calculate_sigmas(new_sampling, "normal", 10)[:-1].tolist()]
    expected = [s for s in schedule if s >= float(new_sampling.percent_to_sigma(0.5))]
    fixed_at_patch_time = [s for s in schedule if s >= float(old_sampling.percent_to_sigma(0.5))]
    assert expected != fixed_at_patch_time, "the test needs a model sampling that moves the window"
    assert steps_applied(resampled, tk.conditioning(1), steps=10) == expected


def test_per_prompt_negative_takes_precedence_over_every_chained_model_wide_negative():
    model = tk.tiny_unet_patcher()
    inner, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=tk.conditioning(3))
    outer, = ApplyNASAModelPatch().patch(inner, 0.5, nasa_negative=tk.conditioning(4))
    positive, = NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2), 0.5)
    enabled, = ApplyNASAModelPatch().patch(model, 0.5)  # no model-wide negative at all
    expected = tk.sample(enabled, positive, steps=2)
    assert torch.equal(tk.sample(outer, positive, steps=2), expected)
    assert not torch.equal(tk.sample(outer, tk.conditioning(1), steps=2), tk.sample(model, tk.conditioning(1), steps=2))


def test_alpha_zero_per_prompt_turns_nasa_off_for_that_prompt(monkeypatch, caplog):
    model = tk.tiny_unet_patcher()
    patched, = ApplyNASAModelPatch().patch(model, 0.5, nasa_negative=tk.conditioning(3))
    off, = NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2), 0.0)
    plain = tk.sample(model, tk.conditioning(1), steps=2)
    assert torch.equal(tk.sample(patched, off, steps=2), plain)
    empty, = NASANegativeConditioning().attach(tk.conditioning(1), [[torch.zeros(1, 4, 64), {}]], 0.5)
    assert torch.equal(tk.sample(patched, empty, steps=2), plain)
    monkeypatch.setattr(comfy_runtime, "_unclaimed_warned", [-1e9])
    with caplog.at_level(logging.WARNING, logger="comfyui-nasa"):
        tk.sample(model, off)  # an off prompt on an unpatched model: nothing was asked for, nothing to warn about
        gc.collect()
    assert not [r for r in caplog.records if r.name == "comfyui-nasa"]
