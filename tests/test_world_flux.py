"""The joint-attention world model (ComfyUI's Flux classes at small width, flux_world.py): the training CLI
with --arch flux (steps, bit-for-bit resume, export), the exported file as a ComfyUI MODEL/CLIP/VAE sampled
through comfy.sample, and NASA on it when a Flux adapter is registered. Nothing is trained for real."""
from pathlib import Path

import pytest
import torch

from comfyui_nasa.nasa_core import world
from comfyui_nasa.nasa_core.world_model import flux_world
from comfyui_nasa.nasa_core.world_model import model as wm
from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents
from comfyui_nasa.nasa_core.world_model.train import TrainConfig, WorldTrainer, main

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_FLUX = ROOT / "models" / "nasa_world_flux.safetensors"
BUNDLED_UNET = ROOT / "models" / "nasa_world_teacher.safetensors"


def tiny(tmp_path, **kw):
    return TrainConfig(out=str(tmp_path), steps=3, batch=2, seed=1, ckpt_every=1, sample_every=0, threads=1,
                       warmup=1, arch="flux", **kw)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A flux world checkpoint after two training steps, written by the CLI's export path."""
    out = tmp_path_factory.mktemp("flux_world")
    trainer = WorldTrainer(tiny(out))
    trainer.train_step()
    trainer.train_step()
    path = out / "world_flux.safetensors"
    trainer.export(str(path))
    return path


def flux_adapter_or_skip(model):
    from comfyui_nasa.nasa_core.adapters import ADAPTERS
    if not any(a.matches(model) for a in ADAPTERS):
        pytest.skip("no NASA adapter for Flux is registered in nasa_core.adapters yet")


def test_model_is_comfys_flux_with_continuous_v_sampling():
    import comfy.ldm.flux.model
    import comfy.model_base
    import comfy.model_sampling
    model = flux_world.build_flux_model(seed=0)
    assert type(model) is comfy.model_base.Flux
    assert type(model.diffusion_model) is comfy.ldm.flux.model.Flux
    assert model.model_type == comfy.model_base.ModelType.V_PREDICTION_CONTINUOUS
    sampling = model.model_sampling
    assert isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousV)
    assert abs(float(sampling.sigma_max) - 80.0) < 1e-3 and 0.99 < float(sampling.timestep(sampling.sigma_max)) < 1.0
    flux = model.diffusion_model
    assert flux.patch_size == 2 and flux.img_in.in_features == 4 * wm.LATENT_CHANNELS
    assert flux.txt_in.in_features == wm.TEXT_WIDTH and not flux.params.guidance_embed
    # adaLN-Zero init: the first prediction is exactly 0
    x = torch.randn(2, wm.LATENT_CHANNELS, 8, 8)
    out = flux(x, torch.rand(2), context=torch.randn(2, flux_world.TEXT_TOKENS, wm.TEXT_WIDTH),
               y=torch.randn(2, wm.TEXT_WIDTH), guidance=None)
    assert out.shape == x.shape and not out.any()


