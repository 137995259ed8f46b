"""NASA-T: SwiftBrush-v2-style variational score distillation with negative prompts (section 5.3).

Per step, for each sample: noise z, prompt y, negative y-, kappa ~ U, alpha ~ U (NASA-T):
  x0   = f_theta(z, y [, NASA(y-, alpha)])                       the student, one step at sigma_max
  x_t  = a_t x0 + s_t eps
  psi  = (1 - kappa) eps_psi(x_t, y-) + kappa eps_psi(x_t, y)     frozen teacher, equation 5 (y- = "" for SBv2)
  pi   = the same with the LoRA teacher (guided by "" unless lora_teacher_negative)
  student gradient   w(t) (psi - pi) through x0                   equation 6
  LoRA teacher loss  its epsilon-prediction loss on sg(x0) at a fresh t, eps
All randomness of sample g of step s comes from a generator seeded by (seed, g): a resumed run continues bit
for bit, and N processes with micro-batch b see the same samples as one process accumulating N micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from . import losses
from .config import RESUMABLE_CHANGES, ConfigError, DistillConfig
from .data import _mix, build_stream
from .lora import LoRASet, target_linears
from .models import (Loaded, TextCache, coefficients, export_student, load_models, model_conds, noise_form,
                     predict_x0, sigma_max, sigmas_for, student_input, with_nasa)

CHECKPOINT = "checkpoint.pt"
FORMAT = "nasa-t/1"


class _Trainable(torch.nn.Module):
    """What DDP synchronises: a module holding only trainable parameters, whose forward runs a closure
    through ComfyUI's model (where those parameters live or hook in)."""

    def __init__(self, params_owner: torch.nn.Module):
        super().__init__()
        self.owner = params_owner

    def forward(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


class Distiller:
    def __init__(self, cfg: DistillConfig, rank: int = 0, world_size: int = 1, device: Optional[torch.device] = None):
        from ..comfy_env import autograd_safe_context, enable_flux_rope_backward
        self.cfg = cfg.check()
        self.rank, self.world_size = rank, world_size
        self.accum = cfg.grad_accum(world_size)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        import comfy.model_management
        self.device = device or comfy.model_management.get_torch_device()
        self.stream = build_stream(cfg)

        self.teacher: Loaded = load_models(cfg)
        if self.teacher.clip is None:
            raise ConfigError("the trainer needs a text encoder for the prompts")
        self.text = TextCache(self.teacher.clip)
        teacher_unet = self.teacher.model.model.diffusion_model
        # Flux's blocks add residuals in place after saving tensors for backward (comfy_env says which copies)
        arch = "flux" if type(teacher_unet).__module__.startswith("comfy.ldm.flux") else "unet"
        self.autograd_safe = lambda: autograd_safe_context(arch)
        if arch == "flux":
            enable_flux_rope_backward()
        self.teacher.model.model.to(self.device)
        teacher_unet.requires_grad_(False)
        self.form = noise_form(self.teacher.model)
        self.latent_channels = self.teacher.model.model.latent_format.latent_channels

        names = target_linears(teacher_unet, cfg.lora_targets)
        if not names:
            raise ConfigError(f"lora_targets {cfg.lora_targets} match no Linear layer of this model")
        self.lora_teacher = LoRASet(teacher_unet, names, cfg.lora_rank, cfg.lora_scaling, seed=_mix(cfg.seed, 101))
        if cfg.student_lora_rank:
            # low-memory: the student is the frozen weights plus its own LoRA, on the same module
            self.student_model = self.teacher.model.clone()
            self.student_lora = LoRASet(teacher_unet, names, cfg.student_lora_rank, 2.0 * cfg.student_lora_rank,
                                        seed=_mix(cfg.seed, 102))
            student_params_owner: torch.nn.Module = self.student_lora
        else:
            init = load_models(cfg, cfg.student_init or cfg.teacher, need_clip=False)
            self.student_model = init.model
            self.student_model.model.to(self.device)
            self.student_lora = None
            student_params_owner = self.student_model.model.diffusion_model
            student_params_owner.requires_grad_(True)
        self.lora_teacher.to(self.device)
        if self.student_lora is not None:
            self.student_lora.to(self.device)
        reference = self.text.batch([""], self.device)[0] if cfg.nasa_t and cfg.nasa_reference else None
        self.student_run = with_nasa(self.student_model, reference) if cfg.nasa_t else self.student_model

        self.student_net = _Trainable(student_params_owner)
        self.lora_net = _Trainable(self.lora_teacher)
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.student_net = DDP(self.student_net, device_ids=ids)
            self.lora_net = DDP(self.lora_net, device_ids=ids)
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.student_params = [p for p in student_params_owner.parameters() if p.requires_grad]
        self.opt_student = torch.optim.AdamW(self.student_params, lr=cfg.lr_student, betas=betas,
                                             weight_decay=cfg.weight_decay)
        self.opt_lora = torch.optim.AdamW(self.lora_teacher.parameters(), lr=cfg.lr_lora, betas=betas,
                                          weight_decay=cfg.weight_decay)
        self.clip_scorer = load_clip_scorer(cfg.clip_model, self.device) if cfg.clip_model else None
        self.step = 0
        self.last_good: Optional[Path] = None

    # ---------------------------------------------------------------- the samples of a step
    def sample_indices(self, step: int, micro: int) -> List[int]:
        start = step * self.cfg.batch + (micro * self.world_size + self.rank) * self.cfg.micro_batch
        return list(range(start, start + self.cfg.micro_batch))

    def latent_size(self) -> int:
        """Latent side for --resolution: the VAE's spatial compression (8 for SD-family VAEs and the world's)."""
        vae = self.teacher.vae
        ratio = vae.spacial_compression_encode() if hasattr(vae, "spacial_compression_encode") else 8
        return self.cfg.resolution // int(ratio)

    def draws(self, indices: List[int]) -> Dict[str, torch.Tensor]:
        """Every random number of these samples, each from its own generator seeded by (seed, index)."""
        c, h = self.latent_channels, self.latent_size()
        cfg = self.cfg
        cols = {k: [] for k in ("z", "eps", "eps_lora", "u", "u_lora", "kappa", "alpha", "drop")}
        for g in indices:
            gen = torch.Generator().manual_seed(_mix(cfg.seed, 11, g))
            cols["z"].append(torch.randn(c, h, h, generator=gen))
            cols["eps"].append(torch.randn(c, h, h, generator=gen))
            cols["eps_lora"].append(torch.randn(c, h, h, generator=gen))
            r = torch.rand(5, generator=gen)
            cols["u"].append(cfg.t_min + (cfg.t_max - cfg.t_min) * r[0])
            cols["u_lora"].append(cfg.t_min + (cfg.t_max - cfg.t_min) * r[1])
            cols["kappa"].append(cfg.kappa_min + (cfg.kappa_max - cfg.kappa_min) * r[2])
            cols["alpha"].append(cfg.alpha_min + (cfg.alpha_max - cfg.alpha_min) * r[3])
            cols["drop"].append(r[4] < 0.1)  # the LoRA teacher's caption dropout: it serves CFG's empty prompt too
        return {k: torch.stack(v) for k, v in cols.items()}

    # ---------------------------------------------------------------- one step
    def _autocast(self):
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _guided_x0(self, model, x_t, sigma, pos, guide, kappa, spatial=8):
        """Equation 5 (or 4) in x0 units: one batched call over [y; guide prompt]."""
        n = x_t.shape[0]
        context = torch.cat([pos[0], guide[0]])
        pooled = None if pos[1] is None else torch.cat([pos[1], guide[1]])
        x2, s2 = torch.cat([x_t, x_t]), torch.cat([sigma, sigma])
        out = predict_x0(model, x2, s2, model_conds(model, context, pooled, x2)).float()
        return losses.guided(out[:n], out[n:], kappa)

    def micro_step(self, indices: List[int], sync: bool) -> Dict[str, float]:
        cfg, dev = self.cfg, self.device
        d = {k: v.to(dev) for k, v in self.draws(indices).items()}
        prompts = [self.stream.prompt(g) for g in indices]
        negatives = [self.stream.negative(g) for g in indices]
        pos = self.text.batch(prompts, dev)
        neg = self.text.batch(negatives, dev) if self.stream.negatives else None
        empty = self.text.batch([""] * len(indices), dev)
        n = len(indices)

        # the student, one step from noise (NASA-T: the negative inside its cross-attention at alpha)
        x_in = student_input(self.student_run, d["z"])
        s_max = torch.full((n,), sigma_max(self.student_run), device=dev)
        conds = model_conds(self.student_run, pos[0], pos[1], x_in)
        # a sample without a negative ("") gets no NASA, and the teacher's guidance falls back to equation 4
        has_negative = torch.tensor([bool(t) for t in negatives], device=dev)
        nasa_kwargs = dict(negative=neg[0], alpha=d["alpha"] * has_negative) if cfg.nasa_t else {}
        ddp_sync = contextlib.nullcontext() if sync or self.world_size == 1 else self.student_net.no_sync()
        with ddp_sync:
            student_lora = self.student_lora.active() if self.student_lora is not None else contextlib.nullcontext()
            with student_lora, self._autocast(), self.autograd_safe():
                x0 = self.student_net(predict_x0, self.student_run, x_in, s_max, conds, **nasa_kwargs).float()

            # the two teachers at a noisy version of the student's sample
            sigma = sigmas_for(self.teacher.model, d["u"]).to(dev)
            a, s = coefficients(self.form, sigma)
            x_t = a.view(-1, 1, 1, 1) * x0.detach() + s.view(-1, 1, 1, 1) * d["eps"]
            teacher_guide = neg if cfg.teacher_negative else empty
            lora_guide = neg if cfg.lora_teacher_negative else empty
            with torch.no_grad(), self._autocast():
                frozen = self._guided_x0(self.teacher.model, x_t, sigma, pos, teacher_guide, d["kappa"])
                with self.lora_teacher.active():
                    fake = self._guided_x0(self.teacher.model, x_t, sigma, pos, lora_guide, d["kappa"])
            diff = losses.vsd_eps_difference(frozen, fake, a, s)
            loss_vsd = losses.vsd_loss(x0, diff, losses.vsd_weight(a, s))
            loss = loss_vsd
            clip_value = 0.0
            if self.clip_scorer is not None:
                weight = losses.clip_weight_at(self.step, cfg.steps, cfg.clip_weight)
                if weight > 0:
                    sim = self.clip_scorer(decode_differentiable(self.teacher, x0), prompts)
                    loss_clip = losses.clamped_clip_loss(sim, cfg.clip_tau)
                    loss = loss + weight * loss_clip
                    clip_value = float(loss_clip)
            self._check_finite(loss, "student")
            with self.autograd_safe():
                (loss / self.accum).backward()

        # the LoRA teacher learns the student's distribution: denoising loss on sg(x0)
        sigma_l = sigmas_for(self.teacher.model, d["u_lora"]).to(dev)
        a_l, s_l = coefficients(self.form, sigma_l)
        x_tl = a_l.view(-1, 1, 1, 1) * x0.detach() + s_l.view(-1, 1, 1, 1) * d["eps_lora"]
        keep = (~d["drop"]).view(-1, 1, 1).to(pos[0].dtype)
        context = pos[0] * keep + empty[0] * (1 - keep)
        pooled = None if pos[1] is None else pos[1] * keep[:, 0] + empty[1] * (1 - keep[:, 0])
        ddp_sync = contextlib.nullcontext() if sync or self.world_size == 1 else self.lora_net.no_sync()
        with ddp_sync, self.lora_teacher.active():
            with self._autocast(), self.autograd_safe():
                pred = self.lora_net(predict_x0, self.teacher.model, x_tl, sigma_l,
                                     model_conds(self.teacher.model, context, pooled, x_tl)).float()
            loss_lora = losses.denoising_loss(pred, x0.detach(), a_l, s_l)
            self._check_finite(loss_lora, "LoRA teacher")
            with self.autograd_safe():
                (loss_lora / self.accum).backward()
        return {"vsd": float(loss_vsd.detach()), "lora": float(loss_lora.detach()), "clip": clip_value,
                "eps_gap": float(diff.abs().mean())}

    def _check_finite(self, loss: torch.Tensor, what: str):
        if not torch.isfinite(loss):
            where = self.last_good or "none written yet"
            raise FloatingPointError(f"the {what} loss is {float(loss.detach())} at step {self.step}; stopping. "
                                     f"Last good checkpoint: {where}")

    def train_step(self) -> Dict[str, float]:
        self.opt_student.zero_grad(set_to_none=True)
        self.opt_lora.zero_grad(set_to_none=True)
        logs: Dict[str, float] = {}
        for m in range(self.accum):
            out = self.micro_step(self.sample_indices(self.step, m), sync=m == self.accum - 1)
            for k, v in out.items():
                logs[k] = logs.get(k, 0.0) + v / self.accum
        if self.cfg.grad_clip > 0:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.student_params, self.cfg.grad_clip))
            torch.nn.utils.clip_grad_norm_(list(self.lora_teacher.parameters()), self.cfg.grad_clip)
        self.opt_student.step()
        self.opt_lora.step()
        self.step += 1
        return logs

    # ---------------------------------------------------------------- persistence
    def student_state(self) -> Dict[str, torch.Tensor]:
        """The student's diffusion-model weights (a LoRA student merged into the teacher's)."""
        if self.student_lora is not None:
            return self.student_lora.merged_state(self.teacher.model.model.diffusion_model)
        return {k: v.detach().clone() for k, v in self.student_model.model.diffusion_model.state_dict().items()}

    def state(self) -> dict:
        trainable = self.student_lora if self.student_lora is not None else self.student_model.model.diffusion_model
        return {"format": FORMAT, "config": self.cfg.to_dict(), "step": self.step,
                "samples_seen": self.step * self.cfg.batch,
                "student": {k: v.detach().cpu() for k, v in trainable.state_dict().items()},
                "lora_teacher": {k: v.detach().cpu() for k, v in self.lora_teacher.state_dict().items()},
                "opt_student": self.opt_student.state_dict(), "opt_lora": self.opt_lora.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}

    def save(self) -> Optional[Path]:
        """Rank 0 writes OUT/checkpoint.pt atomically (temporary file, then rename)."""
        path = Path(self.cfg.out) / CHECKPOINT
        if self.world_size > 1:
            dist.barrier()
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            torch.save(self.state(), tmp)
            os.replace(tmp, path)
        if self.world_size > 1:
            dist.barrier()
        self.last_good = path
        return path

    def load(self, path: Path):
        state = read_checkpoint(path)
        saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE_CHANGES}
        mine = {k: v for k, v in self.cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
        if saved != mine:
            diff = {k: (saved.get(k), mine.get(k)) for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)}
            raise ConfigError(f"checkpoint {path} belongs to a run with other settings (saved, given): {diff}")
        trainable = self.student_lora if self.student_lora is not None else self.student_model.model.diffusion_model
        try:
            trainable.load_state_dict(state["student"])
            self.lora_teacher.load_state_dict(state["lora_teacher"])
            self.opt_student.load_state_dict(state["opt_student"])
            self.opt_lora.load_state_dict(state["opt_lora"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(f"checkpoint {path} does not fit this model: {e}") from None
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = state["step"]
        self.last_good = path

    def export(self, path: str, command: str = ""):
        meta = {"nasa_t_config": json.dumps(self.cfg.to_dict()), "step": str(self.step), "command": command}
        if self.cfg.model_kind == "world":
            meta["nasa_world_train_config"] = meta["nasa_t_config"]
        export_student(self.cfg, self.student_export_target(), self.student_state(), path, meta)

    def student_export_target(self) -> Loaded:
        if self.student_lora is None and self.cfg.model_kind != "world":
            return Loaded(self.student_model, self.teacher.clip, self.teacher.vae)
        return self.teacher


def read_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt or not a torch file
        raise ConfigError(f"checkpoint {path} is corrupt or not a NASA-T checkpoint ({type(e).__name__}: {e}); "
                          f"delete it to start over, or resume from a copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a NASA-T checkpoint (format {state.get('format') if isinstance(state, dict) else type(state)!r}, expected {FORMAT})")
    missing = [k for k in ("config", "step", "student", "lora_teacher", "opt_student", "opt_lora", "rng") if k not in state]
    if missing:
        raise ConfigError(f"checkpoint {path} lacks {missing}: it is incomplete")
    return state


# ---------------------------------------------------------------------------------------------------------
# The clamped CLIP loss's image-text model (optional)


def decode_differentiable(loaded: Loaded, latent: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from latents, keeping the graph (ComfyUI's VAE.decode runs without gradients)."""
    if loaded.vae is None:
        raise ConfigError("the clamped CLIP loss needs a VAE: pass --vae")
    fmt = loaded.model.model.latent_format
    return loaded.vae.first_stage_model.decode(fmt.process_out(latent).to(loaded.vae.vae_dtype)).float().clamp(-1, 1)


def load_clip_scorer(spec: str, device):
    """An open_clip image-text model from ARCH:PATH, as a function (images in [-1, 1], texts) -> cosine."""
    if ":" not in spec:
        raise ConfigError(f"--clip-model takes ARCH:PATH (e.g. ViT-B-32:/models/open_clip_vit_b32.bin), got {spec!r}")
    arch, path = spec.split(":", 1)
    if not Path(path).is_file():
        raise ConfigError(f"CLIP checkpoint {path} does not exist")
    try:
        import open_clip
    except ImportError as e:
        raise ConfigError(f"the clamped CLIP loss needs open_clip_torch ({e}); or leave --clip-model empty") from None
    model = open_clip.create_model(arch, pretrained=path).to(device).eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(arch)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)

    def score(images: torch.Tensor, texts: List[str]) -> torch.Tensor:
        x = torch.nn.functional.interpolate((images + 1) / 2, size=(size, size), mode="bilinear", align_corners=False)
        img = torch.nn.functional.normalize(model.encode_image((x - mean) / std), dim=-1)
        with torch.no_grad():
            txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts).to(device)), dim=-1)
        return (img * txt).sum(-1)

    return score
