"""Train the bundled world teacher: ComfyUI's UNetModel + the small text encoder, v-prediction on the
synthetic world (nasa_core.world), on a CPU. ``--arch flux``: the joint-attention world model built from
ComfyUI's Flux classes instead (flux_world.py), continuous-time v- or x0-prediction (--prediction); the same machinery otherwise.

    python -m nasa_core.world_model.train --out runs/world_teacher --steps 6000
    python -m nasa_core.world_model.train --out runs/world_teacher --steps 8000 --resume   # continue
    python -m nasa_core.world_model.train --out runs/world_teacher --export models/nasa_world_teacher.safetensors
    python -m nasa_core.world_model.train --arch flux --out runs/world_flux --steps 6000

Every batch is a pure function of (seed, step) and the noise of step s comes from a generator seeded by
(seed, s), so a resumed run continues bit for bit. Checkpoints are written atomically; the exported model is
the EMA of the weights, in fp16.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

from ..comfy_env import autograd_safe_context, enable_flux_rope_backward  # noqa: F401  (the trainers share them)


ARCHS = ("unet", "flux")
LATENT_NORMS = ("none", "channel")
# How training noise levels are drawn. "uniform": uniform over the model's timesteps (DDPM's habit; with
# ComfyUI's discrete schedule under 10% of draws have sigma < 0.3, where the edges and the last of the noise
# are settled). "lognormal": EDM's ln(sigma) ~ N(-1.2, 1.2^2) (Karras et al. 2022), half the draws below 0.3.
# "mixed": each row one or the other, at even odds (lognormal alone leaves few draws above sigma 2, where the
# composition is decided: docs/world_ablations.md).
TIMESTEP_DISTS = ("uniform", "lognormal", "mixed")
# How the loss weighs the latent's 48 channels. "equal": each counts the same in the model's (per-channel
# scaled) latent, so the 3 block-colour (DC) channels, which carry most of what the eye sees, are 1/16 of the
# loss. "pixel": each channel's error as it shows in the decoded image (squared pixel error; DC x 64 its
# raw std^2). "pixel-sqrt": the square root of that weight, between the two (docs/world_ablations.md,
# 2026-12-07, second session).
CHANNEL_WEIGHTS = ("equal", "pixel", "pixel-sqrt")
LOGNORMAL_MEAN, LOGNORMAL_STD = -1.2, 1.2


@dataclass
class TrainConfig:
    out: str = "runs/world_teacher"
    steps: int = 6000
    batch: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    p_name: float = 0.5
    seed: int = 0
    ckpt_every: int = 250
    sample_every: int = 500
    threads: int = 2
    arch: str = "unet"
    world: str = "v1"          # which world (nasa_core.world.world_spec): "v1" is the one the bundled models learnt
    width: int = 64            # UNet model_channels (the Flux model keeps its own config)
    latent_norm: str = "none"  # "channel": the model sees each latent channel divided by its std (BlockDCT)
    text_layers: int = 2       # transformer layers of the text encoder
    timesteps: str = "uniform"  # how noise levels are drawn (TIMESTEP_DISTS)
    prediction: str = "v"      # Flux model only: what its network outputs, "v" or "x0" (flux_world.py)
    channel_weight: str = "equal"  # how the loss weighs the latent channels (CHANNEL_WEIGHTS)

    def check(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, not {self.arch!r}")
        if self.steps < 1 or self.batch < 1 or self.lr <= 0 or not 0 <= self.ema_decay < 1:
            raise ValueError(f"bad configuration: {self}")
        if not 0 <= self.caption_dropout < 1 or not 0 < self.p_name <= 1:
            raise ValueError(f"caption_dropout must be in [0, 1) and p_name in (0, 1]: {self}")
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, not {self.latent_norm!r}")
        if self.timesteps not in TIMESTEP_DISTS:
            raise ValueError(f"timesteps must be one of {TIMESTEP_DISTS}, not {self.timesteps!r}")
        if self.prediction not in ("v", "x0") or (self.prediction == "x0" and self.arch != "flux"):
            raise ValueError(f"prediction must be 'v', or 'x0' with --arch flux, not {self.prediction!r} with {self.arch!r}")
        if self.channel_weight not in CHANNEL_WEIGHTS:
            raise ValueError(f"channel_weight must be one of {CHANNEL_WEIGHTS}, not {self.channel_weight!r}")
        if self.width < 32 or self.width % 32 or self.text_layers < 0:
            raise ValueError(f"width must be a multiple of 32 (heads of 32), text_layers >= 0: {self}")

    def spec(self):
        from .. import world
        return world.world_spec(self.world)


SAMPLE_PROMPTS = ["a red circle", "a large blue square on a white background", "two yellow triangles",
                  "a small green shape on the left", "a shape", "a circle on a gray background",
                  "a triangle in the center", "two squares on a black background"]
# World v2: plain prompts (where the priors show), named quality, and degradations asked for.
SAMPLE_PROMPTS_V2 = ["shape", "a shape, high quality", "a large blue square on a white background, high quality",
                     "two yellow triangles, high quality", "a small green triangle on the left, high quality",
                     "red circle, blurry", "a square on a gray background, noisy", "green shape, cut off"]


def vocabulary_texts(seed: int = 12345, n: int = 300, spec=None) -> List[str]:
    """Every word the world's captions (and the benchmark's prompts and negatives) can use."""
    from .. import world
    gen = torch.Generator().manual_seed(seed)
    attrs = world.sample_attributes(gen, n) if spec is None else world.sample_attributes(gen, n, spec)
    texts = [world.caption_all(a) for a in attrs] + [world.caption(a, gen) for a in attrs]
    words = [str(w) for values in world.VOCAB.values() for w in values]
    texts += words + ["one", "two", "shape", "shapes", "background", "on the left", "in the center",
                      "on the right", "circles", "squares", "triangles"]
    texts += list(getattr(world, "PROMPT_WORDS", ()))
    return texts


def latent_channel_std(spec=None, n: int = 2048, seed: int = 987654321) -> List[float]:
    """Per-channel std of the world's latents over ``n`` images of a fixed seed (the BlockDCT scale)."""
    from .. import world
    from . import model as wm
    images = world.sample_batch(seed, n)[0] if spec is None else world.sample_batch(seed, n, spec)[0]
    std = wm.to_latent(images).double().transpose(0, 1).reshape(wm.LATENT_CHANNELS, -1).std(1)
    return [round(float(v), 6) for v in std.clamp_min(1e-3)]