def test_training_loss_is_what_comfy_denoises_with():
    """The trainer's v_loss calls the model as ComfyUI's apply_model does, and its target is the output that
    makes ComfyUI's denoised equal x0: a model returning that target has loss 0 and denoises exactly."""
    import math
    model = flux_world.build_flux_model(seed=0)
    sampling = model.model_sampling
    sd = sampling.sigma_data
    assert sd == flux_world.SIGMA_DATA
    x0 = wm.to_latent(world.sample_batch(0, 4)[0])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    u = torch.tensor([0.0, 0.3, 0.7, 0.999])
    seen = {}

    class Oracle(torch.nn.Module):  # records its input, answers with the v that ComfyUI turns into x0
        def forward(self, x, t, context, y, guidance):
            sigma = torch.tan(t * math.pi / 2).view(-1, 1, 1, 1)
            seen.update(x=x, t=t, sigma=sigma)
            x_sigma = x * (sigma ** 2 + sd ** 2).sqrt()  # the unscaled noisy latent
            return (x_sigma * sd ** 2 / (sigma ** 2 + sd ** 2) - x0) * (sigma ** 2 + sd ** 2).sqrt() / (sigma * sd)

    context = torch.randn(4, flux_world.TEXT_TOKENS, wm.TEXT_WIDTH)
    assert flux_world.v_loss(Oracle(), x0, context, u, noise) < 1e-8
    sigma = seen["sigma"].flatten()
    assert torch.allclose(sampling.timestep(sigma), seen["t"], atol=1e-6)
    assert abs(float(sigma[0]) - float(sampling.sigma_min)) < 1e-5 and float(sigma[-1]) > 50
    noisy = x0 + seen["sigma"] * noise
    assert torch.allclose(sampling.calculate_input(sigma, noisy), seen["x"], atol=1e-5)
    assert torch.allclose(sampling.calculate_denoised(sigma, Oracle()(seen["x"], seen["t"], None, None, None), noisy),
                          x0, atol=1e-4)


def test_x0_prediction_model_denoises_to_its_output_and_survives_export(tmp_path):
    """--prediction x0: ComfyUI's denoised is the network's output itself, the input is scaled as for v, the
    loss of the true x0 is 0 and its weight is the v loss's (checked against v_loss on a v model whose output
    is off by the same x0 error), and the exported file loads back as an x0 model; v files stay v."""
    import math
    import comfy.model_sampling
    model = flux_world.build_flux_model(seed=0, prediction="x0")
    sampling = model.model_sampling
    assert isinstance(sampling, flux_world.X0ContinuousV)
    assert isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousV)
    x0 = wm.to_latent(world.sample_batch(0, 4)[0])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    u = torch.tensor([0.0, 0.3, 0.7, 0.999])
    context = torch.randn(4, flux_world.TEXT_TOKENS, wm.TEXT_WIDTH)
    err = 0.01 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    sd = flux_world.SIGMA_DATA

    class X0Oracle(torch.nn.Module):
        def forward(self, x, t, context, y, guidance):
            return x0 + err

    class VOracle(torch.nn.Module):  # the v output whose ComfyUI denoised is x0 + err
        def forward(self, x, t, context, y, guidance):
            sigma = torch.tan(t * math.pi / 2).view(-1, 1, 1, 1)
            x_sigma = x * (sigma ** 2 + sd ** 2).sqrt()
            return (x_sigma * sd ** 2 / (sigma ** 2 + sd ** 2) - (x0 + err)) * (sigma ** 2 + sd ** 2).sqrt() / (sigma * sd)

    class Exact(X0Oracle):
        def forward(self, x, t, context, y, guidance):
            return x0

    assert flux_world.x0_loss(Exact(), x0, context, u, noise) == 0
    above_cap = torch.tensor([0.2, 0.5, 0.7, 0.9])  # sigma above X0_WEIGHT_SIGMA: the same loss as v's
    assert torch.allclose(flux_world.x0_loss(X0Oracle(), x0, context, above_cap, noise),
                          flux_world.v_loss(VOracle(), x0, context, above_cap, noise), rtol=1e-3)
    sigma = torch.tensor([0.05, 1.0, 10.0, 70.0])
    noisy = x0 + sigma.view(-1, 1, 1, 1) * noise
    assert torch.equal(sampling.calculate_denoised(sigma, x0 + err, noisy), x0 + err)
    assert torch.allclose(sampling.calculate_input(sigma, noisy), noisy / (sigma.view(-1, 1, 1, 1) ** 2 + sd ** 2).sqrt())

    trainer = WorldTrainer(tiny(tmp_path, prediction="x0"))
    trainer.train_step()
    path = tmp_path / "x0.safetensors"
    trainer.export(str(path))
    assert wm.checkpoint_metadata(str(path))["prediction"] == "x0"
    loaded, clip, _ = wm.load_world_checkpoint(str(path))
    assert isinstance(loaded.model.model_sampling, flux_world.X0ContinuousV)
    latents = sample_latents(loaded, encode(clip, "a red circle"), encode(clip, ""), 2, 3.0, 0, 2)
    assert torch.isfinite(latents).all()
    v_path = tmp_path / "v.safetensors"  # a v model (and every file written before x0 existed) loads as v
    WorldTrainer(tiny(tmp_path / "v", prediction="v")).export(str(v_path))
    assert wm.checkpoint_metadata(str(v_path)).get("prediction", "v") == "v"
    assert not isinstance(wm.load_world_checkpoint(str(v_path))[0].model.model_sampling, flux_world.X0ContinuousV)
    if BUNDLED_FLUX.exists():  # the bundled FLUX-class teacher predicts x0 (since 2026-12-04)
        assert wm.checkpoint_metadata(str(BUNDLED_FLUX))["prediction"] == "x0"
        assert isinstance(wm.load_world_checkpoint(str(BUNDLED_FLUX))[0].model.model_sampling, flux_world.X0ContinuousV)
    with pytest.raises(ValueError, match="x0' with --arch flux"):
        TrainConfig(out=str(tmp_path), prediction="x0").check()
    with pytest.raises(ValueError, match="prediction must be one of"):
        flux_world.build_flux_model(prediction="eps")


