"""Small teacher ablations, evaluated alike: for each world checkpoint, samples of prompts naming every
attribute at a few step counts and schedulers (CFG 3), read by the pixel reader: per-attribute shares, all
attributes, the share read as clean, the quality score and the mean noise / edge-width measures. Seeds: the
tuning seed (100) by default, never the reporting seed (7000). docs/world_ablations.md records the runs.

    .venv/bin/python benchmarks/world_ablations.py --checkpoints runs/ablations/*.safetensors \
        models/nasa_world_teacher.safetensors --n 100 --steps 4 20 --out benchmarks/results/world_ablations

A checkpoint may also be a trainer's ``checkpoint.pt`` (its live weights, not the EMA: a short fork's EMA is
mostly the weights it forked from). ``--denoise`` adds the one-call denoising error per sigma; ``--linear-bound``
adds what the best linear 3x3 filter (least squares, fitted per sigma on the world's own images) leaves of the
noise, the floor a denoiser that has learnt anything about flat shapes must beat; ``--grid`` writes 20-step
samples of four fixed prompts, one labelled row per checkpoint.
"""
import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402


def denoise_errors(loaded, spec, seed: int, n: int = 256, sigmas=(0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)):
    """The one-call denoising error of a world model on held-out world images (their all-attribute captions):
    for each sigma (in the model's latent space), RMSE of the predicted x0 against the image's latent, in raw
    latent units (the VAE's), over the DC channels (the block means) and over the AC channels (edges), and the
    pixel RMSE of the decoded prediction against the decoded image."""
    import torch
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model import model as wm
    from comfyui_nasa.nasa_core.world_model.sampling import encode
    model, clip, _ = loaded
    base = model.model
    fmt = base.latent_format
    attrs = world.sample_attributes(torch.Generator().manual_seed(seed), n, spec)
    images = world.render(attrs, spec)
    raw = wm.to_latent(images)
    x0 = fmt.process_in(raw)
    conds = [encode(clip, world.caption_all(a, spec))[0][0] for a in attrs]
    width = max(c.shape[1] for c in conds)
    context = torch.cat([torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[1])) for c in conds])
    dc = torch.zeros(wm.LATENT_CHANNELS, dtype=torch.bool)
    dc[[0, 16, 32]] = True  # channel c * 16 + 0: each colour channel's DC coefficient
    clean = torch.tensor([a.get("quality", "clean") == "clean" for a in attrs])
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    with torch.no_grad():
        for sigma in sigmas:
            noise = torch.randn(x0.shape, generator=g)
            s = torch.full((n,), float(sigma))
            xt = x0 + sigma * noise
            pred = torch.cat([base.apply_model(xt[i:i + 64], s[i:i + 64], c_crossattn=context[i:i + 64])
                              for i in range(0, n, 64)])
            err = fmt.process_out(pred) - raw
            pix = wm.from_latent(fmt.process_out(pred)).clamp(-1, 1) - wm.from_latent(raw).clamp(-1, 1)
            left = (pred - x0).pow(2).mean(dim=(0, 2, 3)).sqrt() / sigma  # per channel, in the model's space
            # clean images only: a "noisy" image's own noise is part of its x0, and no denoiser can tell it apart
            left_clean = (pred - x0)[clean].pow(2).mean(dim=(0, 2, 3)).sqrt() / sigma
            out[sigma] = {"dc": float(err[:, dc].pow(2).mean().sqrt()), "ac": float(err[:, ~dc].pow(2).mean().sqrt()),
                          "pixel": float(pix.pow(2).mean().sqrt()),
                          "left_dc": float(left[dc].mean()), "left_ac": float(left[~dc].mean()),
                          "left_clean_dc": float(left_clean[dc].mean()), "left_clean_ac": float(left_clean[~dc].mean())}
    return out


GRID_PROMPTS = ["a large blue square on a white background, high quality", "two yellow triangles, high quality",
                "a red circle on a black background, high quality", "a small green triangle on the left, high quality"]
GRID_LABELS = ["large blue square, white bg", "two yellow triangles", "red circle, black bg", "small green triangle, left"]


