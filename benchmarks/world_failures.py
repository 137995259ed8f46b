"""Where a world model's samples go wrong: the samples of ``world_ablations.py`` (``world_quality.evaluate``: the
same prompts naming every attribute, the same seeds, one image each), with each wrong attribute tallied as
asked -> read, and a labelled grid of the failures so a person can tell a model's mistake from the reader's.

    .venv/bin/python benchmarks/world_failures.py --checkpoint runs/teacher_v2_mixed/ema_020000.safetensors \
        --n 100 --steps 20 --out benchmarks/results/world_failures_unet

Writes OUT.md / OUT.json (the tally: per attribute, how often it is wrong and what the reader saw instead) and
OUT_grid.png (the first --max failures: prompt, what was read wrong, the sample). Seeds: the tuning seed 100 by
default, as world_ablations.py.
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402

SIX = ("shape", "colour", "background", "size", "position", "count")


def wrong_attributes(read: dict, truth: dict, keys=SIX):
    """{attribute: (asked, read)} for each attribute of ``keys`` the reader saw otherwise."""
    return {k: (truth.get(k), read.get(k)) for k in keys if read.get(k) != truth.get(k)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--kappa", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--max", type=int, default=24, help="failures drawn in the grid")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "world_failures"))
    args = p.parse_args(argv)
    setup_comfy()
    import torch
    torch.set_num_threads(args.threads)
    import world_quality
    from world_ablations import load_any
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model.sampling import save_labelled_grid

    loaded, meta = load_any(args.checkpoint)
    spec = world.world_spec(meta["world"])
    ev = world_quality.evaluate(loaded, args.n, args.steps, args.kappa, args.seed, spec=spec, progress="samples")
    failures, tally, confusions, samples = [], Counter(), Counter(), []
    for prompt, truth, read, image in zip(ev["prompts"], ev["truths"], ev["reads"], ev["images"]):
        wrong = wrong_attributes(read, truth)
        tally.update(wrong.keys())
        confusions.update(f"{k}: {a} -> {r}" for k, (a, r) in wrong.items())
        samples.append({"prompt": prompt, "quality": truth.get("quality"), "background": truth.get("background"),
                        "wrong": {k: list(v) for k, v in wrong.items()}})
        if wrong:
            failures.append((prompt, wrong, image))
    n_fail = len(failures)
    lines = [f"Failures of `{Path(args.checkpoint).name}` (world {spec.name}): {args.n} prompts naming every "
             f"attribute, {args.steps} steps, CFG {args.kappa:g}, seeds {args.seed}..{args.seed + args.n - 1}. "
             f"{n_fail} of {args.n} samples have at least one of the six attributes read wrong.", "",
             "| attribute | wrong | share of samples |", "| --- | --- | --- |"]
    lines += [f"| {k} | {tally[k]} | {world.share([True] * tally[k] + [False] * (args.n - tally[k])).fmt()} |"
              for k in SIX]
    # by the quality the prompt names: a degraded image ("noisy", "cut off") is harder to draw and to read
    lines += ["", "| prompt's quality | samples | any of the six wrong |", "| --- | --- | --- |"]
    for q in sorted({s_["quality"] for s_ in samples}, key=lambda q: (q != "clean", q)):
        group = [bool(s_["wrong"]) for s_ in samples if s_["quality"] == q]
        lines.append(f"| {q} | {len(group)} | {world.share(group).fmt()} |")
    # and by quality and background: pixel noise on a grey background survives the clamp to [-1, 1] whole
    lines += ["", "| prompt's quality | background | samples | any of the six wrong |", "| --- | --- | --- | --- |"]
    for q, b in sorted({(s_["quality"], s_["background"]) for s_ in samples}, key=lambda k: (k[0] != "clean", k)):
        group = [bool(s_["wrong"]) for s_ in samples if (s_["quality"], s_["background"]) == (q, b)]
        lines.append(f"| {q} | {b} | {len(group)} | {sum(group)} |")
    lines += ["", "| asked -> read | samples |", "| --- | --- |"]
    lines += [f"| {c} | {m} |" for c, m in confusions.most_common()]
    out = write_report(args.out, "\n".join(lines), {"checkpoint": args.checkpoint, "n": args.n, "steps": args.steps,
                                                    "kappa": args.kappa, "seed": args.seed, "failed": n_fail,
                                                    "wrong": dict(tally), "confusions": dict(confusions),
                                                    "samples": samples})
    shown = failures[: args.max]
    if shown:
        labels = [prompt.replace(" on a ", "\non a ", 1) + "\n" +
                  ", ".join(f"{k}: {r} (asked {a})" for k, (a, r) in wrong.items()) for prompt, wrong, _ in shown]
        save_labelled_grid([[img] for _, _, img in shown], labels, ["sample"], out.with_name(out.stem + "_grid.png"),
                           scale=2, title=f"{Path(args.checkpoint).name}: the first {len(shown)} of {n_fail} failures")


if __name__ == "__main__":
    main()
