#!/usr/bin/env python
"""How well the pixel-level attribute reader (nasa_core.world.read_attributes) reads the world's own images:
per-attribute accuracy and all-six-attributes accuracy on clean images, and on degraded ones (Gaussian noise of
std 0.1 in [-1, 1] units, a 3x3 box blur, and both: blur then noise), plus three harsher degradations to show
where it starts to fail. Pure torch, no ComfyUI, CPU, seconds. Exit status 1 if a clean-image attribute is read
right less than --min of the time.

    python benchmarks/reader_accuracy.py --n 2000 --seed 123
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # nasa_core as a top-level package (it imports no ComfyUI)

import torch  # noqa: E402

from nasa_core.world import ATTRIBUTES, attribute_accuracy, perturb, read_attributes, sample_batch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of world images")
    ap.add_argument("--seed", type=int, default=123, help="world seed (the noise: seed + 1 ... seed + 4)")
    ap.add_argument("--noise", type=float, default=0.1, help="Gaussian noise std in [-1, 1] units")
    ap.add_argument("--min", type=float, default=0.995, help="per-attribute accuracy required on clean images")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 is fastest on a shared 2-core machine; 0 keeps torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    images, attrs, _ = sample_batch(args.seed, args.n)
    t_render = time.perf_counter() - t0
    conditions = {
        "clean": images,
        f"noise {args.noise:g}": perturb(images, noise_sigma=args.noise, generator=args.seed + 1),
        "blur 3x3": perturb(images, blur=True),
        f"blur 3x3 + noise {args.noise:g}": perturb(images, noise_sigma=args.noise, blur=True,
                                                     generator=args.seed + 1),
        # Beyond the requirement: where the reader starts to fail.
        "noise 0.2": perturb(images, noise_sigma=0.2, generator=args.seed + 2),
        "noise 0.3": perturb(images, noise_sigma=0.3, generator=args.seed + 3),
        "blur 3x3 twice + noise 0.2": perturb(perturb(images, blur=True), noise_sigma=0.2, blur=True,
                                              generator=args.seed + 4),
    }
    print(f"world: n={args.n} seed={args.seed}, rendered in {t_render:.2f} s")
    counts = {k: sorted(Counter(a[k] for a in attrs).items(), key=str) for k in ATTRIBUTES}
    print("classes: " + ", ".join(f"{k} " + "/".join(f"{v}:{c}" for v, c in counts[k]) for k in ATTRIBUTES))
    header = f"{'condition':<26}" + "".join(f"{k:>11}" for k in ATTRIBUTES) + f"{'all':>9}{'read s':>8}"
    print(header)
    ok = True
    for name, imgs in conditions.items():
        t0 = time.perf_counter()
        reads = read_attributes(imgs)
        dt = time.perf_counter() - t0
        acc = attribute_accuracy(reads, attrs)
        cells = "".join(f"{100 * acc[k]:>10.2f}%" for k in ATTRIBUTES)
        print(f"{name:<26}{cells}{100 * acc['all']:>8.2f}%{dt:>8.2f}")
        wrong = [(i, k, r[k], a[k]) for i, (r, a) in enumerate(zip(reads, attrs)) for k in ATTRIBUTES if r[k] != a[k]]
        for i, k, got, want in wrong[:5]:
            print(f"    image {i}: {k} read {got!r}, truth {want!r}")
        if name == "clean" and min(acc[k] for k in ATTRIBUTES) < args.min:
            ok = False
    print("PASS" if ok else f"FAIL: a clean-image attribute below {100 * args.min:.1f}%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
