"""NASA-T, the distillation trainer (nasa_core.distill), on the bundled world teacher: what one step changes,
the loss terms against a hand-computed reference, resume after a kill, two processes (gloo), the exported
student in ComfyUI, and the errors for bad configurations. Nothing here trains for long."""
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from comfyui_nasa.nasa_core.distill import losses
from comfyui_nasa.nasa_core.distill.config import ConfigError, DistillConfig, config_from_dict, load_config_file, preset
from comfyui_nasa.nasa_core.distill.data import PromptStream, build_stream, quality_negatives, read_text_rows
from comfyui_nasa.nasa_core.distill.trainer import Distiller, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TEACHER = str(ROOT / "models" / "nasa_world_teacher.safetensors")


def tiny(tmp_path, name="world_nasa_t", **kw):
    cfg = preset(name)
    values = dict(teacher=TEACHER, out=str(tmp_path / "run"), batch=2, micro_batch=2, steps=2, ckpt_every=1,
                  sample_every=0, threads=1, lora_rank=2, lora_scaling=4.0)
    values.update(kw)
    return config_from_dict(values, cfg)


def cli(*args, timeout=240, env=None):
    return subprocess.run([sys.executable, "-m", "nasa_core.distill", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def tensors(path):
    from safetensors.torch import load_file
    return load_file(str(path))


# ---------------------------------------------------------------------------------------------- the losses

def test_guidance_is_equation_5():
    cond, neg = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    kappa = torch.tensor([0.5, 1.0, 4.0])
    want = torch.stack([(1 - k) * n + k * c for c, n, k in zip(cond, neg, kappa)])
    assert torch.allclose(losses.guided(cond, neg, kappa), want)


@pytest.mark.parametrize("form", ["ve", "flow"])
def test_vsd_and_denoising_terms_against_epsilon_space(form):
    """Written in x0 units, the terms must equal the paper's epsilon-space ones computed from x_t directly."""
    torch.manual_seed(0)
    x0_student, x0_frozen, x0_lora = torch.randn(3, 2, 4, 2, 2).unbind(0)
    eps = torch.randn(2, 4, 2, 2)
    sigma = torch.tensor([0.3, 0.8]) if form == "flow" else torch.tensor([0.5, 7.0])
    a = 1 - sigma if form == "flow" else torch.ones(2)
    s = sigma
    v = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    x_t = v(a) * x0_student + v(s) * eps
    eps_psi = (x_t - v(a) * x0_frozen) / v(s)
    eps_pi = (x_t - v(a) * x0_lora) / v(s)
    assert torch.allclose(losses.vsd_eps_difference(x0_frozen, x0_lora, a, s), eps_psi - eps_pi, atol=1e-5)
    w = losses.vsd_weight(a, s)
    assert torch.allclose(w, s ** 2 / (a ** 2 + s ** 2))
    x = x0_student.clone().requires_grad_(True)
    losses.vsd_loss(x, eps_psi - eps_pi, w).backward()
    assert torch.allclose(x.grad, v(w) * (eps_psi - eps_pi) / x.numel(), atol=1e-7)  # equation 6
    eps_hat = (x_t - v(a) * x0_lora) / v(s)
    assert torch.allclose(losses.denoising_loss(x0_lora, x0_student, a, s), ((eps_hat - eps) ** 2).mean(), atol=1e-5)


def test_clamped_clip_loss_and_its_decaying_weight():
    sim = torch.tensor([0.1, 0.37, 0.5])
    assert losses.clamped_clip_loss(sim, 0.37).item() == pytest.approx((0.27 + 0 + 0) / 3)
    assert losses.clip_weight_at(0, 100, 0.1) == pytest.approx(0.1)
    assert losses.clip_weight_at(50, 100, 0.1) == pytest.approx(0.05)
    assert losses.clip_weight_at(100, 100, 0.1) == 0.0


# ---------------------------------------------------------------------------------------------- the data

def test_prompt_files_and_deterministic_stream(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n a dog \n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat"}\n"a dog"\n{"text": "a cow"}\n')
    assert read_text_rows(str(tmp_path / "p.txt")) == ["a cat", "a dog"]
    assert read_text_rows(str(tmp_path / "p.jsonl")) == ["a cat", "a dog", "a cow"]
    (tmp_path / "bad.jsonl").write_text('{"caption_x": 1}\n')
    with pytest.raises(ConfigError, match="line 1: no 'prompt'"):
        read_text_rows(str(tmp_path / "bad.jsonl"))
    (tmp_path / "p.parquet").write_bytes(b"PAR1")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pyarrow"):
            read_text_rows(str(tmp_path / "p.parquet"))
    negs = quality_negatives(50, seed=3)
    assert negs == quality_negatives(50, seed=3) and len(set(negs)) > 30
    s1 = PromptStream([f"p{i}" for i in range(7)], negs, seed=5)
    s2 = PromptStream([f"p{i}" for i in range(7)], negs, seed=5)
    epoch = [s1.prompt(g) for g in range(7)]
    assert sorted(epoch) == sorted(f"p{i}" for i in range(7))  # one epoch visits every prompt once
    assert [s1.prompt(g) for g in range(30)] == [s2.prompt(g) for g in range(30)]
    assert [s1.negative(g) for g in range(30)] == [s2.negative(g) for g in range(30)]


@pytest.mark.parametrize("source", ["world", "world:v2"])
def test_world_negatives_never_contradict_the_prompt(source):
    """"world" is world v1 (the bundled teacher's: six attributes), "world:v2" the world with quality."""
    from comfyui_nasa.nasa_core import world
    cfg = preset("world_nasa_t")
    cfg.prompts = cfg.negatives = source
    stream = build_stream(cfg)
    spec = world.world_spec("v1" if source == "world" else "v2")
    attributes = world.named_attributes(spec)
    negatives = [stream.negative(g) for g in range(300)]
    for g, negative in enumerate(negatives):
        named = set(world.attributes_of_prompt(stream.prompt(g), spec))
        assert not named & set(world.attributes_of_prompt(negative, spec)), (stream.prompt(g), negative)
        if len(named) < len(attributes):
            assert negative, stream.prompt(g)  # "" only when the prompt leaves nothing to exclude
    assert len(set(negatives)) > 10
    if source == "world:v2":
        assert any("quality" in world.attributes_of_prompt(n, spec) for n in negatives)


# ---------------------------------------------------------------------------------------------- one step

def test_one_step_changes_student_and_lora_teacher_never_the_frozen_teacher(tmp_path):
    d = Distiller(tiny(tmp_path))
    teacher = {k: v.clone() for k, v in d.teacher.model.model.diffusion_model.state_dict().items()}
    student = {k: v.clone() for k, v in d.student_model.model.diffusion_model.state_dict().items()}
    lora = {k: v.clone() for k, v in d.lora_teacher.state_dict().items()}
    logs = d.train_step()
    assert all(math.isfinite(v) for v in logs.values())
    after = d.teacher.model.model.diffusion_model.state_dict()
    assert all(torch.equal(teacher[k], after[k]) for k in teacher)
    s_after = d.student_model.model.diffusion_model.state_dict()
    assert sum(not torch.equal(student[k], s_after[k]) for k in student) > 0.5 * len(student)
    assert all(not torch.equal(lora[k], v) for k, v in d.lora_teacher.state_dict().items() if k.startswith("up."))


def test_low_memory_student_lora_trains_only_adapters(tmp_path):
    d = Distiller(tiny(tmp_path, student_lora_rank=2))
    unet = d.teacher.model.model.diffusion_model
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    adapters = {k: v.clone() for k, v in d.student_lora.state_dict().items()}
    d.train_step()
    assert all(torch.equal(base[k], v) for k, v in unet.state_dict().items())
    assert any(not torch.equal(adapters[k], v) for k, v in d.student_lora.state_dict().items())
    merged = d.student_state()
    assert any(not torch.equal(merged[k], base[k]) for k in base)


def test_student_gradient_against_a_hand_computed_reference(tmp_path):
    """SBv2 step: the student's parameter gradient equals autograd of w(t)(eps_psi - eps_pi)/numel through the
    student's x0, with eps_psi, eps_pi computed here in epsilon space from direct apply_model calls."""
    d = Distiller(tiny(tmp_path, name="world_sbv2", lora_rank=2))
    with torch.no_grad():  # a non-zero LoRA teacher, so eps_pi differs from eps_psi
        for p in d.lora_teacher.up.values():
            p.normal_(0, 0.05)
    idx = d.sample_indices(0, 0)
    d.opt_student.zero_grad(set_to_none=True)
    d.micro_step(idx, sync=True)
    got = [p.grad.clone() for p in d.student_params]

    draws = d.draws(idx)
    base_s, base_t = d.student_model.model, d.teacher.model.model
    pos = d.text.batch([d.stream.prompt(g) for g in idx], "cpu")[0]
    empty = d.text.batch([""] * len(idx), "cpu")[0]
    ms = base_t.model_sampling
    smax = float(ms.sigma_max)
    x_in = draws["z"] * math.sqrt(1 + smax ** 2)
    for p in d.student_params:
        p.grad = None
    with d.autograd_safe():
        x0 = base_s.apply_model(x_in, torch.full((2,), smax), c_crossattn=pos)
    sigma = torch.tensor([ms.percent_to_sigma(1 - float(u)) for u in draws["u"]])
    sv = sigma.view(-1, 1, 1, 1)
    x_t = x0.detach() + sv * draws["eps"]
    k = draws["kappa"].view(-1, 1, 1, 1)

    def eps_of(ctx, lora_on):
        with torch.no_grad():
            if lora_on:
                with d.lora_teacher.active():
                    x0_hat = base_t.apply_model(x_t, sigma, c_crossattn=ctx)
            else:
                x0_hat = base_t.apply_model(x_t, sigma, c_crossattn=ctx)
        return (x_t - x0_hat) / sv

    eps_psi = (1 - k) * eps_of(empty, False) + k * eps_of(pos, False)
    eps_pi = (1 - k) * eps_of(empty, True) + k * eps_of(pos, True)
    w = (sigma ** 2 / (1 + sigma ** 2)).view(-1, 1, 1, 1)
    with d.autograd_safe():
        want = torch.autograd.grad(x0, d.student_params, grad_outputs=w * (eps_psi - eps_pi) / x0.numel(),
                                   allow_unused=True)
    for g, r in zip(got, want):
        r = torch.zeros_like(g) if r is None else r
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-9 + 1e-4 * r.abs().max().item())


def test_nasa_t_student_sees_the_negative_through_nasa(tmp_path):
    """The NASA-T student forward differs from the plain one with a negative at alpha > 0, equals it at 0."""
    from comfyui_nasa.nasa_core.distill.models import model_conds, predict_x0, student_input
    d = Distiller(tiny(tmp_path))
    z = torch.randn(2, d.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    x = student_input(d.student_run, z)
    pos = d.text.batch(["a shape", "two shapes"], "cpu")
    neg = d.text.batch(["red", "circle"], "cpu")[0]
    s = torch.full((2,), float(d.student_run.get_model_object("model_sampling").sigma_max))
    conds = model_conds(d.student_run, pos[0], pos[1], x)
    with torch.no_grad():
        plain = predict_x0(d.student_model, x, s, conds)
        zero = predict_x0(d.student_run, x, s, conds, negative=neg, alpha=torch.zeros(2))
        steered = predict_x0(d.student_run, x, s, conds, negative=neg, alpha=torch.tensor([0.0, 1.0]))
    assert torch.equal(zero, plain)
    assert torch.equal(steered[0], plain[0]) and not torch.allclose(steered[1], plain[1])


def test_nasa_t_with_a_reference_measures_the_negative_from_the_empty_prompt(tmp_path):
    """--nasa-reference: the student's NASA is Z+ - alpha (Z- - Z_empty), the model apply_nasa builds with the empty
    prompt as reference (checked against plain torch in test_unet_adapter.py); the empty prompt as the negative
    cancels."""
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.distill.models import model_conds, predict_x0, student_input
    d = Distiller(tiny(tmp_path, nasa_reference=True))
    z = torch.randn(2, d.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    x = student_input(d.student_run, z)
    pos = d.text.batch(["a shape", "two shapes"], "cpu")
    neg, empty = d.text.batch(["red", "circle"], "cpu")[0], d.text.batch([""], "cpu")[0]
    s = torch.full((2,), float(d.student_run.get_model_object("model_sampling").sigma_max))
    conds = model_conds(d.student_run, pos[0], pos[1], x)
    with torch.no_grad():
        plain = predict_x0(d.student_model, x, s, conds)
        steered = predict_x0(d.student_run, x, s, conds, negative=neg, alpha=torch.tensor([0.0, 1.0]))
        expected = predict_x0(apply_nasa(d.student_model, neg[1:], 1.0, reference=empty), x[1:], s[1:],
                              {k: v[1:] for k, v in conds.items()})
        cancelled = predict_x0(d.student_run, x, s, conds, negative=empty.expand(2, -1, -1), alpha=torch.ones(2))
    assert torch.equal(steered[0], plain[0])
    torch.testing.assert_close(steered[1:], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(steered[1:], predict_x0(apply_nasa(d.student_model, neg[1:], 1.0), x[1:], s[1:],
                                                      {k: v[1:] for k, v in conds.items()}), atol=1e-4)
    torch.testing.assert_close(cancelled, plain, atol=1e-5, rtol=1e-5)


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path):
    d = Distiller(tiny(tmp_path))
    d.train_step()
    d.save()
    with torch.no_grad():
        next(iter(d.lora_teacher.up.values())).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"at step 1.*Last good checkpoint: .*checkpoint.pt"):
        d.train_step()


# ---------------------------------------------------------------------------------------------- the CLI

def test_resume_after_a_kill_is_bit_identical(tmp_path):
    common = ["--preset", "world_nasa_t", "--teacher", TEACHER, "--batch", "2", "--micro-batch", "2",
              "--lora-rank", "2", "--lora-scaling", "4", "--steps", "5", "--sample-every", "0", "--threads", "1"]
    straight = cli(*common, "--out", str(tmp_path / "a"), "--ckpt-every", "5")
    assert straight.returncode == 0, straight.stderr[-2000:]

    out_b = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "nasa_core.distill", *common, "--out", str(out_b),
                             "--ckpt-every", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        log = out_b / "log.csv"
        if (out_b / "checkpoint.pt").exists() and log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    killed_mid_way = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed_mid_way, "the run finished before it could be killed"
    step_at_kill = read_checkpoint(out_b / "checkpoint.pt")["step"]
    assert 1 <= step_at_kill < 5
    resumed = cli("--out", str(out_b), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = tensors(tmp_path / "a" / "student.safetensors"), tensors(out_b / "student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = read_checkpoint(tmp_path / "a" / "checkpoint.pt"), read_checkpoint(out_b / "checkpoint.pt")
    assert all(torch.equal(ca["lora_teacher"][k], cb["lora_teacher"][k]) for k in ca["lora_teacher"])
    steps_logged = [int(line.split(",")[0]) for line in (out_b / "log.csv").read_text().splitlines()[1:]]
    assert steps_logged[-1] == 5 and len(set(steps_logged)) == 5


def test_a_student_run_carried_to_another_machine_resumes_bit_for_bit(tmp_path):
    """scripts/training_handoff.sh on a distillation run: saved into the kept folder (checkpoint, run.json,
    log.csv), its runs/ folder lost with the machine, restored and resumed with a longer --steps, it ends where a
    run never stopped ends."""
    import os
    import shutil
    common = ["--preset", "world_nasa_t", "--teacher", TEACHER, "--batch", "2", "--micro-batch", "2",
              "--lora-rank", "2", "--lora-scaling", "4", "--sample-every", "0", "--threads", "1", "--ckpt-every", "1"]
    straight = cli(*common, "--steps", "3", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    runs, kept = tmp_path / "runs", tmp_path / "kept"
    first = cli(*common, "--steps", "2", "--out", str(runs / "s"))
    assert first.returncode == 0, first.stderr[-2000:]
    env = dict(os.environ, NASA_RUNS_DIR=str(runs), NASA_TRAINING_DIR=str(kept))
    script = ROOT / "scripts" / "training_handoff.sh"
    subprocess.run(["bash", str(script), "save", "s"], env=env, check=True, capture_output=True)
    assert {p.name for p in (kept / "s").iterdir()} == {"checkpoint.pt", "run.json", "log.csv"}
    shutil.rmtree(runs)  # the machine is gone
    subprocess.run(["bash", str(script), "restore", "s"], env=env, check=True, capture_output=True)
    resumed = cli("--out", str(runs / "s"), "--resume", "--steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = tensors(tmp_path / "straight" / "student.safetensors"), tensors(runs / "s" / "student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps_logged = [int(line.split(",")[0]) for line in (runs / "s" / "log.csv").read_text().splitlines()[1:]]
    assert steps_logged == [1, 2, 3]


def test_two_processes_with_gloo_match_one_process_accumulating(tmp_path):
    common = ["--preset", "world_sbv2", "--teacher", TEACHER, "--batch", "4", "--micro-batch", "2",
              "--lora-rank", "2", "--lora-scaling", "4", "--steps", "2", "--ckpt-every", "2", "--sample-every", "0",
              "--threads", "1", "--lr-student", "1e-3"]  # step 1 moves only the LoRA teacher (it starts at zero)
    one = cli(*common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                "-m", "nasa_core.distill", *common, "--out", str(tmp_path / "two")]
    two = subprocess.run(torchrun, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = read_checkpoint(tmp_path / "one" / "checkpoint.pt")["student"]
    b = read_checkpoint(tmp_path / "two" / "checkpoint.pt")["student"]
    before = tensors(TEACHER)
    moved = 0
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-3), k  # at most one Adam step (lr 1e-3) apart anywhere
        moved += int((a[k].float() - before["model." + k].float()).abs().max() > 1e-4)
    assert moved > len(a) // 2
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert (diffs < 1e-5).float().mean() > 0.99  # the same samples and gradients, up to summation order


def test_exported_student_loads_in_comfyui_and_samples_one_step(tmp_path):
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.sampling import encode, sample_latents
    d = Distiller(tiny(tmp_path, steps=1))
    d.train_step()
    path = tmp_path / "student.safetensors"
    d.export(str(path), "test")
    model, clip, vae = load_world_checkpoint(str(path))
    pos, neg = encode(clip, "a shape"), encode(clip, "red")
    plain = sample_latents(model, pos, encode(clip, ""), 1, 1.0, 0, 1)
    steered = sample_latents(apply_nasa(model, neg[0][0], 1.0), pos, encode(clip, ""), 1, 1.0, 0, 1)
    assert plain.shape == (1, 48, 8, 8) and torch.isfinite(plain).all()
    assert not torch.allclose(plain, steered)
    student = {k: v.float() for k, v in d.student_state().items()}
    loaded = model.model.diffusion_model.state_dict()
    assert all(torch.allclose(loaded[k].float(), student[k].half().float()) for k in student)


@pytest.mark.parametrize("arch", ["unet", "flux"])
def test_a_student_of_a_world_v2_teacher_loads_as_its_teacher_does(tmp_path, arch):
    """The student file carries what the loader rebuilds the model from: the teacher's world, architecture,
    per-channel latent scale and (Flux) prediction. Without them a world-v2 student loaded as a v1 UNet on the raw
    latent scale, and the benchmarks read it as world v1."""
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_metadata, load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.train import TrainConfig, WorldTrainer
    extra = dict(arch="flux", prediction="x0") if arch == "flux" else {}
    trainer = WorldTrainer(TrainConfig(out=str(tmp_path / "t"), steps=1, batch=2, seed=1, ckpt_every=1, sample_every=0,
                                       threads=1, warmup=1, world="v2", latent_norm="channel", **extra))
    teacher = tmp_path / "teacher.safetensors"
    trainer.export(str(teacher))
    # the command line in a fresh process: nothing earlier in this test session has prepared Flux for backward
    run = cli("--preset", "world_nasa_t", "--teacher", str(teacher), "--prompts", "world:v2", "--negatives", "world:v2",
              "--batch", "2", "--micro-batch", "2", "--lora-rank", "2", "--lora-scaling", "4", "--steps", "1",
              "--sample-every", "0", "--threads", "1", "--out", str(tmp_path / "s"))
    assert run.returncode == 0, run.stderr[-2000:]
    student = tmp_path / "s" / "student.safetensors"
    t_meta, s_meta = checkpoint_metadata(str(teacher)), checkpoint_metadata(str(student))
    for key in ("world", "latent_std") + (("arch", "prediction", "flux_config") if arch == "flux" else ()):
        assert s_meta[key] == t_meta[key], key
    assert "python -m nasa_core.distill" in s_meta["command"] and "nasa_t_config" in s_meta
    t_model, s_model = load_world_checkpoint(str(teacher))[0], load_world_checkpoint(str(student))[0]
    x = torch.randn(1, 48, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s_model.model.latent_format.process_in(x), t_model.model.latent_format.process_in(x))
    def sampling(m):  # ComfyUI builds the sampling class per model: compare what it is made of
        return [c.__qualname__ for c in type(m.model.model_sampling).__mro__]
    assert sampling(s_model) == sampling(t_model)


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("values, message", [
    ({"kappa_min": float("nan")}, "kappa_min must be a finite number"),
    ({"kappa_min": 5.0, "kappa_max": 1.0}, "kappa range is empty"),
    ({"batch": 6, "micro_batch": 4}, "not a multiple of micro_batch"),
    ({"negatives": "none", "nasa_t": True}, "nasa_t needs negatives"),
    ({"t_min": 0.0}, "time range"),
    ({"model_kind": "onnx"}, "model_kind must be"),
    ({"resolution": 100}, "multiple of 8"),
    ({"nasa_reference": True, "nasa_t": False}, "nasa_reference .* needs --nasa-t"),
])
def test_bad_configuration_is_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values, preset("world_nasa_t")).check()


def test_config_file_is_type_checked(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kapa_min": 1.0}))
    with pytest.raises(ConfigError, match=r"unknown configuration keys \['kapa_min'\]"):
        load_config_file(str(path))
    path.write_text(json.dumps({"steps": "many"}))
    with pytest.raises(ConfigError, match="steps must be an integer"):
        load_config_file(str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(str(path))
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("sd9")
    with pytest.raises(ConfigError, match="grad_accum|cannot be split"):
        DistillConfig(batch=4, micro_batch=4).grad_accum(world_size=3)


def test_cli_errors_are_clear(tmp_path):
    r = cli("--preset", "world_nasa_t", "--teacher", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "does not exist" in r.stderr
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 100)
    r = cli("--preset", "world_nasa_t", "--teacher", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "cannot load world checkpoint" in r.stderr
    r = cli("--out", str(tmp_path / "nothing"), "--resume")
    assert r.returncode != 0 and "no run at" in r.stderr
    help_text = cli("--help").stdout
    for name in DistillConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text


def test_corrupt_or_mismatched_checkpoint_is_refused(tmp_path):
    d = Distiller(tiny(tmp_path))
    path = d.save()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="corrupt or not a NASA-T checkpoint"):
        d.load(path)
    d.save()
    other = Distiller(tiny(tmp_path, lr_student=1e-3))
    with pytest.raises(ConfigError, match="other settings.*lr_student"):
        other.load(path)


# ---------------------------------------------------------------------------------------------- the bundled students

STUDENTS = [ROOT / "models" / f"nasa_world_{arch}student_{kind}.safetensors"
            for arch in ("", "flux_") for kind in ("sbv2", "nasa_t")]


@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_bundled_students_sample_in_one_step_and_take_nasa(path):
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_metadata, load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.sampling import encode, sample_latents
    assert path.exists(), f"{path.name} is missing: distil it as the README's NASA-T section says"
    meta = checkpoint_metadata(str(path))
    assert "python -m nasa_core.distill" in meta["command"] and json.loads(meta["nasa_t_config"])["seed"] == 0
    # a student of a bundled world-v2 teacher: its world, architecture and latent scale travel with it
    assert meta["world"] == "v2" and meta.get("arch", "unet") == ("flux" if "flux" in path.name else "unet")
    assert json.loads(meta["nasa_t_config"])["nasa_t"] == path.stem.endswith("nasa_t")
    model, clip, _ = load_world_checkpoint(str(path))
    pos, neg, empty = encode(clip, "a shape"), encode(clip, "red"), encode(clip, "")
    plain = sample_latents(model, pos, empty, 1, 1.0, 0, 2)
    steered = sample_latents(apply_nasa(model, neg[0][0], 0.25), pos, empty, 1, 1.0, 0, 2)
    assert torch.isfinite(plain).all() and not torch.allclose(plain, steered)
    zero = sample_latents(apply_nasa(model, neg[0][0], 0.0), pos, empty, 1, 1.0, 0, 2)
    assert torch.equal(zero, plain)


def test_student_tables_run_at_tiny_n(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "student_tables.py"), "--n", "1", "--quality-n", "1",
                        "--pairs", "1", "--alphas", "0.5", "--steps", "1", "--out", str(tmp_path),
                        "--ablation", f"teacher alone={STUDENTS[0].relative_to(ROOT)}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    quality = json.loads((tmp_path / "students_quality.json").read_text())
    assert [row["model"] for row in quality["rows"]] == ["teacher", "teacher", "SBv2 student", "NASA-T student"]
    # the bundled models learnt world v2, whose Table 3 adds the teacher with the quality negative as CFG's
    assert [row["model"] for row in quality["table3"]] == [
        "teacher", "teacher, CFG negative: the quality negative", "SBv2 student", "SBv2 student + NASA-I 0.25",
        "NASA-T student", "NASA-T student + NASA-I 0.25"]
    assert [row["model"] for row in quality["table5"]] == ["teacher alone"]  # Table 5: one row per --ablation
    for name in ("sbv2", "nasa_t"):
        cells = json.loads((tmp_path / f"removal_student_{name}.json").read_text())["cells"]
        assert {c["method"] for c in cells} == {"none", "CFG 1.5", "CFG 3", "NASA"} and all(c["steps"] == 1 for c in cells)


def test_student_tables_refuse_a_bad_ablation_before_sampling(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "student_tables.py"), "--skip-removal", "--quality-n", "1",
                        "--out", str(tmp_path), "--ablation", "no file=runs/missing.safetensors"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "--ablation takes LABEL=PATH with an existing file" in r.stderr
    assert not (tmp_path / "students_quality.md").exists() and "teacher 20 steps" not in r.stderr  # nothing sampled


def test_table3_on_a_world_with_quality_leaves_quality_unnamed_and_takes_the_quality_negative(tmp_path):
    """World v2 (a tiny untrained exported teacher as all three models, so no training is needed): Table 3's
    prompts name every attribute but quality, 'all' leaves quality out, the teacher has a row with the quality
    negative as CFG's negative, and NASA-I takes the quality negative."""
    from comfyui_nasa.nasa_core.world_model.train import TrainConfig, WorldTrainer
    trainer = WorldTrainer(TrainConfig(out=str(tmp_path / "run"), steps=1, batch=2, seed=1, ckpt_every=1,
                                       sample_every=0, threads=1, warmup=1, world="v2"))
    path = tmp_path / "v2.safetensors"
    trainer.export(str(path))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "student_tables.py"), "--skip-removal",
                        "--quality-n", "2", "--teacher", str(path), "--sbv2", str(path), "--nasa-t", str(path),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    quality = json.loads((tmp_path / "students_quality.json").read_text())
    assert quality["world"] == "v2" and "quality" in quality["rows"][0]["shares"]
    assert [row["model"] for row in quality["table3"]][:2] == ["teacher", "teacher, CFG negative: the quality negative"]
    assert all("quality" not in row["shares"] and "all" in row["shares"] for row in quality["table3"])
    report = (tmp_path / "students_quality.md").read_text()
    assert "every attribute but quality" in report and "with the quality negative" in report


def test_sample_grid_shows_the_fixed_prompts_plain_and_with_nasa(tmp_path):
    import numpy as np
    from PIL import Image
    from comfyui_nasa.nasa_core.distill.cli import sample_grid
    d = Distiller(tiny(tmp_path))
    path = tmp_path / "grid.png"
    sample_grid(d, path)
    prompts = d.cfg.sample_prompts
    grid = torch.from_numpy(np.array(Image.open(path))).float()
    assert grid.shape == (2 * 64 * 2, len(prompts) * 64 * 2, 3)  # top row plain, bottom row NASA, scale 2
    plain, steered = grid[:128], grid[128:]
    assert not torch.equal(plain, steered)
    # a --nasa-reference run's grid shows its own NASA, the negative measured from the empty prompt
    d_ref = Distiller(tiny(tmp_path / "ref", nasa_reference=True))
    sample_grid(d_ref, tmp_path / "grid_ref.png")
    grid_ref = torch.from_numpy(np.array(Image.open(tmp_path / "grid_ref.png"))).float()
    assert torch.equal(grid_ref[:128], plain) and not torch.equal(grid_ref[128:], steered)
