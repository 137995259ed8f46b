"""How well a world model draws what it is asked: prompts naming all six attributes of random world scenes,
sampled through comfy.sample, read back by the pixel-level reader; per-attribute and all-attribute accuracy.

    .venv/bin/python benchmarks/world_quality.py --n 200            # the README's figures
    .venv/bin/python benchmarks/world_quality.py --checkpoint models/nasa_world_student_nasa_t.safetensors \
        --steps 1 --kappa 1 --nasa-alpha 0.25                        # a one-step student with NASA-I

With --nasa-alpha, each prompt gets a negative naming a wrong colour and a wrong shape (the next ones in the
world's vocabulary: "a red circle ..." gets "green square"), applied by Apply NASA Model Patch.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402


def prompts_and_truths(n: int, seed: int):
    import torch
    from comfyui_nasa.nasa_core import world
    truths = [world.public(a) for a in world.sample_attributes(torch.Generator().manual_seed(seed), n)]
    return [world.caption_all(a) for a in truths], truths


def wrong_negative(truth: dict) -> str:
    """A wrong colour and a wrong shape for this scene: the next values in the world's vocabulary."""
    from comfyui_nasa.nasa_core import world
    colours, shapes = list(world.VOCAB["colour"]), list(world.VOCAB["shape"])
    colour = colours[(colours.index(truth["colour"]) + 1) % len(colours)]
    shape = shapes[(shapes.index(truth["shape"]) + 1) % len(shapes)]
    return f"{colour} {shape}"


def accuracy(loaded, n: int, steps: int, kappa: float, seed: int, nasa_alpha=None, progress: str = ""):
    """Attribute accuracy of a loaded (MODEL, CLIP, VAE) world model on ``n`` all-attribute prompts."""
    from tqdm import tqdm
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents
    model, clip, _ = loaded
    empty = encode(clip, "")
    prompts, truths = prompts_and_truths(n, seed)
    reads = []
    for i, (prompt, truth) in enumerate(tqdm(list(zip(prompts, truths)), desc=progress or f"{steps} steps")):
        m = model
        if nasa_alpha:
            m = apply_nasa(model, encode(clip, wrong_negative(truth))[0][0], nasa_alpha)
        latents = sample_latents(m, encode(clip, prompt), empty, steps, kappa, seed + i, 1)
        reads += world.read_attributes(images_from_latents(latents))
    return world.attribute_accuracy(reads, truths)


def table(rows, keys):
    lines = ["| model | steps | CFG | " + " | ".join(keys) + " |", "| --- | --- | --- |" + " --- |" * len(keys)]
    for label, steps, kappa, acc in rows:
        lines.append(f"| {label} | {steps} | {kappa:g} | " + " | ".join(f"{100 * acc[k]:.0f}%" for k in keys) + " |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "nasa_world_teacher.safetensors"))
    p.add_argument("--n", type=int, default=200, help="prompts (one image each)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4, 20])
    p.add_argument("--kappa", type=float, default=3.0, help="CFG scale")
    p.add_argument("--nasa-alpha", type=float, default=None, help="NASA-I with a wrong-colour-and-shape negative")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "world_quality"))
    args = p.parse_args(argv)
    setup_comfy()
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint

    loaded = load_world_checkpoint(args.checkpoint)
    name = Path(args.checkpoint).name + (f" + NASA-I {args.nasa_alpha:g}" if args.nasa_alpha else "")
    rows = [(name, s, args.kappa, accuracy(loaded, args.n, s, args.kappa, args.seed, args.nasa_alpha)) for s in args.steps]
    keys = list(world.ATTRIBUTES) + ["all"]
    lines = [f"Attribute accuracy: {args.n} prompts naming all six attributes, one image each, read by the pixel "
             "reader.", ""] + table(rows, keys)
    write_report(args.out, "\n".join(lines), {"checkpoint": str(args.checkpoint), "n": args.n, "kappa": args.kappa,
                                              "nasa_alpha": args.nasa_alpha, "seed": args.seed,
                                              "accuracy": {str(s): acc for _, s, _, acc in rows}})


if __name__ == "__main__":
    main()