def test_cli_arch_flux_trains_two_steps_and_resumes(tmp_path):
    argv = ["--arch", "flux", "--out", str(tmp_path), "--batch", "2", "--seed", "1", "--threads", "1",
            "--warmup", "1", "--ckpt-every", "1", "--sample-every", "0"]
    main(argv + ["--steps", "2"])
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["config"]["arch"] == "flux"
    assert any(k.startswith("double_blocks.") for k in state["unet"])
    main(argv + ["--steps", "3", "--resume"])
    assert torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)["step"] == 3
    assert (tmp_path / "loss.csv").read_text().strip().splitlines()[-1].startswith("3,")
    with pytest.raises(ValueError, match="other settings.*'arch'"):
        WorldTrainer(TrainConfig(out=str(tmp_path), batch=2, seed=1, threads=1, warmup=1)).load(tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit):
        main(["--arch", "dit", "--out", str(tmp_path)])


def test_exported_checkpoint_loads_and_samples_through_comfy(exported):
    import comfy.ldm.flux.model
    assert wm.checkpoint_metadata(str(exported))["arch"] == "flux"
    model, clip, vae = wm.load_world_checkpoint(str(exported))
    assert isinstance(model.model.diffusion_model, comfy.ldm.flux.model.Flux)
    out = clip.encode_from_tokens(clip.tokenize("a red circle"), return_pooled=True, return_dict=True)
    cond, pooled = out["cond"], out["pooled_output"]  # what CLIP Text Encode puts into CONDITIONING
    assert cond.shape == (1, flux_world.TEXT_TOKENS, wm.TEXT_WIDTH) and pooled.shape == (1, wm.TEXT_WIDTH)
    assert torch.allclose(pooled, cond.mean(dim=1))
    positive, empty = encode(clip, "a red circle"), encode(clip, "")
    latents = sample_latents(model, positive, empty, steps=2, cfg=1.0, seed=0, batch=2)
    assert latents.shape == (2, wm.LATENT_CHANNELS, 8, 8) and torch.isfinite(latents).all()
    assert vae.decode(latents).shape == (2, 64, 64, 3)
    # the pooled vector reaches the model as Flux's y
    no_pool = [[positive[0][0], {"pooled_output": torch.zeros_like(pooled)}]]
    assert not torch.equal(sample_latents(model, no_pool, empty, 2, 1.0, 0, 2), latents)


