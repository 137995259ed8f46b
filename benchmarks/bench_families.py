#!/usr/bin/env python
"""What NASA costs on the 2025-2026 joint-attention families (nasa_core/adapters/joint_rows.py), at each family's
usual resolution and prompt length, with ComfyUI's real configurations (modern tree: COMFYUI_PATH).

(a) FLOPs of one denoiser call on the meta device (FlopCounterMode; benchlib), side by side: without NASA, with
    NASA at the default blocks (the first third in run order) and at all blocks, CFG (batch 2), and NASA's floor.
    The floor is the work the method as defined needs and nothing else: the negative's tokens through the text
    branch of every block up to the last steered one (their queries over [negative; image]), and the image queries
    over the negative's keys in the steered blocks. What NASA does beyond it is the last steered block's update of
    the negative's rows after attention (nothing reads it); the script counts that per module (FlopCounterMode's
    per-module counts, nasa - none, in the last steered block's post-attention text modules) and subtracts it.
    The negative has as many tokens as the positive (shared/notes/targets.md's convention).
(b) CPU wall-clock of NASA / none and CFG / none at the real width with reduced depth (2 blocks) and resolution,
    median of interleaved repetitions.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_families.py                 # both parts
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_families.py --skip-wallclock
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchlib import (count_flops, count_module_flops, load_average, model_call as call, nasa_run_of, pct,  # noqa: E402
                      run_metadata, setup_runtime, write_report)

# name -> ComfyUI config class, unet_config of the real checkpoint (the values comfy/model_detection.py gives it,
# or the class defaults it leaves), latent of the usual workload, text tokens and width, the last block's
# post-attention text modules (the floor's exclusion), and what a pooled/guidance input the model wants.
FAMILIES = {
    "Qwen-Image, 1328 px": dict(
        text_rows=128, image_tokens=83 * 83,
        config="QwenImage", unet={"image_model": "qwen_image", "in_channels": 64, "num_layers": 60},
        latent=(1, 16, 1, 166, 166), tokens=128, width=3584, post=("attn.to_add_out", "txt_mlp"),
        small={"num_layers": 2}, small_latent=(1, 16, 1, 32, 32)),
    "FLUX.2 dev, 1024 px": dict(
        text_rows=512, image_tokens=64 * 64,
        config="Flux2", unet={"image_model": "flux2", "axes_dim": [32, 32, 32, 32], "num_heads": 48, "mlp_ratio": 3.0,
                              "theta": 2000, "out_channels": 128, "global_modulation": True, "mlp_silu_act": True,
                              "qkv_bias": False, "ops_bias": False, "default_ref_method": "index",
                              "ref_index_scale": 10.0, "txt_ids_dims": [3], "patch_size": 1, "in_channels": 128,
                              "hidden_size": 6144, "context_in_dim": 15360, "vec_in_dim": None, "depth": 8,
                              "depth_single_blocks": 48, "guidance_embed": True, "yak_mlp": False,
                              "txt_norm": False},
        latent=(1, 128, 64, 64), tokens=512, neg_tokens=128, width=15360, pooled=True, guidance=True,
        post=("txt_attn.proj", "txt_mlp", "linear2"), small={"depth": 1, "depth_single_blocks": 1},
        small_latent=(1, 128, 16, 16)),
    "Chroma, 1024 px": dict(
        text_rows=128, image_tokens=64 * 64,
        config="Chroma", unet={"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096,
                               "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
                               "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2,
                               "qkv_bias": True, "in_dim": 64, "out_dim": 3072, "hidden_dim": 5120, "n_layers": 5,
                               "txt_ids_dims": [], "vec_in_dim": None},
        latent=(1, 16, 128, 128), tokens=128, width=4096, pooled=True, guidance=True,
        post=("txt_attn.proj", "txt_mlp", "linear2"), small={"depth": 1, "depth_single_blocks": 1},
        small_latent=(1, 16, 32, 32)),
    "HunyuanVideo 1.5, 720p, 121 frames": dict(
        text_rows=128, image_tokens=31 * 45 * 80,
        config="HunyuanVideo15", unet={"image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32,
                                       "vec_in_dim": None, "context_in_dim": 3584, "hidden_size": 2048,
                                       "mlp_ratio": 4.0, "num_heads": 16, "depth": 54, "depth_single_blocks": 0,
                                       "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 1, 1],
                                       "qkv_bias": True, "guidance_embed": False, "byt5": True, "meanflow": False,
                                       "use_cond_type_embedding": True, "vision_in_dim": None,
                                       "meanflow_sum": False},
        latent=(1, 32, 31, 45, 80), tokens=128, width=3584, pooled=True, concat=33,
        post=("txt_attn.proj", "txt_mlp"), small={"depth": 2}, small_latent=(1, 32, 3, 16, 16)),
    "Z-Image-Turbo, 1024 px": dict(
        text_rows=128, image_tokens=64 * 64,
        config="ZImage", unet={"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840,
                               "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30,
                               "qk_norm": True, "cap_feat_dim": 2560, "axes_dims": [32, 48, 48],
                               "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
                               "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32},
        latent=(1, 16, 128, 128), tokens=128, width=2560, single_stream=True, pooled_none=True,
        post=("attention.out", "attention_norm2", "feed_forward"), small={"n_layers": 2},
        small_latent=(1, 16, 32, 32)),
    "HiDream-I1, 1024 px": dict(
        text_rows=3 * 128, image_tokens=64 * 64,
        config="HiDream", unet={"image_model": "hidream", "attention_head_dim": 128, "axes_dims_rope": [64, 32, 32],
                                "caption_channels": [4096, 4096], "max_resolution": [128, 128], "in_channels": 16,
                                "llama_layers": list(range(32)) + [31] * 16, "num_attention_heads": 20,
                                "num_routed_experts": 4, "num_activated_experts": 2, "num_layers": 16,
                                "num_single_layers": 32, "out_channels": 16, "patch_size": 2, "text_emb_dim": 2048},
        latent=(1, 16, 128, 128), tokens=128, width=4096, pooled=2048, llama=(32, 128, 4096),
        post=("block.attn1.to_out_t", "block.ff_t"),
        small={"num_layers": 1, "num_single_layers": 1, "llama_layers": [31, 31]}, small_latent=(1, 16, 32, 32),
        no_meta_flops="its MoE routes tokens by value (torch.nonzero), which the meta device cannot count"),
}


def build(name, device=None, small=False):
    import torch
    import comfy.model_patcher
    import comfy.supported_models
    spec = FAMILIES[name]
    cfg = dict(spec["unet"], **(spec["small"] if small else {}))
    model = getattr(comfy.supported_models, spec["config"])(cfg).get_model({}, device=device)
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    return model, patcher


def conds(spec, batch, device, tokens=None):
    import torch
    tokens = tokens or spec["tokens"]
    c = {"c_crossattn": torch.empty(batch, tokens, spec["width"], device=device)}
    if spec.get("pooled"):
        c["y"] = torch.empty(batch, 16 if spec["pooled"] is True else spec["pooled"], device=device)
    if spec.get("llama"):
        c["encoder_hidden_states_llama3"] = torch.empty(batch, *spec["llama"], device=device)
    if spec.get("guidance"):
        c["guidance"] = torch.zeros(batch, device=device)
    if spec.get("single_stream"):
        c["num_tokens"] = tokens
    if spec.get("concat"):
        lat = spec["latent"]
        c["c_concat"] = torch.empty(batch, spec["concat"], *lat[2:], device=device)
    return c


def block_name(dm, patch):
    """The module name of the block a NASA slot patch (dit replace patch or object patch) stands for."""
    from comfyui_nasa.nasa_core.adapters.joint_rows import RowsObjectBlock
    inner = patch.patch if isinstance(patch, RowsObjectBlock) else patch
    block = dict(inner.family.block_lists(dm))[inner.kind][inner.index]
    return next(name for name, module in dm.named_modules() if module is block)


def last_block_post(counts_nasa, counts_none, spec, last_name):
    """FLOPs NASA spends in the last steered block's post-attention text modules (beyond the floor)."""
    extra = 0
    for name, n in counts_nasa.items():
        if f".{last_name}." not in name + ".":
            continue
        tail = name.split(f".{last_name}.", 1)[-1] if f".{last_name}." in name else ""
        if tail in spec["post"]:  # the module itself (its children are counted in it)
            extra += n - counts_none.get(name, 0)
    return extra


