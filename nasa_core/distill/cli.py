"""python -m nasa_core.distill: distil a multi-step teacher into a one-step student with NASA-T
(SwiftBrush v2's image-free variational score distillation, the negative prompt in the teacher's guidance
and NASA inside the student; section 5.3 of the paper).

  # the bundled UNet world model, on a CPU (its students in models/; the README has the FLUX-class ones)
  python -m nasa_core.distill --preset world_nasa_t --out runs/world_nasa_t
  python -m nasa_core.distill --preset world_sbv2   --out runs/world_sbv2 --steps 150
  # continue a stopped run, or write its student for ComfyUI
  python -m nasa_core.distill --out runs/world_nasa_t --resume
  python -m nasa_core.distill --out runs/world_nasa_t --export models/nasa_world_student_nasa_t.safetensors
  # the paper's settings (Table 6) on GPUs: one process per GPU with torchrun
  torchrun --nproc_per_node 4 -m nasa_core.distill --preset sd15 --teacher v1-5-pruned-emaonly.safetensors \\
      --prompts prompts.parquet --out runs/sd15_nasa_t

Precedence: the dataclass defaults < --preset < --config FILE.json < the options below. A run's settings are
saved as OUT/run.json; --resume reads them back (only where/how long/sampling options may change).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, get_origin, get_type_hints

from .config import (PRESETS, RESUMABLE_CHANGES, ConfigError, DistillConfig, config_from_dict, field_help,
                     load_config_file, preset)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nasa_core.distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run control")
    g.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset: " + ", ".join(sorted(PRESETS)))
    g.add_argument("--config", help="a JSON file of option: value (e.g. a saved run.json)")
    g.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt with OUT/run.json's settings")
    g.add_argument("--export", metavar="PATH", help="write the student of OUT/checkpoint.pt as a ComfyUI file and stop")
    g.add_argument("--print-config", action="store_true", help="print the resolved configuration and stop")
    hints = get_type_hints(DistillConfig)
    o = p.add_argument_group("options (every field of the run configuration)")
    for name, default, text in field_help():
        flag = "--" + name.replace("_", "-")
        kind = hints[name]
        help_text = f"{text} (default {default!r})"
        if kind is bool:
            o.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(kind) in (list, List):
            o.add_argument(flag, dest=name, nargs="*", default=None, help=help_text)
        else:
            o.add_argument(flag, dest=name, type=kind, default=None, help=help_text)
    return p


def resolve_config(args) -> DistillConfig:
    given = {k: v for k, v in vars(args).items() if k in get_type_hints(DistillConfig) and v is not None}
    out = Path(given.get("out") or DistillConfig.out)
    if args.resume or args.export:
        saved = out / "run.json"
        if not saved.is_file():
            raise ConfigError(f"no run at {out} (no run.json) to {'resume' if args.resume else 'export'}")
        cfg = load_config_file(str(saved))
        changed = {k: v for k, v in given.items() if getattr(cfg, k) != v and k not in RESUMABLE_CHANGES}
        if changed:
            raise ConfigError(f"--resume continues {saved} as it was; these options would change what is trained: "
                              f"{sorted(changed)} (only {sorted(RESUMABLE_CHANGES)} may change)")
        return config_from_dict(given, cfg).check()
    cfg = preset(args.preset) if args.preset else DistillConfig()
    if args.config:
        cfg = load_config_file(args.config, cfg)
    return config_from_dict(given, cfg).check()


def _distributed():
    """(rank, world size, device) under torchrun (gloo on CPU, NCCL on GPUs), else one process."""
    import torch
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return dist.get_rank(), world, torch.device("cuda", local)
    dist.init_process_group("gloo")
    return dist.get_rank(), world, torch.device("cpu")


def sample_grid(trainer, path: Path):
    """The fixed prompts and seeds, one step through ComfyUI's sampler: the student without NASA (top row)
    and with NASA on the sample negative (bottom row)."""
    import contextlib
    import torch
    import comfy.sample
    from ..adapters import apply_nasa
    from ..world_model.sampling import encode, save_grid
    cfg = trainer.cfg
    prompts = cfg.sample_prompts or [trainer.stream.prompt(i) for i in range(4)]
    negative_text = cfg.sample_negative or (trainer.stream.negatives[0] if trainer.stream.negatives else "")
    clip = trainer.teacher.clip
    model = trainer.student_model if trainer.student_lora is None else trainer.teacher.model
    state = trainer.student_lora.active() if trainer.student_lora is not None else contextlib.nullcontext()
    rows = [model]
    empty = encode(clip, "")
    if negative_text:
        reference = empty[0][0] if cfg.nasa_reference else None
        rows.append(apply_nasa(model, encode(clip, negative_text)[0][0], cfg.sample_alpha, reference=reference))
    size = trainer.latent_size()
    images = []
    with state, torch.no_grad():
        for m in rows:
            for i, text in enumerate(prompts):
                latent = torch.zeros(1, trainer.latent_channels, size, size)
                noise = comfy.sample.prepare_noise(latent, i)
                out = comfy.sample.sample(m, noise, 1, 1.0, "euler", "simple", encode(clip, text), empty, latent,
                                          disable_pbar=True, seed=i)
                images.append(_to_pixels(trainer, out))
    save_grid(torch.cat(images), path, columns=len(prompts), scale=2 if cfg.model_kind == "world" else 1)


def _to_pixels(trainer, latent):
    """[B, 3, H, W] in [-1, 1], decoded by the teacher's VAE (what VAE Decode does)."""
    vae = trainer.teacher.vae
    if vae is None:
        raise ConfigError("sample grids need a VAE: pass --vae, or --sample-every 0")
    img = vae.decode(latent)  # [B, H, W, 3] in [0, 1]
    return (img.movedim(-1, 1).float() * 2 - 1).cpu()


