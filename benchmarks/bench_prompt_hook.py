"""What NASA Negative Conditioning costs when it works alone (its conditioning hook, ComfyUI v0.3.30+) against
Apply NASA Model Patch carrying the same per-prompt negative, with CFG > 1 and at cfg 1, measured side by side:
ComfyUI batches prompts only with equal hooks, so with CFG the hooked positive and the plain negative run as two
batch-1 calls per step instead of one batch-2 call, and the hook's NASA projects the negative's K/V every call
(nothing is kept between steps).

    COMFYUI_PATH=<ComfyUI v0.3.30 or later> .venv/bin/python benchmarks/bench_prompt_hook.py   # about 3 minutes

SD1.5 at ComfyUI's real configuration (random weights) at 256 px, sampled through comfy.sample (euler, normal),
interleaved repetitions, medians. Writes benchmarks/results/prompt_hook_latest.{md,json}."""
import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_unet  # noqa: E402  (the real SD1.5 config builder)
from benchlib import run_metadata, setup_runtime, write_report  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--px", type=int, default=256)
    p.add_argument("--out", default=str(HERE / "results" / "prompt_hook_latest"))
    args = p.parse_args(argv)
    runtime = setup_runtime("cpu")
    import torch
    import comfy.sample
    import nasa_testkit as tk
    from comfyui_nasa.nasa_core.adapters import prompt_hook
    from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, NASANegativeConditioning
    if prompt_hook.hooks_api() is None:
        sys.exit("this ComfyUI has no conditioning hooks (v0.3.30+): NASA Negative Conditioning cannot work alone here")
    meta = run_metadata(runtime, 0.5)
    model, patcher = bench_unet.build("SD1.5")
    tk.init_weights(model.diffusion_model)
    calls = [0]
    model.diffusion_model.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))

    g = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 77, 768, generator=g), {}]]
    neg_cfg = [[torch.randn(1, 77, 768, generator=g), {}]]
    nasa_neg = [[torch.randn(1, 77, 768, generator=g), {}]]
    carried, = NASANegativeConditioning().attach(pos, nasa_neg, 0.5)  # hooked (this ComfyUI has hooks)
    enabled, = ApplyNASAModelPatch().patch(patcher, 0.5)
    latent = torch.zeros(1, 4, args.px // 8, args.px // 8)
    noise = comfy.sample.prepare_noise(latent, 0)

    def run(model_, positive, cfg):
        return comfy.sample.sample(model_, noise, args.steps, cfg, "euler", "normal", positive, neg_cfg, latent,
                                   disable_pbar=True, seed=0)

    variants = {}
    for cfg in (3.0, 1.0):
        variants[f"plain, cfg {cfg:g}"] = (patcher, pos, cfg)
        variants[f"Apply NASA Model Patch + per-prompt negative, cfg {cfg:g}"] = (enabled, carried, cfg)
        variants[f"NASA Negative Conditioning alone (hook), cfg {cfg:g}"] = (patcher, carried, cfg)
    times = {k: [] for k in variants}
    n_calls = {}
    with torch.inference_mode():
        for k, v in variants.items():  # warm-up, and the number of model calls each makes
            calls[0] = 0
            run(*v)
            n_calls[k] = calls[0]
        for _ in range(args.reps):
            for k, v in variants.items():
                t = time.perf_counter()
                run(*v)
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"NASA Negative Conditioning alone vs with Apply NASA Model Patch: SD1.5 real config, {args.px} px, "
             f"{args.steps} steps, medians of {args.reps} interleaved repetitions ({meta['date']}, {runtime})", "",
             "| variant | model calls | seconds | vs plain at that cfg |", "| --- | --- | --- | --- |"]
    for k in variants:
        base = med[f"plain, cfg {k.rsplit('cfg ', 1)[1]}"]
        lines.append(f"| {k} | {n_calls[k]} | {med[k]:.2f} | {med[k] / base:.3f}x |")
    write_report(args.out, "\n".join(lines), {"meta": meta, "median_s": med, "times_s": times, "model_calls": n_calls})


if __name__ == "__main__":
    main()
