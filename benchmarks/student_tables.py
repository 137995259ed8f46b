"""The one-step world students of NASA-T against their teacher: the paper's Table 2 (removal at 1 and 4 steps:
none / CFG / NASA-I, per student) and a Table-3-style quality row (attribute accuracy of samples vs prompt) for
teacher, SBv2 student, + NASA-I, NASA-T student, + NASA-I.

    .venv/bin/python benchmarks/student_tables.py --n 100 --quality-n 200     # the README's figures

Writes benchmarks/results/students_quality.{md,json}, and removal_student_<name>.{md,json,png} per student
(benchmarks/removal_table.py at 1 and 4 steps). Students run as one-/few-step models do: cfg 1 (CFG cells at
kappa 3); the teacher at its own 20 steps with CFG 3 (and at 1 step, cfg 1, for reference).
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import write_report  # noqa: E402

STUDENTS = {"SBv2": "models/nasa_world_student_sbv2.safetensors",
            "NASA-T": "models/nasa_world_student_nasa_t.safetensors"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="models/nasa_world_teacher.safetensors")
    p.add_argument("--sbv2", default=STUDENTS["SBv2"])
    p.add_argument("--nasa-t", default=STUDENTS["NASA-T"])
    p.add_argument("--n", type=int, default=100, help="removal table: images per prompt pair and cell")
    p.add_argument("--quality-n", type=int, default=200, help="quality table: prompts")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 1.0], help="NASA-I scales (removal)")
    p.add_argument("--quality-alpha", type=float, default=0.25, help="NASA-I scale in the quality rows")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="removal table: sampling steps of the students")
    p.add_argument("--skip-removal", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    setup_comfy()
    import removal_table
    import world_quality
    from comfyui_nasa.nasa_core import world
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint

    out = Path(args.out)
    students = {"SBv2": args.sbv2, "NASA-T": args.nasa_t}
    if not args.skip_removal:
        for name, path in students.items():
            removal_table.main(["--checkpoint", str(ROOT / path), "--steps", *map(str, args.steps), "--n", str(args.n),
                                "--pairs", str(args.pairs), "--alphas", *map(str, args.alphas),
                                "--out", str(out / f"removal_student_{name.lower().replace('-', '_')}")])

    teacher = load_world_checkpoint(str(ROOT / args.teacher))
    loaded = {name: load_world_checkpoint(str(ROOT / path)) for name, path in students.items()}
    a, n = args.quality_alpha, args.quality_n
    rows = [("teacher", 20, 3.0, world_quality.accuracy(teacher, n, 20, 3.0, 1, progress="teacher 20 steps")),
            ("teacher", 1, 1.0, world_quality.accuracy(teacher, n, 1, 1.0, 1, progress="teacher 1 step"))]
    for name, model in loaded.items():
        rows.append((f"{name} student", 1, 1.0, world_quality.accuracy(model, n, 1, 1.0, 1, progress=name)))
        rows.append((f"{name} student + NASA-I {a:g}", 1, 1.0,
                     world_quality.accuracy(model, n, 1, 1.0, 1, nasa_alpha=a, progress=f"{name} + NASA-I")))
    keys = list(world.ATTRIBUTES) + ["all"]
    lines = [f"Attribute accuracy (Table-3 style): {n} prompts naming all six attributes, one image each, read by "
             f"the pixel reader. NASA-I uses a negative naming a wrong colour and a wrong shape, at alpha {a:g}.", ""]
    lines += world_quality.table(rows, keys)
    write_report(out / "students_quality", "\n".join(lines),
                 {"n": n, "alpha": a, "rows": [{"model": l, "steps": s, "cfg": k, "accuracy": acc} for l, s, k, acc in rows],
                  "checkpoints": {"teacher": args.teacher, **students}})


if __name__ == "__main__":
    main()
