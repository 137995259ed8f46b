"""What NASA-I does to a world model's attributes: for the first pairs of its world's Table-2 list, samples at
several alphas (cfg 1, an empty negative), read by the pixel reader, and tallied per attribute (the values read
and how often; "None" where the reader found no shape or could not read the attribute). Tuning seeds by
default: this is for finding out why a removal table looks as it does, not for reporting.

    .venv/bin/python benchmarks/nasa_reads.py --checkpoint models/nasa_world_flux.safetensors --steps 1
"""
import argparse
import collections
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402

ATTRIBUTES = ("shape", "colour", "background", "size", "count", "position", "quality")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--pairs", type=int, nargs="+", default=[4],
                   help="the first N of the world's removal pairs, or (several numbers) those pairs, counted from 1")
    p.add_argument("--reference-prompt", default=None,
                   help='measure the negative from this prompt (apply_nasa reference; "" = the empty prompt)')
    p.add_argument("--n", type=int, default=60, help="images per pair and alpha")
    p.add_argument("--seed", type=int, default=100, help="sampling seed (100: tuning)")
    args = p.parse_args(argv)
    setup_comfy()
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_world, load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents
    spec = world.world_spec(checkpoint_world(args.checkpoint))
    model, clip, _ = load_world_checkpoint(args.checkpoint)
    empty = encode(clip, "")
    pairs = world.BENCHMARK_PAIRS[spec.name]
    pairs = pairs[: args.pairs[0]] if len(args.pairs) == 1 else [pairs[i - 1] for i in args.pairs]
    reference = None if args.reference_prompt is None else encode(clip, args.reference_prompt)[0][0]
    for positive, negative in pairs:
        pos, neg = encode(clip, positive), encode(clip, negative)
        for alpha in args.alphas:
            m = apply_nasa(model, neg[0][0], alpha, reference=reference) if alpha else model
            latents = sample_latents(m, pos, empty, args.steps, 1.0, args.seed, args.n)
            reads = world.read_attributes(images_from_latents(latents), spec)
            tally = {k: collections.Counter(str(r.get(k)) for r in reads).most_common(4) for k in ATTRIBUTES}
            print(f'"{positive}" minus "{negative}", alpha {alpha:g}: '
                  + "; ".join(f"{k} " + ", ".join(f"{v} {c}" for v, c in tally[k]) for k in ATTRIBUTES), flush=True)


if __name__ == "__main__":
    main()
