"""Table 2 across models: the pooled cells of several ``removal_table.py`` runs side by side, one row per model and
step count, each cell "free of the negative / keeps the positive" in % with 95% Wilson intervals, and a plot of
both against alpha (alpha 0 = none; CFG as markers at the right). It reads the runs' JSON files and samples
nothing.

    .venv/bin/python benchmarks/table2_summary.py --runs "UNet teacher=benchmarks/results/v2/removal_teacher.json" \
        "FLUX-class teacher=benchmarks/results/v2/removal_flux.json" --out benchmarks/results/v2/table2
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import labelled_path, write_report  # noqa: E402


def load(spec: str):
    """``label=path.json`` -> (label, the run as removal_table.py wrote it)."""
    label, path = labelled_path(spec, "--runs")
    return label, json.loads(path.read_text())


def pct(share) -> str:
    return f"{100 * share['p']:.0f} [{100 * share['lo']:.0f}, {100 * share['hi']:.0f}]"


def table(runs) -> str:
    methods = []
    for _, run in runs:
        for row in run["summary"]:
            if row["method"] not in methods:
                methods.append(row["method"])
    lines = ["| model | steps | " + " | ".join(methods) + " |", "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    for label, run in runs:
        for steps in sorted({int(r["steps"]) for r in run["summary"]}):
            cells = {r["method"]: r for r in run["summary"] if int(r["steps"]) == steps}
            lines.append(f"| {label} | {steps} | " + " | ".join(
                f"{pct(cells[m]['free_of_negative'])} / {pct(cells[m]['keeps_positive'])}" if m in cells else ""
                for m in methods) + " |")
    first = runs[0][1]
    head = (f"Free of the negative / keeps the positive (%, 95% Wilson intervals), {first['n']} images per pair and "
            f"cell, pairs pooled, sampling seed {first['seed']}; an image that shows no shape counts as neither.")
    return head + "\n\n" + "\n".join(lines)


def plot(runs, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps_all = sorted({int(r["steps"]) for _, run in runs for r in run["summary"]})
    top = max([float(r["method"].split()[1]) for _, run in runs for r in run["summary"]
               if r["method"].startswith("NASA ") and "bound" not in r["method"]] or [1.0])
    cfg_x = top * 1.12  # CFG's markers right of the largest alpha
    fig, axes = plt.subplots(1, len(steps_all), figsize=(5.5 * len(steps_all), 4), squeeze=False)
    for ax, steps in zip(axes[0], steps_all):
        for i, (label, run) in enumerate(runs):
            rows = [r for r in run["summary"] if int(r["steps"]) == steps]
            # alpha 0 is "none"; the method reads "NASA <alpha>" ("... bound b" cells are left out of the curve)
            nasa = [(0.0, r) for r in rows if r["method"] == "none"] + sorted(
                ((float(r["method"].split()[1]), r) for r in rows
                 if r["method"].startswith("NASA ") and "bound" not in r["method"]), key=lambda t: t[0])
            colour = f"C{i}"
            xs = [a for a, _ in nasa]
            ax.plot(xs, [100 * r["free_of_negative"]["p"] for _, r in nasa], "-o", color=colour, ms=3,
                    label=f"{label}: free")
            ax.plot(xs, [100 * r["keeps_positive"]["p"] for _, r in nasa], "--s", color=colour, ms=3,
                    label=f"{label}: keeps")
            for j, r in enumerate(r for r in rows if r["method"].startswith("CFG")):
                x = cfg_x + 0.06 * top * j
                ax.plot([x], [100 * r["free_of_negative"]["p"]], "o", color=colour, mfc="none")
                ax.plot([x], [100 * r["keeps_positive"]["p"]], "s", color=colour, mfc="none")
        ax.axhline(95, color="grey", lw=0.5, ls=":")
        ax.axhline(90, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{steps} step{'s' if steps > 1 else ''} (hollow at right: CFG 1.5, 3)", fontsize=9)
        ax.set_xlabel("NASA-I alpha (0 = none)")
        ax.set_ylabel("% of images")
        ax.set_ylim(0, 102)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="LABEL=removal_table JSON")
    p.add_argument("--out", default=str(HERE / "results" / "table2"))
    args = p.parse_args(argv)
    runs = [load(s) for s in args.runs]
    md = write_report(args.out, table(runs), {"runs": {label: run["checkpoint"] for label, run in runs}})
    plot(runs, md.with_suffix(".png"))
    print(f"wrote {md}, .json, .png")


if __name__ == "__main__":
    main()