def load_any(ck: str):
    """((MODEL, CLIP, VAE), metadata) of an exported world checkpoint, or of a trainer's checkpoint.pt (its live
    weights, exported to a temporary file; the metadata's step then says "(live)")."""
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_metadata, load_world_checkpoint
    if not ck.endswith(".pt"):  # files from before world v2 name no world: v1
        return load_world_checkpoint(ck), {"world": "v1", **checkpoint_metadata(ck)}
    import dataclasses
    import tempfile
    import torch
    from comfyui_nasa.nasa_core.world_model.train import TrainConfig, WorldTrainer
    config = torch.load(ck, map_location="cpu", weights_only=True)["config"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = WorldTrainer(TrainConfig(**dict({k: v for k, v in config.items() if k in names}, out=tmp)))
        trainer.load(Path(ck))
        trainer.ema_unet, trainer.ema_text = trainer.unet.state_dict(), trainer.encoder.state_dict()
        live = str(Path(tmp) / "live.safetensors")
        trainer.export(live)
        meta = checkpoint_metadata(live)
        return load_world_checkpoint(live), dict(meta, step=f"{meta['step']} (live)")


def linear_bound(spec, latent_std, n: int = 1024, seed: int = 11, sigmas=(0.05, 0.1, 0.2, 0.5)):
    """What the best linear 3x3 filter leaves of the noise, per sigma: least squares from each position's 3x3
    neighbourhood (all channels) to its clean latent, fitted on half of ``n`` world images and measured on the
    other half, in the model's latent space (``latent_std``: the per-channel scale, or None for raw); RMSE / sigma
    over the DC and the AC channels."""
    import torch
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model import model as wm
    scale = torch.ones(1, wm.LATENT_CHANNELS, 1, 1) if latent_std is None else \
        torch.tensor(latent_std).view(1, -1, 1, 1)
    x0 = (wm.to_latent(world.sample_batch(seed, n, spec)[0]) / scale).double()
    dc = torch.zeros(wm.LATENT_CHANNELS, dtype=torch.bool)
    dc[[0, 16, 32]] = True
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    for sigma in sigmas:
        x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        feats = torch.nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 9 * wm.LATENT_CHANNELS)
        feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
        target = x0.flatten(2).transpose(1, 2).reshape(-1, wm.LATENT_CHANNELS)
        half = len(feats) // 2
        w = torch.linalg.lstsq(feats[:half], target[:half]).solution
        err = (feats[half:] @ w - target[half:]).pow(2).mean(0).sqrt() / sigma
        out[sigma] = {"dc": float(err[dc].mean()), "ac": float(err[~dc].mean())}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 20])
    p.add_argument("--schedulers", nargs="+", default=["normal"])
    p.add_argument("--samplers", nargs="+", default=["euler"])
    p.add_argument("--kappa", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--world", default=None, help="v1 or v2 (default: each checkpoint's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--denoise", action="store_true", help="also the one-call denoising errors per sigma")
    p.add_argument("--no-samples", action="store_true", help="only the denoising errors")
    p.add_argument("--linear-bound", action="store_true",
                   help="also the best linear 3x3 filter's share of the noise left, raw and per-channel scaled")
    p.add_argument("--bound-n", type=int, default=1024, help="world images the linear filter is fitted and measured on")
    p.add_argument("--grid", default=None, help="write 20-step CFG-3 samples of four prompts here (PNG)")
    p.add_argument("--out", default=str(HERE / "results" / "world_ablations"))
    args = p.parse_args(argv)
    setup_comfy()
    import torch
    torch.set_num_threads(args.threads)
    import world_quality
    from comfyui_nasa.nasa_core import world

    keys = [k for k in world.ATTRIBUTES if k != "quality"]
    rows, payload, denoise_rows, grid_rows = [], [], [], []
    for ck in args.checkpoints:
        loaded, meta = load_any(ck)
        spec = world.world_spec(args.world or meta["world"])
        if args.grid:
            from comfyui_nasa.nasa_core.world_model.sampling import sample_images
            grid_rows.append(sample_images(loaded, GRID_PROMPTS, steps=20, cfg=args.kappa, seed=0))
        if args.denoise:
            den = denoise_errors(loaded, spec, args.seed)
            denoise_rows.append((Path(ck).parent.name + "/" + Path(ck).stem, meta.get("step", "?"), den))
            payload.append({"checkpoint": ck, "denoise": den})
        runs = [(sm, sc, st) for sm in args.samplers for sc in args.schedulers for st in args.steps]
        for sampler, sched, steps in ([] if args.no_samples else runs):
            t0 = time.time()
            ev = world_quality.evaluate(loaded, args.n, steps, args.kappa, args.seed, spec=spec, scheduler=sched,
                                        sampler=sampler, progress=f"{Path(ck).stem} {steps} {sampler} {sched}")
            noise = [r["_noise"] for r in ev["reads"] if r.get("_noise") is not None]
            edge = [r["_edge"] for r in ev["reads"] if r.get("_edge") is not None]
            six = world.share(all(r.get(k) == t.get(k) for k in keys) for r, t in zip(ev["reads"], ev["truths"]))
            rows.append((Path(ck).parent.name + "/" + Path(ck).stem, meta.get("step", "?"), steps, f"{sampler} {sched}", ev, six,
                         sum(noise) / max(1, len(noise)), sum(edge) / max(1, len(edge)), time.time() - t0))
            payload.append({"checkpoint": ck, "train_step": meta.get("step"), "steps": steps, "scheduler": sched,
                            "sampler": sampler, **world_quality.as_json(ev)})
    head = ["checkpoint", "trained steps", "steps", "sampler, scheduler"] + keys + ["all six", "subject", "clean",
                                                                                  "noise", "edge px"]
    lines = [f"World-model ablations: {args.n} prompts naming every attribute, CFG {args.kappa:g}, seeds "
             f"{args.seed}..{args.seed + args.n - 1}; 95% Wilson intervals on 'all six'.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, tstep, steps, sched, ev, six, noise, edge, secs in rows:
        cells = [f"{100 * ev['shares'][k].p:.0f}%" for k in keys]
        lines.append(f"| {name} | {tstep} | {steps} | {sched} | " + " | ".join(cells) +
                     f" | {six.fmt()} | {100 * ev['subject'].p:.0f}% | {100 * ev['clean'].p:.0f}% | {noise:.3f} | "
                     f"{edge:.2f} |")
    if denoise_rows:
        sig = list(denoise_rows[0][2])
        def per_sigma_table(caption, cell):
            lines.extend(["", caption, "", "| checkpoint | trained steps | " +
                          " | ".join(f"sigma {s_:g}" for s_ in sig) + " |", "|" + " --- |" * (len(sig) + 2)])
            lines.extend(f"| {name} | {tstep} | " + " | ".join(cell(den[s_]) for s_ in sig) + " |"
                         for name, tstep, den in denoise_rows)

        per_sigma_table("One-call denoising error on 256 held-out images (their all-attribute captions): RMSE of the "
                        "predicted x0 in raw latent units, DC channels / AC channels, and pixel RMSE ([-1, 1] units), "
                        "per sigma of the model's latent space.",
                        lambda d: f"{d['dc']:.3f} / {d['ac']:.3f} / {d['pixel']:.3f}")
        per_sigma_table("Share of the added noise left in the model's own latent space (RMSE of the predicted x0 / "
                        "sigma; 1 = nothing removed), DC / AC channels, over all images and (in brackets) over the clean "
                        "ones only (a 'noisy' image's own noise is part of its x0):",
                        lambda d: f"{d['left_dc']:.2f} / {d['left_ac']:.2f} ({d['left_clean_dc']:.2f} / "
                                  f"{d['left_clean_ac']:.2f})")
    if args.linear_bound:
        from comfyui_nasa.nasa_core.world_model.train import latent_channel_std
        lines += ["", f"The best linear 3x3 filter (least squares on {args.bound_n} world images, seed 11, half fitted, half "
                  "measured): share of the noise left, DC / AC channels:", "",
                  "| world | latent | " + " | ".join(f"sigma {s_:g}" for s_ in (0.05, 0.1, 0.2, 0.5)) + " |",
                  "|" + " --- |" * 6]
        for wname in ("v1", "v2"):
            spec = world.world_spec(wname)
            for label, std in (("raw", None), ("per-channel scale", latent_channel_std(spec))):
                bound = linear_bound(spec, std, n=args.bound_n)
                payload.append({"linear_bound": {"world": wname, "latent": label, **{str(k): v for k, v in bound.items()}}})
                lines.append(f"| {wname} | {label} | " + " | ".join(
                    f"{v['dc']:.2f} / {v['ac']:.2f}" for v in bound.values()) + " |")
    if args.grid:
        from comfyui_nasa.nasa_core.world_model.sampling import save_labelled_grid
        labels = [f"{Path(ck).parent.name}/\n{Path(ck).name}" for ck in args.checkpoints]
        save_labelled_grid([[row[i:i + 1] for i in range(len(GRID_PROMPTS))] for row in grid_rows], labels,
                           GRID_LABELS, args.grid, scale=4,
                           title=f"20 steps, euler normal, CFG {args.kappa:g}, seed 0")
    write_report(args.out, "\n".join(lines), {"n": args.n, "seed": args.seed, "kappa": args.kappa, "rows": payload})


if __name__ == "__main__":
    main()