def main(argv: Optional[List[str]] = None):
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        raise SystemExit(f"nasa_core.distill: {e}")
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return
    rank, world, device = _distributed()
    from ..comfy_env import setup_comfy
    setup_comfy(cpu=None if device is None else device.type == "cpu", import_pack=False)
    from tqdm import tqdm
    from .trainer import CHECKPOINT, Distiller

    out = Path(cfg.out)
    command = "python -m nasa_core.distill " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        trainer = Distiller(cfg, rank=rank, world_size=world, device=device)
        if args.resume or args.export:
            trainer.load(out / CHECKPOINT)
    except ConfigError as e:
        raise SystemExit(f"nasa_core.distill: {e}")
    if args.export:
        if rank == 0:
            trainer.export(args.export, command)
            print(f"exported the student of step {trainer.step} to {args.export}")
        return
    main_process = rank == 0
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "run.json")
    log_path = out / "log.csv"
    fields = ["step", "vsd", "lora", "clip", "eps_gap", "grad_norm", "samples", "seconds"]
    fresh = trainer.step == 0 or not log_path.exists()
    log = open(log_path, "w" if fresh else "a", newline="") if main_process else None
    writer = csv.DictWriter(log, fieldnames=fields, extrasaction="ignore") if log else None
    if writer and fresh:
        writer.writeheader()
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="NASA-T" if cfg.nasa_t else "SBv2", dynamic_ncols=True,
               disable=not main_process)
    t0 = time.time()
    try:
        while trainer.step < cfg.steps:
            logs = trainer.train_step()
            bar.update(1)
            bar.set_postfix(vsd=f"{logs['vsd']:.2e}", lora=f"{logs['lora']:.3f}")
            if writer and trainer.step % cfg.log_every == 0:
                writer.writerow(dict(logs, step=trainer.step, samples=trainer.step * cfg.batch,
                                     seconds=f"{time.time() - t0:.1f}"))
                log.flush()
            if trainer.step % cfg.ckpt_every == 0 or trainer.step == cfg.steps:
                trainer.save()
            if main_process and cfg.sample_every and (trainer.step % cfg.sample_every == 0 or trainer.step == cfg.steps):
                sample_grid(trainer, out / f"samples_{trainer.step:06d}.png")
    except FloatingPointError as e:
        raise SystemExit(f"nasa_core.distill: {e}")
    finally:
        bar.close()
        if log:
            log.close()
    if main_process:
        trainer.export(str(out / "student.safetensors"), command)
        print(f"done at step {trainer.step}; checkpoint {out / CHECKPOINT}; student {out / 'student.safetensors'}")
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
