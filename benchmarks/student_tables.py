"""The one-step world students of NASA-T against their teacher: the paper's Table 2 (removal at 1 and 4 steps:
none / CFG / NASA-I, per student), the students' attribute accuracy on prompts naming every attribute (their
quality bar), and Table 3 (quality): teacher, SBv2 student, + NASA-I, NASA-T student, + NASA-I.

    .venv/bin/python benchmarks/student_tables.py --n 200 --quality-n 200     # the README's figures

Writes benchmarks/results/students_quality.{md,json}, and removal_student_<name>.{md,json,png} per student
(benchmarks/removal_table.py at 1 and 4 steps). Students run as one-/few-step models do: cfg 1 (CFG cells at
each --cfg-kappas); the teacher at its own 20 steps with CFG 3 (and at 1 step, cfg 1, for reference). Table 3
(world v2, which has quality): prompts naming every attribute but quality, so images come out degraded as the
world's prior has it; NASA-I (and the teacher's CFG, in its second row) takes the generic quality negative.
In world v1 (no quality) Table 3's NASA-I rows take a wrong colour and shape instead. The world is the
teacher's (its metadata); the removal pairs are that world's; seeds: the reporting seed 7000 (--seed).
Every share with its Wilson 95% interval; a share counts an image only when it shows a shape.
``--ablation LABEL=PATH ...`` adds Table 5's rows: more students (the negative in the teacher only, in the LoRA
teacher too, ...), each on Table 3's prompts at one step, cfg 1.
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))
from comfy_runtime import setup_comfy  # noqa: E402
from report import labelled_path, write_report  # noqa: E402

def world_quality_seed() -> int:
    import world_quality
    return world_quality.REPORT_SEED


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
    p.add_argument("--pairs", type=int, default=8, help="the first N of the world's removal pairs")
    p.add_argument("--cfg-kappas", type=float, nargs="+", default=[1.5, 3.0], help="removal table: CFG cells")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="removal table: sampling steps of the students")
    p.add_argument("--skip-removal", action="store_true")
    p.add_argument("--ablation", nargs="+", default=[], metavar="LABEL=PATH",
                   help="Table 5: more students, one Table-3 row each (e.g. the negative in the teacher only)")
    p.add_argument("--seed", type=int, default=world_quality_seed(), help="sampling / prompt seed (reporting: 7000)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    ablations = [labelled_path(item, "--ablation", root=ROOT) for item in args.ablation]  # checked before any sampling
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
                                "--pairs", str(args.pairs), "--alphas", *map(str, args.alphas), "--seed", str(args.seed),
                                "--cfg-kappas", *map(str, args.cfg_kappas),
                                "--out", str(out / f"removal_student_{name.lower().replace('-', '_')}")])

    spec = world.world_spec(world_quality.world_of(str(ROOT / args.teacher)))
    teacher = load_world_checkpoint(str(ROOT / args.teacher))
    loaded = {name: load_world_checkpoint(str(ROOT / path)) for name, path in students.items()}
    a, n, seed = args.quality_alpha, args.quality_n, args.seed

    def ev(model, steps, kappa, **kw):
        return world_quality.evaluate(model, n, steps, kappa, seed, spec=spec, **kw)

    # The students' bar: every attribute named (quality too, in world v2), one step, no negative.
    named_rows = [("teacher", 20, 3.0, ev(teacher, 20, 3.0, progress="teacher 20 steps")),
                  ("teacher", 1, 1.0, ev(teacher, 1, 1.0, progress="teacher 1 step"))]
    named_rows += [(f"{name} student", 1, 1.0, ev(model, 1, 1.0, progress=name)) for name, model in loaded.items()]
    # Table 3: plain prompts (quality unnamed), the generic quality negative.
    plain = dict(name_quality=not spec.has_quality)
    neg = dict(negative=world_quality.QUALITY_NEGATIVE) if spec.has_quality else {}
    negative_label = "the quality negative" if spec.has_quality else "a wrong colour and shape"
    table3 = [("teacher", 20, 3.0, ev(teacher, 20, 3.0, progress="T3 teacher", **plain))]
    if spec.has_quality:
        table3.append(("teacher, CFG negative: the quality negative", 20, 3.0,
                       ev(teacher, 20, 3.0, progress="T3 teacher + negative", cfg_negative=world_quality.QUALITY_NEGATIVE,
                          **plain)))
    for name, model in loaded.items():
        table3.append((f"{name} student", 1, 1.0, ev(model, 1, 1.0, progress=f"T3 {name}", **plain)))
        table3.append((f"{name} student + NASA-I {a:g}", 1, 1.0,
                       ev(model, 1, 1.0, nasa_alpha=a, progress=f"T3 {name} + NASA-I", **plain, **neg)))
    table5 = [(label, 1, 1.0, ev(load_world_checkpoint(str(path)), 1, 1.0, progress=f"T5 {label}", **plain))
              for label, path in ablations]
    keys = world.named_attributes(spec)
    lines = [f"Attribute accuracy (world {spec.name}): {n} prompts naming every attribute, one image each, seeds "
             f"{seed}..{seed + n - 1}, read by the pixel reader; 95% Wilson intervals.", ""]
    lines += world_quality.table(named_rows, keys)
    lines += ["", f"Table 3 (quality, world {spec.name}): the same {n} scenes, prompts naming every attribute"
              f"{' but quality' if spec.has_quality else ''}; NASA-I at alpha {a:g} with {negative_label}; 'all' "
              "covers the named attributes; quality clean / score: the reader's.", ""]
    lines += world_quality.table(table3, keys)
    if table5:
        lines += ["", "Table 5 (ablation): the same prompts as Table 3, one step, cfg 1, no NASA-I.", ""]
        lines += world_quality.table(table5, keys)
    write_report(out / "students_quality", "\n".join(lines),
                 {"n": n, "alpha": a, "seed": seed, "world": spec.name,
                  "rows": [{"model": l, "steps": s, "cfg": k, **world_quality.as_json(e)} for l, s, k, e in named_rows],
                  "table3": [{"model": l, "steps": s, "cfg": k, **world_quality.as_json(e)} for l, s, k, e in table3],
                  "table5": [{"model": l, "steps": s, "cfg": k, **world_quality.as_json(e)} for l, s, k, e in table5],
                  "checkpoints": {"teacher": args.teacher, **students,
                                  **{label: str(path) for label, path in ablations}}})


if __name__ == "__main__":
    main()
