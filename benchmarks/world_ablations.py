"""Small teacher ablations, evaluated alike: for each world checkpoint, samples of prompts naming every
attribute at a few step counts and schedulers (CFG 3), read by the pixel reader: per-attribute shares, all
attributes, the share read as clean, the quality score and the mean noise / edge-width measures. Seeds: the
tuning seed (100) by default, never the reporting seed (7000). docs/world_ablations.md records the runs.

    .venv/bin/python benchmarks/world_ablations.py --checkpoints runs/ablations/*.safetensors \
        models/nasa_world_teacher.safetensors --n 100 --steps 4 20 --out benchmarks/results/world_ablations
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
            out[sigma] = {"dc": float(err[:, dc].pow(2).mean().sqrt()), "ac": float(err[:, ~dc].pow(2).mean().sqrt()),
                          "pixel": float(pix.pow(2).mean().sqrt())}
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
    p.add_argument("--out", default=str(HERE / "results" / "world_ablations"))
    args = p.parse_args(argv)
    setup_comfy()
    import torch
    torch.set_num_threads(args.threads)
    import world_quality
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_metadata, load_world_checkpoint

    keys = [k for k in world.ATTRIBUTES if k != "quality"]
    rows, payload, denoise_rows = [], [], []
    for ck in args.checkpoints:
        spec = world.world_spec(args.world or world_quality.world_of(ck))
        meta = checkpoint_metadata(ck)
        loaded = load_world_checkpoint(ck)
        if args.denoise:
            den = denoise_errors(loaded, spec, args.seed)
            denoise_rows.append((Path(ck).stem, meta.get("step", "?"), den))
            payload.append({"checkpoint": ck, "denoise": den})
        runs = [(sm, sc, st) for sm in args.samplers for sc in args.schedulers for st in args.steps]
        for sampler, sched, steps in ([] if args.no_samples else runs):
            t0 = time.time()
            ev = world_quality.evaluate(loaded, args.n, steps, args.kappa, args.seed, spec=spec, scheduler=sched,
                                        sampler=sampler, progress=f"{Path(ck).stem} {steps} {sampler} {sched}")
            noise = [r["_noise"] for r in ev["reads"] if r.get("_noise") is not None]
            edge = [r["_edge"] for r in ev["reads"] if r.get("_edge") is not None]
            truths = world_quality.prompts_and_truths(args.n, args.seed, spec)[1]
            six = world.share(all(r.get(k) == t.get(k) for k in keys) for r, t in zip(ev["reads"], truths))
            rows.append((Path(ck).stem, meta.get("step", "?"), steps, f"{sampler} {sched}", ev, six,
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
        lines += ["", "One-call denoising error on 256 held-out images (their all-attribute captions): RMSE of the "
                  "predicted x0 in raw latent units, DC channels / AC channels, and pixel RMSE ([-1, 1] units), per "
                  "sigma of the model's latent space.", "",
                  "| checkpoint | trained steps | " + " | ".join(f"sigma {s_:g}" for s_ in sig) + " |",
                  "|" + " --- |" * (len(sig) + 2)]
        for name, tstep, den in denoise_rows:
            lines.append(f"| {name} | {tstep} | " + " | ".join(
                f"{den[s_]['dc']:.3f} / {den[s_]['ac']:.3f} / {den[s_]['pixel']:.3f}" for s_ in sig) + " |")
    write_report(args.out, "\n".join(lines), {"n": args.n, "seed": args.seed, "kappa": args.kappa, "rows": payload})


if __name__ == "__main__":
    main()
