"""The embedded-default demo: NASA on a real ComfyUI model, with no downloaded weights.

With the bundled world model (models/nasa_world_teacher.safetensors, trained here on 64x64 images of
coloured shapes), it samples the first three of its world's prompt / negative pairs with none / CFG / NASA (and
NASA with the negative measured from the empty prompt, the Advanced node's nasa_reference) at 1, 4 and 20
steps through comfy.sample (as KSampler does), and the same at 1 step with the bundled one-step NASA-T student
distilled from it (models/nasa_world_student_nasa_t.safetensors), prints how many images of each cell show a
shape and are free of the negative's attribute (read from the pixels), and writes the images side by side as a
labelled PNG grid. ``--teacher`` / ``--student`` take other world models (e.g. the
FLUX-class pair, models/nasa_world_flux.safetensors and models/nasa_world_flux_student_nasa_t.safetensors).

    python scripts/demo.py [--out out/demo_grid.png]
"""
import argparse
from pathlib import Path

from comfy_runtime import ROOT, setup_comfy


BUNDLED = ROOT / "models" / "nasa_world_teacher.safetensors"
STUDENT = ROOT / "models" / "nasa_world_student_nasa_t.safetensors"
DEMO_PAIRS = 3  # the first three of the world's benchmark pairs (world v2: colour, shape, background)


def world_demo(args):
    """The bundled world model: none / CFG / NASA at 1, 4 and 20 steps (teacher) and 1 step (student)."""
    from tqdm import tqdm

    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.model import checkpoint_world, load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents, \
        save_labelled_grid

    model, clip, _ = load_world_checkpoint(str(args.teacher))
    spec = world.world_spec(checkpoint_world(str(args.teacher)))
    models = {"teacher": model}
    if args.student:
        models["NASA-T student"] = load_world_checkpoint(str(args.student))[0]
    empty = encode(clip, "")
    runs = [("teacher", steps) for steps in (1, 4, 20)] + [("NASA-T student", 1)] * ("NASA-T student" in models)
    methods = ("none", "CFG", "NASA", "NASA, reference")
    cells, notes, labels, table = [], [], [], []
    for pos_text, neg_text in tqdm(world.BENCHMARK_PAIRS[spec.name][:DEMO_PAIRS], desc="prompts"):
        pos, neg = encode(clip, pos_text), encode(clip, neg_text)
        unwanted = world.attributes_of_prompt(neg_text, spec)
        for who, steps in runs:
            base_cfg = args.cfg if steps >= 20 else 1.0
            mm = models[who]
            row, row_notes, counts = [], [], []
            for method in methods:
                m, negative, cfg = {"none": (mm, empty, base_cfg), "CFG": (mm, neg, args.cfg),
                                    "NASA": (apply_nasa(mm, neg[0][0], args.alpha), empty, base_cfg),
                                    # the negative measured from the empty prompt (the Advanced node's nasa_reference)
                                    "NASA, reference": (apply_nasa(mm, neg[0][0], args.alpha, reference=empty[0][0]),
                                                        empty, base_cfg)}[method]
                images = images_from_latents(sample_latents(m, pos, negative, steps, cfg, args.seed, args.per_cell))
                # free: shows a shape and not the negative (a blank image is never free of it)
                free = sum(world.free_of(r, unwanted) for r in world.read_attributes(images, spec))
                row.append(images)
                row_notes.append(f"{free}/{len(images)} without {neg_text}" + (f" (cfg {cfg:g})" if cfg != 1 else ""))
                counts.append(f"{free}/{len(images)}")
            cells.append(row)
            notes.append(row_notes)
            labels.append(f'"{pos_text}"\nminus "{neg_text}"\n{who}, {steps} step{"s" if steps > 1 else ""}')
            table.append((f"{pos_text} / minus {neg_text}", f"{who}, {steps} step{'s' if steps > 1 else ''}", counts))
    heads = ["none (no negative)", f"CFG {args.cfg:g} (negative in CFG)", f"NASA α {args.alpha:g} (negative inside)",
             f"NASA α {args.alpha:g}, from the empty prompt"]
    widths = [max(len(t[0]) for t in table), max(len(t[1]) for t in table)] + [len(h) for h in heads]
    print(f"\nImages free of the negative's attribute (and showing a shape), read from the pixels ({args.per_cell} "
          f"per cell; the 20-step "
          f"teacher runs CFG {args.cfg:g} in every column, the others cfg 1 except the CFG column):\n")
    print(" | ".join(h.ljust(wd) for h, wd in zip(["prompt / negative", "model, steps"] + heads, widths)))
    print("-+-".join("-" * wd for wd in widths))
    for prompt, run, counts in table:
        print(" | ".join(v.ljust(wd) for v, wd in zip([prompt, run] + counts, widths)))
    out = save_labelled_grid(cells, labels, heads, args.out, notes=notes, group=len(runs),
                             title="NASA on the bundled world model: each row one prompt minus one negative, "
                                   "one model and step count")
    print(f"\nwrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "out" / "demo_grid.png"), help="where to write the PNG grid")
    parser.add_argument("--alpha", type=float, default=0.5, help="NASA strength")
    parser.add_argument("--cfg", type=float, default=3.0, help="CFG scale for the CFG column")
    parser.add_argument("--per-cell", type=int, default=3, help="images per cell (world model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", default=str(BUNDLED), help="a world model (default: the bundled UNet teacher)")
    parser.add_argument("--student", default=None,
                        help="its one-step NASA-T student ('' for none; default: the bundled one, if present)")
    args = parser.parse_args()

    setup_comfy()
    if not Path(args.teacher).exists():
        raise SystemExit(f"{args.teacher} is missing: train and export it as the README's 'Reproduce them' says")
    if args.student is None:
        args.student = str(STUDENT) if STUDENT.exists() else ""
    if args.student and not Path(args.student).exists():
        raise SystemExit(f"--student {args.student} does not exist; give a world model file, or '' for none")
    world_demo(args)


if __name__ == "__main__":
    main()