def flops_for(name, alpha, small=False):
    """small: the reduced configuration the wall-clock part times (its FLOPs predict the time ratio)."""
    import torch
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    meta = torch.device("meta")
    spec = FAMILIES[name]
    if small:
        spec = dict(spec, latent=spec["small_latent"])
    model, patcher = build(name, device=meta, small=small)
    dm = model.diffusion_model
    neg_tokens = spec.get("neg_tokens", spec["tokens"])
    negative = torch.zeros(1, neg_tokens, spec["width"])  # a CONDITIONING tensor on the CPU; moved to meta by NASA
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])
    model.model_sampling.to(meta)

    def apply_model_on_meta(x, t, **c):
        return model.apply_model(x.to(meta), t.to(meta), **c)

    x1, x2 = torch.zeros(spec["latent"]), torch.zeros((2,) + tuple(spec["latent"][1:]))
    c1, c2 = conds(spec, 1, meta), conds(spec, 2, meta)
    out = dict(model=name, tokens=spec["tokens"], negative_tokens=neg_tokens)
    with torch.inference_mode():
        base, counts_none = count_module_flops(lambda: call(patcher, apply_model_on_meta, x1, sigma, c1, [0]))
        cfg, _ = count_flops(lambda: call(patcher, apply_model_on_meta, x2, sigma, c2, [0, 1]))
        for label, blocks in (("default", None), ("all", {"all"})):
            kw = {} if blocks is None else {"blocks": blocks}
            if spec.get("llama"):  # HiDream's negative carries its Llama states
                kw["negative_extra"] = {"conditioning_llama3": torch.zeros(1, *spec["llama"])}
            patched = apply_nasa(patcher, negative, alpha, **kw)
            run = nasa_run_of(patched)
            steered = [p for _, _, p in run.slots if p.apply]
            patched.patch_model(load_weights=False)  # object patches (Z-Image's layers), as ComfyUI's loader does
            try:
                total, counts = count_module_flops(lambda: call(patched, apply_model_on_meta, x1, sigma, c1, [0]))
            finally:
                patched.unpatch_model(unpatch_weights=False)
            if run.calls_applied < 1:
                raise RuntimeError(f"{name}: NASA did not apply in the counted call")
            waste = last_block_post(counts, counts_none, spec, block_name(dm, run.slots[-1][2]))
            out[label] = dict(flops=total, steered=len(steered), blocks=len(run.slots), waste=waste,
                              floor=total - base - waste)
    out.update(base=base, cfg=cfg, depth=len(getattr(dm, "double_blocks", [])) + len(getattr(dm, "single_blocks", []))
               + len(getattr(dm, "transformer_blocks", [])) + len(getattr(dm, "layers", [])))
    del model, patcher
    gc.collect()
    return out


