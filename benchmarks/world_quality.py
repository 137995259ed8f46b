"""How well a world model draws what it is asked: prompts naming every attribute of random world scenes (drawn
from the world's priors; world v2 names the quality too), sampled through comfy.sample, read back by the pixel
reader. Per attribute and for all of them, the share right, with Wilson 95% intervals; the share of images
that show the subject and every named attribute; the reader's quality (clean share, quality score).

    .venv/bin/python benchmarks/world_quality.py --n 200            # the README's figures
    .venv/bin/python benchmarks/world_quality.py --checkpoint models/nasa_world_student_nasa_t.safetensors \
        --steps 1 --kappa 1 --nasa-alpha 0.25                        # a one-step student with NASA-I

The world (v1 or v2) is the checkpoint's (its metadata "world"; files without it learnt v1). Seeds: prompt i
of a run uses sampling seed SEED + i, prompts drawn from seed SEED; the default SEED (REPORT_SEED, 7000) is
kept apart from the seeds used to choose settings (TUNE_SEED, 100: ablations, pilots) and from the reader's
tuning images (seed 1000).

With --nasa-alpha, each prompt gets a negative naming a wrong colour and a wrong shape (the next ones in the
world's vocabulary: "a red circle ..." gets "green square"), applied by Apply NASA Model Patch; with
--quality-negative, the generic quality negative instead (world v2).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402

REPORT_SEED = 7000  # reported figures
TUNE_SEED = 100     # ablations, pilots, anything that chooses a setting
sys.path.insert(0, str(ROOT))
from nasa_core.world.spec import QUALITY_NEGATIVE  # noqa: E402  (a pure constant, read before ComfyUI is set up)


def world_of(checkpoint: str) -> str:
    """The world a checkpoint learnt (``checkpoint_world``)."""
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_world
    return checkpoint_world(str(checkpoint))


def prompts_and_truths(n: int, seed: int, spec=None, name_quality: bool = True):
    """``n`` scenes and the prompts naming every attribute (``name_quality=False``: every attribute but quality,
    the plain prompts of Table 3, whose images may come out degraded as the world's prior has it)."""
    import torch
    from comfyui_nasa.nasa_core import world
    spec = spec or world.V1_SPEC
    truths = [world.public(a) for a in world.sample_attributes(torch.Generator().manual_seed(seed), n, spec)]
    if name_quality:
        return [world.caption_all(a, spec) for a in truths], truths
    from comfyui_nasa.nasa_core.world.captions import phrase
    named = {k: k != "quality" for k in world.named_attributes(spec)}
    return [phrase(a, named, spec) for a in truths], truths


def wrong_negative(truth: dict) -> str:
    """A wrong colour and a wrong shape for this scene: the next values in the world's vocabulary."""
    from comfyui_nasa.nasa_core import world
    colours, shapes = list(world.VOCAB["colour"]), list(world.VOCAB["shape"])
    colour = colours[(colours.index(truth["colour"]) + 1) % len(colours)]
    shape = shapes[(shapes.index(truth["shape"]) + 1) % len(shapes)]
    return f"{colour} {shape}"


def evaluate(loaded, n: int, steps: int, kappa: float, seed: int, nasa_alpha=None, progress: str = "",
             spec=None, negative: str = "", scheduler: str = "normal", sampler: str = "euler",
             name_quality: bool = True, cfg_negative: str = "", reference=None):
    """Reads of ``n`` all-attribute prompts: {"shares": per-attribute Share and "all", "named": Share (shows the
    subject and every named attribute), "clean": Share, "quality_score": Mean, "reads": [...], and per sample
    its "images" ([1, 3, H, W]), "prompts" and "truths"}.
    ``name_quality=False``: the prompts leave quality unnamed and "all" covers the other attributes;
    ``cfg_negative``: CFG's negative prompt (default empty), for a multi-step row sampled with a negative;
    ``reference``: NASA-I measures its negative from this prompt (apply_nasa's reference; None: the paper's)."""
    from tqdm import tqdm
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents
    spec = spec or world.V1_SPEC
    model, clip, _ = loaded
    uncond = encode(clip, cfg_negative)
    ref = None if reference is None else encode(clip, reference)[0][0]
    prompts, truths = prompts_and_truths(n, seed, spec, name_quality)
    reads, images = [], []
    for i, (prompt, truth) in enumerate(tqdm(list(zip(prompts, truths)), desc=progress or f"{steps} steps")):
        m = model
        if nasa_alpha:
            m = apply_nasa(model, encode(clip, negative or wrong_negative(truth))[0][0], nasa_alpha, reference=ref)
        latents = sample_latents(m, encode(clip, prompt), uncond, steps, kappa, seed + i, 1, sampler=sampler,
                                 scheduler=scheduler)
        images.append(images_from_latents(latents))
        reads += world.read_attributes(images[-1], spec)
    keys = tuple(k for k in world.named_attributes(spec) if name_quality or k != "quality")
    named = [world.attributes_of_prompt(p, spec) for p in prompts]
    cell = world.cell_metrics(reads, {})
    return {"shares": world.attribute_shares(reads, truths, keys), "named": world.named_accuracy(reads, named),
            "clean": cell["clean"], "quality_score": cell["quality_score"], "subject": cell["shows_subject"],
            "reads": reads, "images": images, "prompts": prompts, "truths": truths, "keys": keys}


def accuracy(loaded, n: int, steps: int, kappa: float, seed: int, nasa_alpha=None, progress: str = "", spec=None):
    """Per-attribute accuracy as plain shares (the older interface)."""
    return {k: s.p for k, s in evaluate(loaded, n, steps, kappa, seed, nasa_alpha, progress, spec)["shares"].items()}


def table(rows, keys):
    """Markdown rows: (label, steps, kappa, evaluate() result)."""
    head = ["model", "steps", "CFG"] + list(keys) + ["all", "shows subject", "quality clean", "quality score"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, steps, kappa, ev in rows:
        cells = [ev["shares"][k].fmt() if k in ev["shares"] else "-" for k in list(keys) + ["all"]]  # "-": unnamed
        cells += [ev["subject"].fmt(), ev["clean"].fmt(), ev["quality_score"].fmt()]
        lines.append(f"| {label} | {steps} | {kappa:g} | " + " | ".join(cells) + " |")
    return lines


def as_json(ev) -> dict:
    return {"shares": {k: s.to_dict() for k, s in ev["shares"].items()}, "named": ev["named"].to_dict(),
            "clean": ev["clean"].to_dict(), "quality_score": ev["quality_score"].to_dict(),
            "shows_subject": ev["subject"].to_dict(),
            "measures": {m: [r.get(m) for r in ev["reads"]] for m in ("_noise", "_edge", "_saturation", "_inside")}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "nasa_world_teacher.safetensors"))
    p.add_argument("--n", type=int, default=200, help="prompts (one image each)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4, 20])
    p.add_argument("--kappa", type=float, default=3.0, help="CFG scale")
    p.add_argument("--nasa-alpha", type=float, default=None, help="NASA-I with a wrong-colour-and-shape negative")
    p.add_argument("--quality-negative", action="store_true", help="NASA-I with the generic quality negative")
    p.add_argument("--reference-prompt", default=None,
                   help='NASA-I measures its negative from this prompt ("" = the empty prompt; default: the paper\'s)')
    p.add_argument("--unnamed-quality", action="store_true", help="prompts leave quality unnamed (Table 3's)")
    p.add_argument("--seed", type=int, default=REPORT_SEED)
    p.add_argument("--world", default=None, help="v1 or v2 (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "world_quality"))
    args = p.parse_args(argv)
    setup_comfy()
    import torch
    torch.set_num_threads(args.threads)
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint

    spec = world.world_spec(args.world or world_of(args.checkpoint))
    loaded = load_world_checkpoint(args.checkpoint)
    negative = QUALITY_NEGATIVE if args.quality_negative else ""
    name = Path(args.checkpoint).name + (f" + NASA-I {args.nasa_alpha:g}" if args.nasa_alpha else "") + \
        (f', from "{args.reference_prompt}"' if args.nasa_alpha and args.reference_prompt is not None else "")
    rows = [(name, s, args.kappa, evaluate(loaded, args.n, s, args.kappa, args.seed, args.nasa_alpha, spec=spec,
                                           negative=negative, reference=args.reference_prompt,
                                           name_quality=not args.unnamed_quality)) for s in args.steps]
    keys = world.named_attributes(spec)
    lines = [f"Attribute accuracy of `{name}` (world {spec.name}): {args.n} prompts naming every attribute"
             f"{' but quality' if args.unnamed_quality else ''}, one "
             f"image each, seeds {args.seed}..{args.seed + args.n - 1}, read by the pixel reader; 95% Wilson "
             "intervals in brackets.", ""] + table(rows, keys)
    write_report(args.out, "\n".join(lines), {"checkpoint": str(args.checkpoint), "world": spec.name, "n": args.n,
                                              "kappa": args.kappa, "nasa_alpha": args.nasa_alpha, "seed": args.seed,
                                              "negative": negative, "reference_prompt": args.reference_prompt,
                                              "unnamed_quality": args.unnamed_quality,
                                              "results": {str(s): as_json(ev) for _, s, _, ev in rows}})


if __name__ == "__main__":
    main()
