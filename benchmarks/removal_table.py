"""The paper's Table 2 on the bundled world model: per prompt / negative pair and method, the share of images
that show the subject (a shape), are free of the negative's attribute, keep every attribute the positive
names, both (success), and read as clean; for none / CFG / NASA at 1, 4 and full steps. An image without a
shape is never free of the negative nor keeps the positive. Every share with its Wilson 95% interval.

    .venv/bin/python benchmarks/removal_table.py --n 100                 # the README's figures
    .venv/bin/python benchmarks/removal_table.py --n 8 --steps 1 --pairs 1   # a quick look
    .venv/bin/python benchmarks/removal_table.py --checkpoint models/nasa_world_flux.safetensors \
        --steps 1 4 --alphas 0.25 0.5 1 2 --bounds none 1    # the joint-attention world model, across scales

What each method means here (the same model, sampled through comfy.sample as KSampler does):
  none  no negative: cfg 1 at 1 and 4 steps (as one-/few-step models run), cfg KAPPA with an empty
        negative at the full step count (as a multi-step teacher runs)
  CFG   the negative prompt as CFG's negative, cfg KAPPA (what users try on one-step models); one cell
        per --cfg-kappas value
  NASA  as none, plus Apply NASA Model Patch with the negative prompt at alpha (one cell per --alphas
        value and per --bounds value; --blocks, --start-percent, --end-percent, --negative-stream and
        --reference-prompt go to apply_nasa as the Advanced node sends them)
The checkpoint's architecture (UNet or joint-attention Flux) and world (v1 or v2; the pairs differ: world v2
has eight, covering colour, shape, background, size, position, count and quality, each negative the prior's
dominant value) come from the file. Images are read by the world's pixel-level reader
(nasa_core.world.read_attributes). Seeds: cell images use sampling seed --seed (default 7000, the reporting
seed, apart from the tuning seed 100), one batch of N per cell.
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

# (positive prompt, negative prompt) per world: nasa_core/world/spec.py says why these (pure constants, read
# before ComfyUI is set up)
sys.path.insert(0, str(ROOT))
from nasa_core.world.spec import BENCHMARK_PAIRS as WORLD_PAIRS  # noqa: E402
from nasa_core.world.spec import QUALITY_NEGATIVE, V1_PAIRS, V2_PAIRS  # noqa: E402,F401
PAIRS = V1_PAIRS
SHARES = ("shows_subject", "free_of_negative", "keeps_positive", "success", "clean")
HEADS = ("shows subject", "free of the negative", "keeps the positive", "success", "clean")


def run(args):
    setup_comfy()
    import torch
    from tqdm import tqdm

    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model import model as wm
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents, save_grid

    torch.set_num_threads(args.threads)
    model, clip, _ = wm.load_world_checkpoint(args.checkpoint)
    meta = wm.checkpoint_metadata(args.checkpoint)
    arch = meta.get("arch", "unet")
    spec = world.world_spec(args.world or meta.get("world", "v1"))
    empty = encode(clip, "")
    reference = None if args.reference_prompt is None else encode(clip, args.reference_prompt)[0][0]
    pairs = WORLD_PAIRS[spec.name][: args.pairs]
    alphas = args.alphas or [args.alpha]
    bounds = [None if b.lower() == "none" else float(b) for b in args.bounds] if args.bounds else [None]
    nasa_options = {k: v for k, v in (("start_percent", args.start_percent), ("end_percent", args.end_percent),
                                      ("blocks", args.blocks), ("negative_stream", args.negative_stream))
                    if v is not None}
    kappas = args.cfg_kappas or [args.kappa]
    methods = ([("none", None, None)] + [("CFG", k, None) for k in kappas] +
               [("NASA", a, b) for b in bounds for a in alphas])
    cells = []
    grid_images = []
    jobs = [(p, n, s, m) for p, n in pairs for s in args.steps for m in methods]
    t0 = time.time()
    for pos_text, neg_text, steps, (method, scale, bound) in tqdm(jobs, desc="removal table"):
        alpha = scale if method == "NASA" else None  # a method's scale: NASA's alpha, CFG's kappa
        pos, neg = encode(clip, pos_text), encode(clip, neg_text)
        full = steps >= args.full_steps
        base_cfg = args.kappa if full else 1.0
        if method == "none":
            m, negative, cfg = model, empty, base_cfg
        elif method == "CFG":
            m, negative, cfg = model, neg, scale
        else:
            extra = dict(nasa_options, **({"bound": bound} if bound is not None else {}))
            if reference is not None:
                extra["reference"] = reference
            m, negative, cfg = apply_nasa(model, neg[0][0], alpha, **extra), empty, base_cfg
        latents = sample_latents(m, pos, negative, steps, cfg, args.seed, args.n)
        images = images_from_latents(latents)
        reads = world.read_attributes(images, spec)
        metrics = world.cell_metrics(reads, world.attributes_of_prompt(pos_text, spec),
                                     world.attributes_of_prompt(neg_text, spec))
        label = method
        if method == "CFG" and len(kappas) > 1:
            label = f"CFG {scale:g}"
        if method == "NASA" and (len(alphas) > 1 or len(bounds) > 1):
            label = f"NASA {alpha:g}" + (f" bound {bound:g}" if bound is not None else "")
        cells.append({"positive": pos_text, "negative": neg_text, "steps": steps, "method": label, "cfg": cfg,
                      "alpha": alpha, "bound": bound, "n": len(reads),
                      "free_of_negative": metrics["free_of_negative"].p, "keeps_positive": metrics["keeps_positive"].p,
                      "metrics": world.metrics.as_json(metrics), "_metrics": metrics})
        grid_images.append(images[: args.grid_per_cell])
    seconds = time.time() - t0

    # aggregate per (steps, method): pairs pooled
    summary = {}
    for c in cells:
        summary.setdefault((c["steps"], c["method"]), []).append(c.pop("_metrics"))
    summary = {k: world.pooled(v) for k, v in summary.items()}
    scales = f"alpha {alphas[0]}" if len(alphas) == 1 else "alpha " + ", ".join(f"{a:g}" for a in alphas)
    knobs = "".join(f", {k.replace('_', ' ')} {sorted(v) if k == 'blocks' else v}" for k, v in nasa_options.items())
    if bounds != [None]:
        knobs += ", bound " + " / ".join("none" if b is None else f"{b:g}" for b in bounds)
    if args.reference_prompt is not None:
        knobs += f', the negative measured from the prompt "{args.reference_prompt}" (reference)'
    lines = [f"Removal of the negative's attribute on the world model `{Path(args.checkpoint).name}`"
             f"{' (joint attention, Flux classes)' if arch == 'flux' else ''} (world {spec.name}), "
             f"{args.n} images per prompt pair and cell, {len(pairs)} pairs pooled, {scales}{knobs}, CFG kappa "
             f"{' / '.join(f'{k:g}' for k in kappas)}, sampling seed {args.seed}. A share counts an image only when it shows a shape; "
             "95% Wilson intervals in brackets.",
             "", "| steps | method | " + " | ".join(HEADS) + " | quality score |",
             "|" + " --- |" * (len(HEADS) + 3)]
    for (steps, method), m in summary.items():
        lines.append(f"| {steps} | {method} | " + " | ".join(m[k].fmt() for k in SHARES) +
                     f" | {m['quality_score'].fmt()} |")
    lines += ["", "| positive | negative | steps | method | subject | free | keeps | success | clean |",
              "|" + " --- |" * 9]
    for c in cells:
        mm = c["metrics"]
        lines.append(f"| {c['positive']} | {c['negative']} | {c['steps']} | {c['method']} | " +
                     " | ".join(f"{100 * mm[k]['p']:.0f}%" for k in SHARES) + " |")
    out = write_report(args.out, "\n".join(lines), {"checkpoint": str(args.checkpoint), "arch": arch,
                                                    "world": spec.name,
                                                    "alpha": args.alpha, "alphas": alphas, "bounds": bounds,
                                                    "nasa_options": {k: sorted(v) if k == "blocks" else v
                                                                     for k, v in nasa_options.items()},
                                                    "reference_prompt": args.reference_prompt,
                                                    "kappa": args.kappa, "cfg_kappas": kappas, "n": args.n, "seed": args.seed,
                                                    "seconds": seconds, "cells": cells,
                                                    "summary": [{"steps": s_, "method": m_,
                                                                 **world.metrics.as_json(v)}
                                                                for (s_, m_), v in summary.items()]})
    save_grid(torch.cat(grid_images), out.with_name(out.stem + "_grid.png"), columns=args.grid_per_cell * len(methods))
    plot(summary, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.md')}, .json, .png and {out.stem}_grid.png ({seconds:.0f} s)")


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
    fig, ax = plt.subplots(figsize=(max(6, len(keys) * 1.1), 3.8))
    xs = list(range(len(keys)))
    for j, (key, head) in enumerate((("shows_subject", "shows a shape"), ("free_of_negative", "free of the negative"),
                                     ("keeps_positive", "keeps the positive"), ("success", "both"))):
        vals = [100 * summary[k][key].p for k in keys]
        err = [[100 * (summary[k][key].p - summary[k][key].interval[0]) for k in keys],
               [100 * (summary[k][key].interval[1] - summary[k][key].p) for k in keys]]
        ax.bar([x - 0.3 + 0.2 * j for x in xs], vals, 0.2, yerr=err, capsize=2, label=head)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("% of images (95% CI)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.15))
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
    p.add_argument("--reference-prompt", default=None,
                   help='NASA measures the negative from this prompt (apply_nasa reference, the Advanced node\'s '
                        'nasa_reference; "" = the empty prompt); default: none, the paper\'s equation')
    p.add_argument("--kappa", type=float, default=3.0, help="CFG scale (also 'none' at the full step count)")
    p.add_argument("--cfg-kappas", type=float, nargs="+", default=None,
                   help="one CFG cell per scale, e.g. 1.5 3 (default: --kappa)")
    p.add_argument("--pairs", type=int, default=len(V2_PAIRS), help="use the first N prompt pairs")
    p.add_argument("--seed", type=int, default=7000, help="sampling seed (7000: reporting; 100: tuning)")
    p.add_argument("--world", default=None, help="v1 or v2 (default: the checkpoint's metadata; none: v1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--grid-per-cell", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "removal_teacher"))
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