def wallclock_for(name, alpha, reps):
    import torch
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    sys.path.insert(0, str(ROOT / "tests"))
    from nasa_testkit import init_weights
    spec = FAMILIES[name]
    model, patcher = build(name, small=True)
    init_weights(model.diffusion_model, 0)
    g = torch.Generator().manual_seed(0)
    neg_tokens = spec.get("neg_tokens", spec["tokens"])
    negative = torch.randn(1, neg_tokens, spec["width"], generator=g)
    extra = {"conditioning_llama3": torch.randn(1, *spec["llama"], generator=g)} if spec.get("llama") else None
    patched = apply_nasa(patcher, negative, alpha, blocks={"all"}, negative_extra=extra)
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])
    lat = spec["small_latent"]

    def inputs(batch):
        c = conds(dict(spec, latent=lat), batch, "cpu")
        for k, v in c.items():
            if isinstance(v, torch.Tensor) and k != "guidance":
                c[k] = torch.randn(v.shape, generator=g) * 0.5
        return torch.randn((batch,) + tuple(lat[1:]), generator=g), c

    x1, c1 = inputs(1)
    x2, c2 = inputs(2)
    calls = {"none": lambda: call(patcher, model.apply_model, x1, sigma, c1, [0]),
             "nasa": lambda: call(patched, model.apply_model, x1, sigma, c1, [0]),
             "cfg": lambda: call(patcher, model.apply_model, x2, sigma, c2, [0, 1])}
    times = {k: [] for k in calls}
    with torch.inference_mode():
        for _ in range(reps + 1):  # the first round warms up
            for k, fn in calls.items():
                if k == "nasa":
                    patched.patch_model(load_weights=False)
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if k == "nasa":
                    patched.unpatch_model(unpatch_weights=False)
                times[k].append(dt)
    times = {k: v[1:] for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = {k: statistics.median(a / b for a, b in zip(times[k], times["none"])) for k in ("nasa", "cfg")}
    out = dict(model=name, latent=list(lat), nasa_ratio=med["nasa"] / med["none"], cfg_ratio=med["cfg"] / med["none"],
               paired_nasa=paired["nasa"], paired_cfg=paired["cfg"], median_s=med, times_s=times)
    if not spec.get("no_meta_flops"):
        small = flops_for(name, alpha, small=True)
        out["flops_predict"] = small["all"]["flops"] / small["base"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--skip-wallclock", action="store_true")
    p.add_argument("--families", nargs="*", default=list(FAMILIES))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "families_latest"))
    args = p.parse_args(argv)
    runtime = setup_runtime("cpu")
    meta = run_metadata(runtime, args.alpha)
    rows, clocks = [], []
    for name in args.families:
        why = FAMILIES[name].get("no_meta_flops")
        if why:
            print(f"{name}: no FLOP count: {why}", flush=True)
            continue
        r = flops_for(name, args.alpha)
        rows.append(r)
        b = r["base"]
        print(f"{name}: {b / 1e12:.3f} TFLOP; NASA default {pct(r['default']['flops'] - b, b):+.2f}% "
              f"(floor {pct(r['default']['floor'], b):+.2f}%), all {pct(r['all']['flops'] - b, b):+.2f}%, "
              f"CFG {pct(r['cfg'] - b, b):+.1f}%", flush=True)
    la = la_after = load_average()
    if not args.skip_wallclock:
        for name in args.families:
            c = wallclock_for(name, args.alpha, args.reps)
            clocks.append(c)
            print(f"{name}: CPU NASA/none {c['nasa_ratio']:.3f}x (paired {c['paired_nasa']:.3f}x, FLOPs predict "
                  f"{c.get('flops_predict', float('nan')):.3f}x), CFG/none {c['cfg_ratio']:.3f}x", flush=True)
    la_after = load_average()
    lines = ["FLOPs of one denoiser call (meta device, ComfyUI's real configs; the negative as long as the positive, "
             "FLUX.2's positive left-padded to 512 by ComfyUI, its negative 128 real tokens).", "",
             "| family, workload | one call | NASA, default blocks (steered / patched of all) | its floor | NASA / floor "
             "| NASA, all blocks | its floor | CFG |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        b, d, a = r["base"], r["default"], r["all"]
        lines.append(f"| {r['model']}, {r['tokens']} text tokens | {b / 1e12:.2f} TFLOP | {pct(d['flops'] - b, b):+.2f}% "
                     f"({d['steered']} / {d['blocks']} of {r['depth']}) | {pct(d['floor'], b):+.2f}% | "
                     f"{(d['flops'] - b) / d['floor']:.3f}x | {pct(a['flops'] - b, b):+.2f}% | {pct(a['floor'], b):+.2f}% "
                     f"| {pct(r['cfg'] - b, b):+.0f}% |")
    lines += ["", "Where instability may start (arithmetic on the workloads above, not a measurement on real weights): "
              "with attention spread evenly, the positive text's share of an image query's joint attention is "
              "T / (T + N) (T text rows the model attends, N image tokens), while alpha * Z- has the size of alpha "
              "times a value row; their ratio at alpha 0.1 is 0.1 / share. bench_joint.py measured 1.7x this way on "
              "FLUX.1 at 256 tokens (|Z-| about 17x the text share of Z+).", "",
              "| family, workload | text rows T | image tokens N | text share T/(T+N) | 0.1 x Z- / text share |",
              "| --- | --- | --- | --- | --- |"]
    for name in args.families:
        f = FAMILIES[name]
        share = f["text_rows"] / (f["text_rows"] + f["image_tokens"])
        lines.append(f"| {name} | {f['text_rows']} | {f['image_tokens']} | {100 * share:.2f}% | {0.1 / share:.1f}x |")
    skipped = [f"{n}: {FAMILIES[n]['no_meta_flops']}" for n in args.families if FAMILIES[n].get("no_meta_flops")]
    if skipped:
        lines += ["", "No FLOP count for " + "; ".join(skipped) + "."]
    if clocks:
        lines += ["", f"CPU wall-clock, real width, 2 blocks (all steered), reduced latent; ratio of medians of "
                  f"{args.reps} interleaved repetitions (median of per-repetition ratios in brackets), next to the "
                  f"ratio the same configuration's FLOPs predict; load average before / after: {la} / {la_after} "
                  "(a shared machine: ratios far from the FLOP prediction are noise).", "",
                  "| family | latent | NASA / none | FLOPs predict | CFG / none |", "| --- | --- | --- | --- | --- |"]
        for c in clocks:
            pred = f"{c['flops_predict']:.3f}x" if "flops_predict" in c else "-"
            lines.append(f"| {c['model']} | {c['latent']} | {c['nasa_ratio']:.3f}x ({c['paired_nasa']:.3f}x) | {pred} "
                         f"| {c['cfg_ratio']:.3f}x ({c['paired_cfg']:.3f}x) |")
    write_report(args.out, "\n".join(lines), {"meta": meta, "flops": rows, "wallclock": clocks})


if __name__ == "__main__":
    main()
