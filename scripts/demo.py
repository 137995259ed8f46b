"""The embedded-default demo: NASA on a real ComfyUI model, with no downloaded weights.

With the bundled world model (models/nasa_world_teacher.safetensors, trained here on 64x64 images of
coloured shapes), it samples a few prompt / negative pairs with none / CFG / NASA at 1, 4 and 20 steps
through comfy.sample (as KSampler does), and the same at 1 step with the bundled one-step NASA-T student
distilled from it (models/nasa_world_student_nasa_t.safetensors), prints how many images of each cell are
free of the negative's attribute (read from the pixels), and writes the images side by side as a PNG grid.

    python scripts/demo.py [--out out/demo_grid.png]
"""
import argparse

from comfy_runtime import ROOT, setup_comfy


BUNDLED = ROOT / "models" / "nasa_world_teacher.safetensors"
STUDENT = ROOT / "models" / "nasa_world_student_nasa_t.safetensors"
WORLD_PAIRS = [("a shape", "red"), ("a shape on a white background", "circle"), ("a large shape", "blue")]


def world_demo(args):
    """The bundled world model: none / CFG / NASA at 1, 4 and 20 steps, 4 images per cell."""
    import torch
    from tqdm import tqdm

    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint
    from comfyui_nasa.nasa_core.world_model.sampling import encode, images_from_latents, sample_latents, save_grid

    model, clip, _ = load_world_checkpoint(str(BUNDLED))
    models = {"teacher": model}
    if STUDENT.exists():
        models["student"] = load_world_checkpoint(str(STUDENT))[0]
    empty = encode(clip, "")
    tiles, lines = [], []
    cells = [("teacher", steps, method) for steps in (1, 4, 20) for method in ("none", "CFG", "NASA")]
    cells += [("student", 1, method) for method in ("none", "CFG", "NASA") if "student" in models]
    for pos_text, neg_text in tqdm(WORLD_PAIRS, desc="prompts"):
        pos, neg = encode(clip, pos_text), encode(clip, neg_text)
        unwanted = world.attributes_of_prompt(neg_text)
        row = []
        for who, steps, method in cells:
            base_cfg = args.cfg if steps >= 20 else 1.0
            mm = models[who]
            m, negative, cfg = {"none": (mm, empty, base_cfg), "CFG": (mm, neg, args.cfg),
                                "NASA": (apply_nasa(mm, neg[0][0], args.alpha), empty, base_cfg)}[method]
            images = images_from_latents(sample_latents(m, pos, negative, steps, cfg, args.seed, args.per_cell))
            free = sum(not world.shows(r, unwanted) for r in world.read_attributes(images))
            row.append(f"{free}/{len(images)}")
            tiles.append(images)
        lines.append((pos_text, neg_text, row))
    header = " | ".join(f"{w} {m} {s}" for w, s, m in cells)
    print(f"\nimages free of the negative (of {args.per_cell} per cell)\nprompt / negative | {header}")
    for pos_text, neg_text, row in lines:
        print(f"{pos_text} / {neg_text} | " + " | ".join(row))
    out = save_grid(torch.cat(tiles), args.out, columns=len(cells) * args.per_cell)
    print(f"\nrows: {', '.join(f'{p!r} minus {n!r}' for p, n in WORLD_PAIRS)}; columns: " +
          ", ".join(f"{w} {m} at {s} step{'s' if s > 1 else ''}" for w, s, m in cells) + f" ({args.per_cell} images each)")
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "out" / "demo_grid.png"), help="where to write the PNG grid")
    parser.add_argument("--alpha", type=float, default=0.5, help="NASA strength")
    parser.add_argument("--cfg", type=float, default=3.0, help="CFG scale for the CFG column")
    parser.add_argument("--per-cell", type=int, default=4, help="images per cell (world model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    setup_comfy()
    if not BUNDLED.exists():
        raise SystemExit(f"{BUNDLED} is missing: train and export it as the README's 'Reproduce it' says")
    world_demo(args)


if __name__ == "__main__":
    main()
