"""The embedded-default demo: NASA on a real ComfyUI UNet, with no downloaded weights.

Until the pack ships its own trained model, the demo builds ComfyUI's SD-style UNetModel at small
widths with seeded random weights, so what it shows is the mechanics, not pretty pictures: for a few
prompt/negative pairs it samples none / CFG with the negative / NASA at 1 and 4 steps through
comfy.sample (as KSampler does), prints how far each moves the result and what each costs per step,
and writes the latents side by side as a PNG grid.

    python scripts/demo.py [--out out/demo_grid.png]
"""
import argparse
import time
from pathlib import Path

from comfy_runtime import ROOT, setup_comfy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "out" / "demo_grid.png"), help="where to write the PNG grid")
    parser.add_argument("--alpha", type=float, default=0.5, help="NASA strength")
    parser.add_argument("--cfg", type=float, default=4.0, help="CFG scale for the CFG column")
    args = parser.parse_args()

    setup_comfy()
    import torch
    from PIL import Image
    from tqdm import tqdm

    import comfy.sample
    import comfy.supported_models
    import comfy.model_patcher
    import comfy.model_management
    from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch

    sys_path_tests = str(ROOT / "tests")
    import sys
    sys.path.insert(0, sys_path_tests)
    import nasa_testkit as tk

    model = tk.tiny_unet_patcher(context_dim=64, seed=0)
    pairs = [(tk.conditioning(10 + i), tk.conditioning(20 + i)) for i in range(3)]  # (prompt, negative) encodings
    columns = []
    rows = []
    timings = {}
    for steps in (1, 4):
        for label in ("none", "CFG", "NASA"):
            columns.append(f"{label} {steps} step{'s' if steps > 1 else ''}")
    for pos, neg in tqdm(pairs, desc="prompts"):
        row = []
        for steps in (1, 4):
            nasa_model, = ApplyNASAModelPatch().patch(model, args.alpha, nasa_negative=neg)
            for label, m, negative, cfg in (("none", model, None, 1.0), ("CFG", model, neg, args.cfg),
                                            ("NASA", nasa_model, None, 1.0)):
                t = time.perf_counter()
                out = tk.sample(m, pos, negative=negative, steps=steps, cfg=cfg, size=32)
                timings.setdefault(label, []).append((time.perf_counter() - t) / steps)
                row.append(out[0])
        rows.append(row)

    print(f"\n{'column':<16}{'mean |change| vs none':>24}")
    for j, name in enumerate(columns):
        base = [r[(j // 3) * 3] for r in rows]
        change = sum((r[j] - b).abs().mean().item() for r, b in zip(rows, base)) / len(rows)
        print(f"{name:<16}{change:>24.3f}")
    print("\nseconds per step (median):", {k: round(sorted(v)[len(v) // 2], 4) for k, v in timings.items()})

    tiles = []
    for row in rows:
        for lat in row:
            img = lat[:3]
            img = (img - img.amin()) / (img.amax() - img.amin() + 1e-8)
            tiles.append((img.permute(1, 2, 0).numpy() * 255).astype("uint8"))
    h, w = tiles[0].shape[:2]
    scale = 4
    grid = Image.new("RGB", (len(columns) * w * scale, len(rows) * h * scale))
    for i, tile in enumerate(tiles):
        grid.paste(Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST),
                   ((i % len(columns)) * w * scale, (i // len(columns)) * h * scale))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    print(f"\ncolumns: {', '.join(columns)}\nwrote {out}")


if __name__ == "__main__":
    main()