def test_unet_checkpoints_without_arch_still_load_and_unknown_arch_is_clear(exported, tmp_path):
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.utils
    if BUNDLED_UNET.exists():
        assert "arch" not in wm.checkpoint_metadata(str(BUNDLED_UNET))
        model, _, _ = wm.load_world_checkpoint(str(BUNDLED_UNET))
        assert isinstance(model.model.diffusion_model, openaimodel.UNetModel)
    sd = comfy.utils.load_torch_file(str(exported))
    bad = tmp_path / "other.safetensors"
    comfy.utils.save_torch_file(sd, str(bad), metadata={"arch": "dit"})
    with pytest.raises(ValueError, match="arch 'dit'.*'unet' and 'flux'"):
        wm.load_world_checkpoint(str(bad))
    comfy.utils.save_torch_file(sd, str(bad))  # flux weights labelled as nothing: read as a UNet, refused
    with pytest.raises(ValueError, match="does not match the world UNet"):
        wm.load_world_checkpoint(str(bad))


def test_nasa_patches_the_flux_world_model(exported):
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    model, clip, _ = wm.load_world_checkpoint(str(exported))
    flux_adapter_or_skip(model)
    positive, empty = encode(clip, "a shape"), encode(clip, "")
    plain = sample_latents(model, positive, empty, 2, 1.0, 0, 2)
    negative = encode(clip, "red")[0][0]
    assert torch.equal(sample_latents(apply_nasa(model, negative, 0.0), positive, empty, 2, 1.0, 0, 2), plain)
    steered = sample_latents(apply_nasa(model, negative, 1.0), positive, empty, 2, 1.0, 0, 2)
    assert (steered - plain).abs().max() > 1e-4


@pytest.mark.skipif(not BUNDLED_FLUX.exists(), reason="the bundled flux world model is not in models/ yet")
def test_bundled_flux_world_model_loads_through_the_node_and_draws_the_colour():
    from comfyui_nasa.nodes.world_nodes import LoadNASAWorldModel, bundled_checkpoints
    assert BUNDLED_FLUX.name in bundled_checkpoints()
    assert BUNDLED_FLUX.stat().st_size < 8_000_000
    model, clip, vae = LoadNASAWorldModel().load(BUNDLED_FLUX.name)
    latents = sample_latents(model, encode(clip, "a large blue square on a white background"), encode(clip, ""),
                             4, 3.0, 0, 8)
    reads = world.read_attributes(images_from_latents(latents))
    assert sum(world.matches(r, {"colour": "blue", "background": "white"}) for r in reads) >= 6
    assert vae.decode(latents).shape == (8, 64, 64, 3)


def test_rope_gradient_used_in_training_matches_plain_torch():
    """On the modern tree the trainer registers a backward for comfy_kitchen's RoPE op (no-op elsewhere); the
    gradient through ComfyUI's apply_rope must equal the one of an independent plain-torch rotation."""
    import comfy.ldm.flux.math as flux_math
    from comfy.ldm.flux.layers import EmbedND
    from comfyui_nasa.nasa_core.comfy_env import enable_flux_rope_backward
    enable_flux_rope_backward()
    assert enable_flux_rope_backward() is False  # registered at most once
    g = torch.Generator().manual_seed(0)
    pe = EmbedND(dim=32, theta=10000, axes_dim=[8, 12, 12])(torch.randn(2, 5, 3, generator=g) * 3).float()
    q = torch.randn(2, 4, 5, 32, generator=g, requires_grad=True)
    k = torch.randn(2, 4, 5, 32, generator=g, requires_grad=True)
    w = torch.randn(2, 2, 4, 5, 32, generator=g)

    def rotate(x):  # each (even, odd) pair times its 2x2 matrix
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        return (pe[..., 0] * pairs[..., 0:1] + pe[..., 1] * pairs[..., 1:2]).reshape(x.shape)

    rq, rk = flux_math.apply_rope(q, k, pe)
    got = torch.autograd.grad((rq * w[0]).sum() + (rk * w[1]).sum(), (q, k))
    eq, ek = rotate(q), rotate(k)
    want = torch.autograd.grad((eq * w[0]).sum() + (ek * w[1]).sum(), (q, k))
    assert torch.allclose(rq, eq, atol=1e-5) and torch.allclose(rk, ek, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))
