"""The paper's Table 2 on the bundled world model: the share of images free of the negative's attribute,
and the share still showing the positive prompt's attributes, for none / CFG / NASA at 1, 4 and full steps.

    .venv/bin/python benchmarks/removal_table.py --n 100                 # the README's figures
    .venv/bin/python benchmarks/removal_table.py --n 8 --steps 1 --pairs 1   # a quick look
    .venv/bin/python benchmarks/removal_table.py --checkpoint models/nasa_world_flux.safetensors \
        --steps 1 4 --alphas 0.25 0.5 1 2 --bounds none 1    # the joint-attention world model, across scales

What each method means here (the same model, sampled through comfy.sample as KSampler does):
  none  no negative: cfg 1 at 1 and 4 steps (as one-/few-step models run), cfg KAPPA with an empty
        negative at the full step count (as a multi-step teacher runs)
  CFG   the negative prompt as CFG's negative, cfg KAPPA (what users try on one-step models)
  NASA  as none, plus Apply NASA Model Patch with the negative prompt at alpha (one cell per --alphas
        value and per --bounds value; --blocks, --start-percent, --end-percent, --negative-stream go to
        apply_nasa as the Advanced node sends them)
The checkpoint's architecture (UNet or joint-attention Flux) comes from the file.
Images are read by the world's pixel-level attribute reader (nasa_core.world.read_attributes).
Writes a markdown table, a JSON file, a bar plot and a grid of the first images of each cell.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402

PAIRS = [  # (positive prompt, negative prompt)
    ("a shape", "red"),
    ("a shape on a white background", "circle"),
    ("a large shape", "blue"),
    ("a square", "black background"),
    ("a small shape", "on the left"),
    ("two shapes", "yellow"),
]


def run(args):
    setup_comfy()
    import torch
    from tqdm import tqdm

    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model import model as wm
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents, save_grid

    model, clip, _ = wm.load_world_checkpoint(args.checkpoint)
    arch = wm.checkpoint_metadata(args.checkpoint).get("arch", "unet")
    empty = encode(clip, "")
    pairs = PAIRS[: args.pairs]
    alphas = args.alphas or [args.alpha]
    bounds = [None if b.lower() == "none" else float(b) for b in args.bounds] if args.bounds else [None]
    nasa_options = {k: v for k, v in (("start_percent", args.start_percent), ("end_percent", args.end_percent),
                                      ("blocks", args.blocks), ("negative_stream", args.negative_stream))
                    if v is not None}
    methods = [("none", None, None), ("CFG", None, None)] + [("NASA", a, b) for b in bounds for a in alphas]
    cells = []
    grid_images = []
    jobs = [(p, n, s, m) for p, n in pairs for s in args.steps for m in methods]
    t0 = time.time()
    for pos_text, neg_text, steps, (method, alpha, bound) in tqdm(jobs, desc="removal table"):
        pos, neg = encode(clip, pos_text), encode(clip, neg_text)
        full = steps >= args.full_steps
        base_cfg = args.kappa if full else 1.0
        if method == "none":
            m, negative, cfg = model, empty, base_cfg
        elif method == "CFG":
            m, negative, cfg = model, neg, args.kappa
        else:
            extra = dict(nasa_options, **({"bound": bound} if bound is not None else {}))
            m, negative, cfg = apply_nasa(model, neg[0][0], alpha, **extra), empty, base_cfg
        latents = sample_latents(m, pos, negative, steps, cfg, args.seed, args.n)
        images = images_from_latents(latents)
        reads = world.read_attributes(images)
        unwanted = world.attributes_of_prompt(neg_text)
        wanted = world.attributes_of_prompt(pos_text)
        free = sum(not world.shows(r, unwanted) for r in reads) / len(reads)
        keeps = sum(world.matches(r, wanted) for r in reads) / len(reads)
        label = method
        if method == "NASA" and (len(alphas) > 1 or len(bounds) > 1):
            label = f"NASA {alpha:g}" + (f" bound {bound:g}" if bound is not None else "")
        cells.append({"positive": pos_text, "negative": neg_text, "steps": steps, "method": label, "cfg": cfg,
                      "alpha": alpha if method == "NASA" else None, "bound": bound, "n": len(reads),
                      "free_of_negative": free, "keeps_positive": keeps})
        grid_images.append(images[: args.grid_per_cell])
    seconds = time.time() - t0

    # aggregate per (steps, method)
    summary = {}
    for c in cells:
        key = (c["steps"], c["method"])
        s = summary.setdefault(key, {"free": [], "keeps": []})
        s["free"].append(c["free_of_negative"])
        s["keeps"].append(c["keeps_positive"])
    scales = f"alpha {alphas[0]}" if len(alphas) == 1 else "alpha " + ", ".join(f"{a:g}" for a in alphas)
    knobs = "".join(f", {k.replace('_', ' ')} {sorted(v) if k == 'blocks' else v}" for k, v in nasa_options.items())
    if bounds != [None]:
        knobs += ", bound " + " / ".join("none" if b is None else f"{b:g}" for b in bounds)
    lines = [f"Removal of the negative's attribute on the world model `{Path(args.checkpoint).name}`"
             f"{' (joint attention, Flux classes)' if arch == 'flux' else ''}, "
             f"{args.n} images per prompt pair and cell, {len(pairs)} pairs, {scales}{knobs}, CFG kappa {args.kappa}.",
             "", "| steps | method | free of the negative | keeps the positive |", "| --- | --- | --- | --- |"]
    for (steps, method), s in summary.items():
        lines.append(f"| {steps} | {method} | {100 * sum(s['free']) / len(s['free']):.0f}% | "
                     f"{100 * sum(s['keeps']) / len(s['keeps']):.0f}% |")
    lines += ["", "| positive | negative | steps | method | free | keeps |", "| --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        lines.append(f"| {c['positive']} | {c['negative']} | {c['steps']} | {c['method']} | "
                     f"{100 * c['free_of_negative']:.0f}% | {100 * c['keeps_positive']:.0f}% |")
    out = write_report(args.out, "\n".join(lines), {"checkpoint": str(args.checkpoint), "arch": arch,
                                                    "alpha": args.alpha, "alphas": alphas, "bounds": bounds,
                                                    "nasa_options": {k: sorted(v) if k == "blocks" else v
                                                                     for k, v in nasa_options.items()},
                                                    "kappa": args.kappa, "n": args.n, "seed": args.seed,
                                                    "seconds": seconds, "cells": cells})
    save_grid(torch.cat(grid_images), out.with_name(out.name + "_grid.png"), columns=args.grid_per_cell * len(methods))
    plot(summary, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.md')}, .json, .png and {out.name}_grid.png ({seconds:.0f} s)")


def plot(summary, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    keys = list(summary)
    labels = [f"{m}\n{s} step{'s' if s > 1 else ''}" for s, m in keys]
    free = [100 * sum(summary[k]["free"]) / len(summary[k]["free"]) for k in keys]
    keeps = [100 * sum(summary[k]["keeps"]) / len(summary[k]["keeps"]) for k in keys]
    fig, ax = plt.subplots(figsize=(max(6, len(keys) * 0.9), 3.6))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], free, 0.4, label="free of the negative")
    ax.bar([x + 0.2 for x in xs], keeps, 0.4, label="keeps the positive")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("% of images")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "nasa_world_teacher.safetensors"))
    p.add_argument("--n", type=int, default=100, help="images per prompt pair and cell")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4, 20])
    p.add_argument("--full-steps", type=int, default=20, help="step counts from here on use CFG for 'none'")
    p.add_argument("--alpha", type=float, default=0.5, help="NASA strength")
    p.add_argument("--alphas", type=float, nargs="+", default=None, help="several NASA strengths (overrides --alpha)")
    p.add_argument("--bounds", nargs="+", default=None,
                   help="NASA cells per bound on the subtracted term ('none' = off), for adapters that take one")
    p.add_argument("--blocks", nargs="+", default=None, help="NASA blocks, e.g. double single (default: the adapter's)")
    p.add_argument("--start-percent", type=float, default=None, help="NASA sigma window start")
    p.add_argument("--end-percent", type=float, default=None, help="NASA sigma window end")
    p.add_argument("--negative-stream", default=None, help="joint-attention adapters: how the negative text advances")
    p.add_argument("--kappa", type=float, default=3.0, help="CFG scale")
    p.add_argument("--pairs", type=int, default=len(PAIRS), help="use the first N prompt pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid-per-cell", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "removal_teacher"))
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