def channel_weights(kind: str, latent_std: Optional[List[float]]) -> Optional[torch.Tensor]:
    """[1, 48, 1, 1] loss weights of the model's latent channels, mean 1 (None for "equal"). A channel's error
    in the model's units shows in the decoded image times its std (the model divides it out) times the
    codec's gain (the DC channel is the block mean, 1/8 of its orthonormal DCT coefficient)."""
    if kind == "equal":
        return None
    from . import model as wm
    gain = torch.ones(wm.LATENT_CHANNELS, dtype=torch.float64)
    gain[::wm.KEEP * wm.KEEP] = 1.0 / wm.DC_SCALE  # channel c * 16 is colour c's DC
    if latent_std is not None:
        gain = gain * torch.tensor(latent_std, dtype=torch.float64)
    w = gain ** 2 if kind == "pixel" else gain
    return (w / w.mean()).float().view(1, -1, 1, 1)


class WorldTrainer:
    def __init__(self, cfg: TrainConfig):
        from . import model as wm
        cfg.check()
        self.cfg = cfg
        self.wm = wm
        torch.set_num_threads(cfg.threads)
        self.spec = cfg.spec()
        self.latent_std = latent_channel_std(self.spec) if cfg.latent_norm == "channel" else None
        if cfg.arch == "flux":
            from . import flux_world
            self.flux_world = flux_world
            if self.latent_std is not None:  # its objective is built for data of std sigma_data, not 1
                self.latent_std = [round(v / flux_world.SIGMA_DATA, 6) for v in self.latent_std]
            enable_flux_rope_backward()
            self.tokenizer = flux_world.WorldFluxTokenizer()
            self.base = flux_world.build_flux_model(seed=cfg.seed, latent_std=self.latent_std, prediction=cfg.prediction)
        else:
            self.tokenizer = wm.WorldTokenizer()
            self.base = wm.build_unet_model(seed=cfg.seed, width=cfg.width, latent_std=self.latent_std)
        self.unet = self.base.diffusion_model
        self.channel_weight = channel_weights(cfg.channel_weight, self.latent_std)
        torch.manual_seed(cfg.seed)  # the text encoder's init
        self.encoder = wm.WorldTextEncoder(wm.world_vocab(self.tokenizer, vocabulary_texts(spec=self.spec)),
                                           layers=cfg.text_layers)
        self.ema_unet = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
        self.ema_text = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        params = list(self.unet.parameters()) + list(self.encoder.parameters())
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        sigmas = self.base.model_sampling.sigmas.float()
        self.alphas_cumprod = 1.0 / (1.0 + sigmas ** 2)
        self._ids = {}

    # -- data
    def token_ids(self, captions: List[str]) -> torch.Tensor:
        missing = [c for c in set(captions) if c not in self._ids]
        if missing:
            for c, ids in zip(missing, self.tokenizer.ids(missing)):
                self._ids[c] = ids
        return torch.stack([self._ids[c] for c in captions])

    def batch(self, step: int):
        from .. import world
        images, _, captions = world.batch_for_step(self.cfg.seed, step, self.cfg.batch, self.spec,
                                                   p_name=self.cfg.p_name)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        drop = torch.rand(len(captions), generator=g) < self.cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        n = len(captions)
        if self.cfg.timesteps in ("lognormal", "mixed"):
            t = self.timesteps_of(torch.exp(LOGNORMAL_MEAN + LOGNORMAL_STD * torch.randn(n, generator=g)))
        if self.cfg.timesteps in ("uniform", "mixed"):
            if self.cfg.arch == "flux":
                uniform = torch.rand(n, generator=g)  # spread over the timestep range by flux_world._noised_call
            else:
                uniform = torch.randint(0, len(self.alphas_cumprod), (n,), generator=g)
            t = uniform if self.cfg.timesteps == "uniform" else torch.where(torch.rand(n, generator=g) < 0.5, t, uniform)
        noise = torch.randn(images.shape[0], self.wm.LATENT_CHANNELS, images.shape[2] // self.wm.FOLD,
                            images.shape[3] // self.wm.FOLD, generator=g)
        return self.base.latent_format.process_in(self.wm.to_latent(images)), captions, t, noise

    def timesteps_of(self, sigma: torch.Tensor) -> torch.Tensor:
        """What ``loss`` takes for these noise levels (clamped to the model's range): the UNet's discrete
        timestep index, nearest; the Flux model's u in [0, 1] (flux_world._noised_call)."""
        if self.cfg.arch == "flux":
            return self.flux_world.u_of_sigma(sigma)
        t = self.base.model_sampling.timestep(sigma.clamp(self.base.model_sampling.sigma_min,
                                                          self.base.model_sampling.sigma_max))
        return t.round().long().clamp(0, len(self.alphas_cumprod) - 1)

    # -- one step
    def loss(self, x0, captions, t, noise):
        if self.cfg.arch == "flux":
            return self.flux_world.loss(self.cfg.prediction, self.unet, x0, self.encoder(self.token_ids(captions)), t, noise,
                                        channel_weight=self.channel_weight)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        context = self.encoder(self.token_ids(captions))
        pred = self.unet(xt, t.float(), context=context)
        v = a.sqrt() * noise - (1 - a).sqrt() * x0  # the v-prediction target (the model config says V_PREDICTION)
        err = (pred - v) ** 2
        return err.mean() if self.channel_weight is None else (err * self.channel_weight).mean()

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.cfg.warmup))
        return self.cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.cfg.steps)))

    def train_step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        with autograd_safe_context(self.cfg.arch):
            loss = self.loss(*self.batch(self.step))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; last good checkpoint: "
                                     f"{Path(self.cfg.out) / 'checkpoint.pt'}")
        self.opt.zero_grad(set_to_none=True)
        with autograd_safe_context(self.cfg.arch):
            loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()) + list(self.encoder.parameters()), 1.0)
        self.opt.step()
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for ema, live in ((self.ema_unet, self.unet.state_dict()), (self.ema_text, self.encoder.state_dict())):
                for k, v in live.items():
                    if v.is_floating_point():
                        ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                    else:
                        ema[k].copy_(v)
        self.step += 1
        return loss.item()

    # -- persistence
    def state(self):
        return {"config": dataclasses.asdict(self.cfg), "step": self.step, "unet": self.unet.state_dict(),
                "encoder": self.encoder.state_dict(), "ema_unet": self.ema_unet, "ema_text": self.ema_text,
                "opt": self.opt.state_dict()}

    def save(self):
        out = Path(self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "checkpoint.pt.tmp"
        torch.save(self.state(), tmp)
        os.replace(tmp, out / "checkpoint.pt")

    def load(self, path: Path, may_differ=()):
        """Continue from a checkpoint of this run; ``may_differ``: config keys a fork may change (``--fork-from``)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file
            raise ValueError(f"cannot read checkpoint {path}: {e}") from e
        for key in ("unet", "encoder", "ema_unet", "ema_text", "opt", "step", "config"):
            if key not in state:
                raise ValueError(f"{path} is not a world-teacher checkpoint (no '{key}')")
        saved = {k: v for k, v in state["config"].items()
                 if k not in ("steps", "out", "ckpt_every", "sample_every", "threads") + tuple(may_differ)}
        mine = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k in saved}
        if saved != mine:
            diff = {k: (saved[k], mine[k]) for k in saved if saved[k] != mine[k]}
            raise ValueError(f"checkpoint {path} was trained with other settings (saved, given): {diff}")
        self.unet.load_state_dict(state["unet"])
        self.encoder.load_state_dict(state["encoder"])
        self.ema_unet, self.ema_text = state["ema_unet"], state["ema_text"]
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]

    def export(self, path: str):
        cfg = json.dumps(dataclasses.asdict(self.cfg))
        meta = {"nasa_world_train_config": cfg, "step": str(self.step),
                "command": "python -m nasa_core.world_model.train " + " ".join(sys.argv[1:])}
        if self.cfg.arch == "flux":
            meta.update(self.flux_world.metadata(prediction=self.cfg.prediction))
        if self.latent_std is not None:
            meta["latent_std"] = json.dumps(self.latent_std)
        meta["world"] = self.cfg.world
        self.wm.save_world_checkpoint(path, self.ema_unet, self.ema_text, metadata=meta)

    def sample_grid(self, path: Path, steps: int = 20, cfg_scale: float = 3.0):
        """The fixed prompts, sampled with the EMA weights through ComfyUI's sampler."""
        from .sampling import sample_images, save_grid
        tmp = Path(self.cfg.out) / "_ema.safetensors"
        self.export(str(tmp))
        prompts = SAMPLE_PROMPTS_V2 if self.spec.has_quality else SAMPLE_PROMPTS
        images = sample_images(str(tmp), prompts, steps=steps, cfg=cfg_scale, seed=0)
        tmp.unlink()
        save_grid(images, path, columns=4)


def trim_log(path: Path, step: int):
    """Drop the rows of ``loss.csv`` past ``step``: a run killed after its last checkpoint logged steps that its resume
    runs again (and logs again)."""
    lines = path.read_text().splitlines(keepends=True)
    steps = [line.split(",", 1)[0] for line in lines[1:]]
    kept = lines[:1] + [line for line, n in zip(lines[1:], steps) if n.isdigit() and int(n) <= step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".csv.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def main(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(prog="python -m nasa_core.world_model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default, help=f"(default {f.default})",
                       **({"choices": ARCHS} if f.name == "arch" else {}))
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--export-every", type=int, default=0,
                   help="also write the EMA weights as OUT/ema_<step>.safetensors every N steps (a learning curve to "
                        "evaluate later; 9 MB each)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) at this step of the --steps-long schedule: a session's share of a "
                        "long run; --resume continues it exactly")
    p.add_argument("--export", default=None, help="write the EMA weights as a ComfyUI-loadable safetensors file and stop")
    p.add_argument("--fork-from", default=None,
                   help="start OUT from another run's checkpoint (its step, weights, EMA and optimiser) with another "
                        "--timesteps: an A/B at equal steps; recorded in OUT/config.json")
    args = p.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})

    from ..comfy_env import setup_comfy
    setup_comfy(import_pack=False)
    from tqdm import tqdm
    trainer = WorldTrainer(cfg)
    out = Path(cfg.out)
    ckpt = out / "checkpoint.pt"
    forked = None
    if args.fork_from and not ckpt.exists():  # once: afterwards OUT resumes from its own checkpoint
        trainer.load(Path(args.fork_from), may_differ=("timesteps", "channel_weight"))
        forked = {"path": args.fork_from, "step": trainer.step}
    elif args.resume or args.export or args.fork_from:
        if not ckpt.exists():
            raise SystemExit(f"no checkpoint at {ckpt} to resume from")
        trainer.load(ckpt)
    if args.export:
        trainer.export(args.export)
        print(f"exported step {trainer.step} EMA weights to {args.export}")
        return
    out.mkdir(parents=True, exist_ok=True)
    if forked is None and trainer.step > 0 and (out / "config.json").exists():  # a fork resumed: still a fork
        forked = json.loads((out / "config.json").read_text()).get("forked_from")
    (out / "config.json").write_text(json.dumps(dict(dataclasses.asdict(cfg), **({"forked_from": forked} if forked else {})),
                                                indent=2))
    log_path = out / "loss.csv"
    new_log = not log_path.exists() or trainer.step == 0
    if not new_log:
        trim_log(log_path, trainer.step)
    with open(log_path, "w" if new_log else "a", newline="") as f:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["step", "loss", "lr", "seconds"])
        bar = tqdm(total=cfg.steps, initial=trainer.step, desc=f"world {cfg.arch}", dynamic_ncols=True)
        t0 = time.time()
        stop = min(cfg.steps, args.stop_at) if args.stop_at else cfg.steps
        while trainer.step < stop:
            loss = trainer.train_step()
            writer.writerow([trainer.step, f"{loss:.5f}", f"{trainer.lr_at(trainer.step - 1):.2e}", f"{time.time() - t0:.1f}"])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if trainer.step % cfg.ckpt_every == 0 or trainer.step == stop:
                f.flush()
                trainer.save()
            if args.export_every and trainer.step % args.export_every == 0:
                trainer.export(str(out / f"ema_{trainer.step:06d}.safetensors"))
            if cfg.sample_every and trainer.step % cfg.sample_every == 0:
                trainer.sample_grid(out / f"samples_{trainer.step:06d}.png")
        bar.close()
    print(f"{'done' if trainer.step >= cfg.steps else 'stopped'} at step {trainer.step} of {cfg.steps}; checkpoint {ckpt}")


if __name__ == "__main__":
    main()
