"""How well a world model draws what it is asked: prompts naming all six attributes of random world scenes,
sampled through comfy.sample, read back by the pixel-level reader; per-attribute and all-attribute accuracy.

    .venv/bin/python benchmarks/world_quality.py --n 200            # the README's figures
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "nasa_world_teacher.safetensors"))
    p.add_argument("--n", type=int, default=200, help="prompts (one image each)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4, 20])
    p.add_argument("--kappa", type=float, default=3.0, help="CFG scale")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "world_quality"))
    args = p.parse_args(argv)
    setup_comfy()
    import torch
    from tqdm import tqdm

    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents

    model, clip, _ = load_world_checkpoint(args.checkpoint)
    empty = encode(clip, "")
    truths = [world.public(a) for a in world.sample_attributes(torch.Generator().manual_seed(args.seed), args.n)]
    prompts = [world.caption_all(a) for a in truths]
    results = {}
    for steps in args.steps:
        reads = []
        for i, prompt in enumerate(tqdm(prompts, desc=f"{steps} steps")):
            latents = sample_latents(model, encode(clip, prompt), empty, steps, args.kappa, args.seed + i, 1)
            reads += world.read_attributes(images_from_latents(latents))
        results[steps] = world.attribute_accuracy(reads, truths)
    keys = list(world.ATTRIBUTES) + ["all"]
    lines = [f"Attribute accuracy of `{Path(args.checkpoint).name}`: {args.n} prompts naming all six attributes, "
             f"one image each, CFG {args.kappa}, read by the pixel reader.", "",
             "| steps | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for steps, acc in results.items():
        lines.append(f"| {steps} | " + " | ".join(f"{100 * acc[k]:.0f}%" for k in keys) + " |")
    write_report(args.out, "\n".join(lines), {"checkpoint": str(args.checkpoint), "n": args.n, "kappa": args.kappa,
                                              "seed": args.seed, "accuracy": {str(k): v for k, v in results.items()}})


if __name__ == "__main__":
    main()
