#!/usr/bin/env python
"""What NASA costs on ComfyUI's real UNets (SD1.5, SD2.1, SDXL), measured through the real patch path.

Two parts, one run:

(a) FLOPs of one denoiser call, counted with torch.utils.flop_counter.FlopCounterMode on the meta device
    (on CPU tensors the counter sees 0 FLOPs for scaled_dot_product_attention; on meta it is counted).
    The UNet configuration is ComfyUI's own: comfy.model_detection picks it from its table of known UNets
    and comfy.supported_models builds the BaseModel; nothing is re-typed here. Counted: the call without
    NASA, the first NASA call (the negative's K/V projected), a later NASA call (K/V cached), CFG (cond and
    uncond batched, as calc_cond_batch does) and CFG + NASA, next to the floor computed independently from
    the layer shapes: the negative through each cross-attention layer's W_k and W_v, one more
    softmax(QK^T)V per layer, and Z- subtracted (1 FLOP per element: alpha folds into the cached V-; this
    is how shared/notes/targets.md counts it, and the script checks that it reproduces those numbers).
    FlopCounterMode counts matmuls, convolutions and attention, never elementwise ops, so the script also
    lists every aten op NASA adds to a call. SD2.1 is built with ComfyUI's SD20 class (eps or v-prediction
    does not change the FLOPs).

(b) CPU (or CUDA) wall-clock of NASA / none and CFG / none at real widths (random weights) and a small
    resolution, median of interleaved repetitions, plus the peak memory each variant allocates during a
    call (CPU: every allocation and free the CPU allocator reports to torch.profiler with
    profile_memory=True, replayed in time order; CUDA: torch.cuda.max_memory_allocated).

The ComfyUI runtime comes from the pack's nasa_core/comfy_env.py: the tree in $COMFYUI_PATH if set, else the
PyPI copy in .deps/comfy_pypi. The NASA calls go through apply_nasa and the patched ModelPatcher's model_options exactly
as comfy.samplers.calc_cond_batch calls them: model_options["model_function_wrapper"](model.apply_model,
{"input", "timestep", "c": {..., "transformer_options": copy + cond_or_uncond/uuids/sigmas}, "cond_or_uncond"}).
On meta one shim is needed: the wrapper gets the latent and sigma as (tiny) CPU tensors, because NASARun
reads the sigma and builds alpha on the latent's device, which meta tensors do not allow; the shim moves
them to meta before BaseModel.apply_model (model_sampling is moved to meta too). Everything that does
arithmetic runs on meta.

    python benchmarks/bench_unet.py                      # everything: ~5.5 min on 2 idle CPU cores
    python benchmarks/bench_unet.py --skip-wallclock     # FLOPs only, seconds
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_unet.py --skip-wallclock
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchlib import (FLOPS_COLUMNS, count_flops, count_ops, cpu_peak_bytes, cuda_peak_bytes,  # noqa: E402
                      denoiser_call, flops_row, load_average, mib, nasa_run_of, op_diff, pct, run_metadata,
                      setup_runtime)

# Model name -> what ComfyUI's detector needs to recognise it, the resolution the floor is quoted at,
# ComfyUI's config class name, and the numbers of shared/notes/targets.md (base TFLOP, floor TFLOP, floor %).
MODELS = {
    "SD1.5": dict(context=768, depth=[1, 1, 1, 0], adm=None, px=512, config_class="SD15",
                  target=(0.803, 0.0065, 0.81)),
    "SD2.1": dict(context=1024, depth=[1, 1, 1, 0], adm=None, px=768, config_class="SD20",
                  target=(2.149, 0.0120, 0.56)),
    "SDXL": dict(context=2048, depth=[0, 2, 10], adm=2816, px=1024, config_class="SDXL",
                 target=(6.761, 0.0849, 1.26)),
}
TOKENS = 77
TOLERATED_RATIO = 1.05  # NASA's overhead may exceed the floor by at most this factor before we ask why


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="FLOPs (meta device, real ComfyUI UNet configs) and wall-clock / peak memory of NASA "
                    "vs no NASA vs CFG on SD1.5 / SD2.1 / SDXL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--reps", type=int, default=5,
                   help="timed repetitions per variant and model in the wall-clock part (after the warm-up rounds)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed warm-up rounds (all variants) before the timed repetitions")
    p.add_argument("--skip-wallclock", action="store_true", help="only count FLOPs (part a)")
    p.add_argument("--skip-flops", action="store_true", help="only time (part b)")
    p.add_argument("--resolution", type=int, default=256,
                   help="image side in pixels for the wall-clock part (latent = resolution / 8)")
    p.add_argument("--wallclock-models", default="SD1.5,SDXL",
                   help="comma-separated models for the wall-clock part (SD1.5, SD2.1, SDXL)")
    p.add_argument("--layer-reps", type=int, default=5,
                   help="repetitions of the cross-attention-layers-only timing at the floor's resolution, with a "
                        "profile of which ops NASA's extra time goes to (0: skip)")
    p.add_argument("--alpha", type=float, default=0.1, help="NASA scale")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device for the wall-clock part")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "unet_latest"),
                   help="output path without extension: writes <out>.md and <out>.json")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------------------
# ComfyUI runtime and the pack, set up the way tests/conftest.py does


# ------------------------------------------------------------------------------------------------------------
# Real UNet configurations and models


def real_model_config(name: str):
    """ComfyUI's own config for this UNet: its detector's table of known diffusers UNets, matched on the
    few shapes a checkpoint would show (key skeleton of meta tensors), then its supported_models class."""
    import torch
    import comfy.model_detection as md

    spec = MODELS[name]
    meta = torch.device("meta")
    sd = {"conv_in.weight": torch.empty(320, 4, 3, 3, device=meta)}
    for i, depth in enumerate(spec["depth"]):
        for r in range(2):
            sd[f"down_blocks.{i}.resnets.{r}.conv1.weight"] = torch.empty(1, device=meta)
            for t in range(depth):
                sd[f"down_blocks.{i}.attentions.{r}.transformer_blocks.{t}.attn2.to_k.weight"] = \
                    torch.empty(320, spec["context"], device=meta)
    if spec["adm"]:
        sd["add_embedding.linear_1.weight"] = torch.empty(1280, spec["adm"], device=meta)
    unet_config = md.unet_config_from_diffusers_unet(sd, dtype=torch.float32)
    if unet_config is None:
        raise RuntimeError(f"ComfyUI's detector did not recognise the {name} skeleton")
    model_config = md.model_config_from_unet_config(unet_config, {})
    if type(model_config).__name__ != spec["config_class"]:
        raise RuntimeError(f"{name}: ComfyUI picked {type(model_config).__name__}, expected {spec['config_class']}")
    return model_config


def build(name: str, device=None):
    """(BaseModel, ModelPatcher) for the real config; parameters on ``device`` (meta: no memory)."""
    import torch
    import comfy.model_patcher

    model_config = real_model_config(name)
    model = model_config.get_model({}, device=device)
    model.eval()
    load = torch.device("cpu") if device is None or str(device) == "meta" else torch.device(device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load, offload_device=torch.device("cpu"))
    return model, patcher


def cross_attention_modules(model):
    """(name, module) of every text cross-attention (attn2) in the UNet, found by name only."""
    return [(n, m) for n, m in model.diffusion_model.named_modules() if n.endswith(".attn2")]


# ------------------------------------------------------------------------------------------------------------
# (a) FLOPs on meta


def flops_for(name: str, alpha: float, px: int = None):
    import torch
    from comfyui_nasa.nasa_core.adapters import apply_nasa

    spec = MODELS[name]
    px = px or spec["px"]
    meta = torch.device("meta")
    model, patcher = build(name, device=meta)
    ctx_w = spec["context"]
    g = torch.Generator().manual_seed(0)
    negative = torch.randn(1, TOKENS, ctx_w, generator=g)  # the negative as a CONDITIONING tensor (CPU)
    patched = apply_nasa(patcher, negative, alpha)
    run = nasa_run_of(patched)
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])  # mid-schedule, in NASA's window
    model.model_sampling.to(meta)

    def apply_model_on_meta(x, t, **c):
        return model.apply_model(x.to(meta), t.to(meta), **c)

    lat = px // 8

    def inputs(batch):
        x = torch.zeros(batch, 4, lat, lat)  # CPU: NASARun reads its device; moved to meta by the shim
        ctx = torch.empty(batch, TOKENS, ctx_w, device=meta)
        y = torch.empty(batch, spec["adm"], device=meta) if spec["adm"] else None
        return x, ctx, y

    # The floor, from the layer shapes only: the query tokens of each attn2 are recorded in the plain call.
    layers = cross_attention_modules(model)
    query_tokens = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: query_tokens.__setitem__(n, args[0].shape[1]))
             for n, m in layers]
    x1, c1, y1 = inputs(1)
    with torch.inference_mode():
        base, base_ops = count_flops(lambda: denoiser_call(patcher, apply_model_on_meta, x1, sigma, c1, y1, [0]))
    for h in hooks:
        h.remove()
    if len(query_tokens) != len(layers):
        raise RuntimeError(f"{name}: saw {len(query_tokens)} of {len(layers)} cross-attention layers run")
    floor_proj = floor_attn = floor_sub = 0
    for n, m in layers:
        q_tok, c_in = query_tokens[n], m.to_k.in_features
        inner_k, inner_v = m.to_k.out_features, m.to_v.out_features
        floor_proj += 2 * TOKENS * c_in * inner_k + 2 * TOKENS * c_in * inner_v   # negative @ W_k, @ W_v
        floor_attn += 2 * q_tok * TOKENS * inner_k + 2 * q_tok * TOKENS * inner_v  # Q K-^T, P V-
        floor_sub += q_tok * inner_v      # Z+ - Z- (alpha folds into the cached V-), as targets.md counts it
    floor = floor_proj + floor_attn + floor_sub

    # The projection alone, counted: each layer's own to_k / to_v on the negative.
    neg_meta = negative.to(meta)

    def project_all():
        for _, m in layers:
            m.to_k(neg_meta)
            m.to_v(neg_meta)

    with torch.inference_mode():
        proj_counted, _ = count_flops(project_all)
        computed0 = run.cache.computed
        first, first_ops = count_flops(lambda: denoiser_call(patched, apply_model_on_meta, x1, sigma, c1, y1, [0]))
        computed1 = run.cache.computed
        later, later_ops = count_flops(lambda: denoiser_call(patched, apply_model_on_meta, x1, sigma, c1, y1, [0]))
        computed2 = run.cache.computed
        x2, c2, y2 = inputs(2)
        cfg, _ = count_flops(lambda: denoiser_call(patcher, apply_model_on_meta, x2, sigma, c2, y2, [0, 1]))
        cfg_nasa, _ = count_flops(lambda: denoiser_call(patched, apply_model_on_meta, x2, sigma, c2, y2, [0, 1]))
        computed3 = run.cache.computed
        # Every op NASA adds to a later call (batch 1 and CFG batch 2), FLOPs or not.
        ops_none = count_ops(lambda: denoiser_call(patcher, apply_model_on_meta, x1, sigma, c1, y1, [0]))
        ops_nasa = count_ops(lambda: denoiser_call(patched, apply_model_on_meta, x1, sigma, c1, y1, [0]))
        ops_cfg = count_ops(lambda: denoiser_call(patcher, apply_model_on_meta, x2, sigma, c2, y2, [0, 1]))
        ops_cfg_nasa = count_ops(lambda: denoiser_call(patched, apply_model_on_meta, x2, sigma, c2, y2, [0, 1]))
    n_layers = len(layers)
    if computed1 - computed0 != n_layers:
        raise RuntimeError(f"{name}: the first NASA call projected {computed1 - computed0} of {n_layers} layers")
    cache_hit = computed2 == computed1
    cfg_cache_hit = computed3 == computed2
    steady = later if cache_hit else first - proj_counted
    note = ("K/V cache hit on meta: later call counted directly" if cache_hit else
            "K/V cache missed on meta: later call = first call - projection FLOPs counted separately")
    if not cfg_cache_hit:
        cfg_nasa -= proj_counted
        note += "; CFG+NASA call missed the cache too (projection subtracted)"
    del model, patcher, patched, run
    gc.collect()
    return dict(
        model=name, resolution=px, latent=[lat, lat], cross_attention_layers=n_layers, tokens=TOKENS,
        query_tokens=dict(query_tokens),
        base=base, nasa_first=first, nasa_later=steady, nasa_later_counted_directly=cache_hit,
        cfg=cfg, cfg_nasa=cfg_nasa, projection_counted=proj_counted,
        floor=floor, floor_projection=floor_proj, floor_attention=floor_attn, floor_subtraction=floor_sub,
        floor_cached=floor_attn + floor_sub, floor_matmul=floor_proj + floor_attn,
        overhead_first=first - base, overhead_later=steady - base, overhead_cfg_nasa=cfg_nasa - cfg,
        ops_first_minus_base=op_diff(first_ops, base_ops), ops_later_minus_base=op_diff(later_ops, base_ops),
        ops_base=base_ops, note=note,
        dispatched_ops_nasa_minus_none=op_diff(ops_nasa, ops_none),
        dispatched_ops_cfg_nasa_minus_cfg=op_diff(ops_cfg_nasa, ops_cfg),
    )


def check_targets(r):
    """Does the floor reproduce shared/notes/targets.md (to its printed precision)?"""
    t_base, t_floor, t_pct = MODELS[r["model"]]["target"]
    base_t, floor_t = r["base"] / 1e12, r["floor"] / 1e12
    pct = 100 * r["floor"] / r["base"]
    ok = abs(base_t - t_base) < 0.0005 + 1e-9 and abs(floor_t - t_floor) < 0.00005 + 1e-9 and abs(pct - t_pct) < 0.005 + 1e-9
    return ok, f"base {base_t:.3f} (target {t_base:.3f}), floor {floor_t:.4f} (target {t_floor:.4f}), " \
               f"{pct:.2f}% (target {t_pct:.2f}%)"


# ------------------------------------------------------------------------------------------------------------
# (b) wall-clock and peak memory


def layer_bench(model, patched, run, query_tokens, reps, device, batch):
    """The cross-attention layers alone, at the shapes of the floor resolution: ComfyUI's attention (what an
    unpatched attn2 runs), NASA's installed patch (cached K/V, the call state from NASARun.plan), and the
    floor written out by hand (one more attention over the same cached K/V with alpha folded into V-, then
    an in-place subtraction on the rows NASA applies to). Interleaved passes over all layers; medians.
    Also profiles one pass of each to say which ops NASA's extra time goes to."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from comfyui_nasa.nasa_core.adapters.comfy_runtime import comfy_attention_fn

    dev = torch.device(device)
    names = {id(m): n for n, m in model.diffusion_model.named_modules()}
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    cond_or_uncond = [0] if batch == 1 else [0, 1]
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))] * batch, device=dev)
    g = torch.Generator().manual_seed(7)
    shared = {}

    def rand(*shape):
        key = shape
        if key not in shared:
            shared[key] = torch.randn(*shape, generator=g).to(dev)
        return shared[key]

    layers = []
    for key, patch in replace.items():
        attn = patch.attn
        inner, heads = attn.to_q.out_features, attn.heads
        state = run.plan(torch.zeros(batch, 4, 8, 8, device=dev), sigma, {}, cond_or_uncond)
        extra = {"cond_or_uncond": cond_or_uncond, "sigmas": sigma[:1], "block": (key[0], key[1]),
                 "block_index": key[2], "n_heads": heads, "dim_head": inner // heads, "attn_precision": None,
                 run.state_key: state}
        q = rand(batch, query_tokens[names[id(attn)]], inner)
        k, v = rand(batch, TOKENS, inner), rand(batch, TOKENS, inner)
        k_neg, v_neg = run.cache.project(attn, key, state, q.dtype, q.device)  # cached: no projection here
        rows = state.rows or list(range(batch))
        lo, n_rows = rows[0], len(rows)
        assert rows == list(range(lo, lo + n_rows))
        v_neg_scaled = v_neg * float(state.alpha.reshape(-1)[0])
        layers.append((patch, extra, q, k, v, k_neg, v_neg_scaled, heads, lo, n_rows))
    computed = run.cache.computed

    def base_pass():
        for patch, extra, q, k, v, kn, vn, heads, lo, n in layers:
            comfy_attention_fn(extra)(q, k, v, heads)

    def nasa_pass():
        for patch, extra, q, k, v, kn, vn, heads, lo, n in layers:
            patch(q, k, v, extra)

    def floor_pass():
        for patch, extra, q, k, v, kn, vn, heads, lo, n in layers:
            attend = comfy_attention_fn(extra)
            z = attend(q, k, v, heads)
            z.narrow(0, lo, n).sub_(attend(q.narrow(0, lo, n), kn, vn, heads))

    passes = {"base": base_pass, "nasa": nasa_pass, "floor": floor_pass}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for fn in passes.values():
        fn()
    times = {k: [] for k in passes}
    for _ in range(reps):
        for k, fn in passes.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    if run.cache.computed != computed:
        raise RuntimeError("the layer benchmark projected the negative again (cache miss)")
    med = {k: statistics.median(v) for k, v in times.items()}

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    per_op = {}
    for k in ("base", "nasa", "floor"):
        with quiet_fd2(), profile(activities=acts) as prof:
            passes[k]()
            sync()
        ops = {}
        for e in prof.key_averages():
            t_us = getattr(e, "self_device_time_total", 0) if device == "cuda" else e.self_cpu_time_total
            if t_us:
                ops[e.key] = ops.get(e.key, 0.0) + t_us / 1e3
        per_op[k] = ops
    nasa_extra_ops = op_diff(per_op["nasa"], per_op["base"])
    floor_extra_ops = op_diff(per_op["floor"], per_op["base"])
    return dict(batch=batch, layers=len(layers), reps=reps, median_s=med, times_s=times,
                nasa_extra_s=med["nasa"] - med["base"], floor_extra_s=med["floor"] - med["base"],
                ratio_extra=(med["nasa"] - med["base"]) / max(med["floor"] - med["base"], 1e-12),
                nasa_extra_ms_by_op={k: round(v, 3) for k, v in sorted(nasa_extra_ops.items(), key=lambda kv: -abs(kv[1]))},
                floor_extra_ms_by_op={k: round(v, 3) for k, v in sorted(floor_extra_ops.items(), key=lambda kv: -abs(kv[1]))})


def wallclock_for(name: str, px: int, reps: int, warmup: int, alpha: float, device: str, seed: int,
                  layer_reps: int = 0):
    import torch
    from tqdm import tqdm
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from nasa_testkit import init_weights

    spec = MODELS[name]
    dev = torch.device(device)
    t0 = time.perf_counter()
    model, patcher = build(name, device=None)
    init_weights(model.diffusion_model, seed)
    if device != "cpu":
        model.to(dev)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.diffusion_model.parameters())
    n_layers = len(cross_attention_modules(model))
    g = torch.Generator().manual_seed(seed + 1)
    ctx_w, lat = spec["context"], px // 8
    negative = torch.randn(1, TOKENS, ctx_w, generator=g).to(dev)
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))]).to(dev)
    x1 = (torch.randn(1, 4, lat, lat, generator=g) * float(sigma)).to(dev)
    ctx1 = torch.randn(1, TOKENS, ctx_w, generator=g).to(dev)
    y1 = torch.randn(1, spec["adm"], generator=g).to(dev) if spec["adm"] else None
    x2, ctx2 = torch.cat([x1, x1]), torch.cat([ctx1, torch.randn(1, TOKENS, ctx_w, generator=g).to(dev)])
    y2 = torch.cat([y1, y1]) if y1 is not None else None
    patched = apply_nasa(patcher, negative, alpha)
    run = nasa_run_of(patched)
    apply_model = model.apply_model

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fresh = {}  # a new NASA clone (empty K/V cache) for each timed first call, made outside the timed region

    def call(variant):
        if variant == "none":
            return denoiser_call(patcher, apply_model, x1, sigma, ctx1, y1, [0])
        if variant == "nasa":
            return denoiser_call(patched, apply_model, x1, sigma, ctx1, y1, [0])
        if variant == "nasa_first":
            return denoiser_call(fresh["p"], apply_model, x1, sigma, ctx1, y1, [0])
        if variant == "cfg":
            return denoiser_call(patcher, apply_model, x2, sigma, ctx2, y2, [0, 1])
        if variant == "cfg_nasa":
            return denoiser_call(patched, apply_model, x2, sigma, ctx2, y2, [0, 1])
        raise KeyError(variant)

    order = ["none", "nasa", "nasa_first", "cfg", "cfg_nasa"]
    times = {k: [] for k in order}
    cpu_times = {k: [] for k in order}  # process CPU seconds: less sensitive to other processes on the CPU
    load = [load_average()]
    with torch.inference_mode():
        out_none, out_nasa = call("none"), call("nasa")
        diff = float((out_nasa - out_none).abs().max())
        if run.calls_applied < 1 or run.cache.computed != n_layers or diff == 0.0:
            raise RuntimeError(f"{name}: NASA was not applied (calls {run.calls_applied}, projections "
                               f"{run.cache.computed}, max |nasa-none| {diff})")
        del out_none, out_nasa
        # Warm-up rounds: the first calls of a process pay for page faults / allocator growth, not for NASA.
        for _ in tqdm(range(warmup), desc=f"{name} {px}px warm-up", unit="round", file=sys.stderr):
            for k in order:
                fresh["p"] = apply_nasa(patcher, negative, alpha)
                call(k)
        computed_after_warmup = run.cache.computed
        for _ in tqdm(range(reps), desc=f"{name} {px}px {device} reps", unit="rep", file=sys.stderr):
            for k in order:  # interleaved: none, nasa, nasa_first, cfg, cfg_nasa, none, nasa, ...
                fresh["p"] = apply_nasa(patcher, negative, alpha)
                sync()
                t, c = time.perf_counter(), time.process_time()
                call(k)
                sync()
                times[k].append(time.perf_counter() - t)
                cpu_times[k].append(time.process_time() - c)
        if run.cache.computed != computed_after_warmup:
            raise RuntimeError(f"{name}: the K/V cache missed during the timed calls")
        load.append(load_average())

        # Peak memory of one call of each variant (nasa_first: a fresh clone, its cache empty).
        peak = cpu_peak_bytes if device == "cpu" else cuda_peak_bytes
        memory = {}
        for k in order:
            fresh["p"] = apply_nasa(patcher, negative, alpha)
            memory[k] = peak(lambda: call(k))
        layer_results = {}
        if layer_reps > 0:
            query_tokens = flops_for(name, alpha)["query_tokens"]  # at the floor's resolution (meta, cheap)
            for label, batch in (("batch1", 1), ("cfg", 2)):
                layer_results[label] = layer_bench(model, patched, run, query_tokens, layer_reps, device, batch)
                layer_results[label]["resolution"] = spec["px"]
    cache_bytes = sum(t.numel() * t.element_size() for t in run.cache.tensors())
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_times.items()}

    def paired(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    result = dict(
        model=name, resolution=px, latent=[lat, lat], device=device, reps=reps, warmup_rounds=warmup,
        params=params, cross_attention_layers=n_layers, build_and_init_s=build_s,
        median_s=med, min_s=best, times_s=times, cpu_median_s=cpu_med, cpu_times_s=cpu_times,
        cpu_ratio_nasa=cpu_med["nasa"] / cpu_med["none"], cpu_ratio_nasa_first=cpu_med["nasa_first"] / cpu_med["none"],
        cpu_ratio_cfg=cpu_med["cfg"] / cpu_med["none"], load_average_before_after=load,
        ratio_nasa=med["nasa"] / med["none"], ratio_nasa_first=med["nasa_first"] / med["none"],
        ratio_cfg=med["cfg"] / med["none"], ratio_cfg_nasa=med["cfg_nasa"] / med["cfg"],
        paired_ratio_nasa=paired("nasa", "none"), paired_ratio_nasa_first=paired("nasa_first", "none"),
        paired_ratio_cfg=paired("cfg", "none"), paired_ratio_cfg_nasa=paired("cfg_nasa", "cfg"),
        min_ratio_nasa=best["nasa"] / best["none"], min_ratio_cfg=best["cfg"] / best["none"],
        peak_bytes={k: v[0] for k, v in memory.items()}, retained_bytes={k: v[1] for k, v in memory.items()},
        allocated_bytes={k: v[2] for k, v in memory.items()},
        nasa_cache_bytes=cache_bytes, max_abs_nasa_minus_none=diff, layers=layer_results,
    )
    del model, patcher, patched, fresh, run
    gc.collect()
    return result


# ------------------------------------------------------------------------------------------------------------
# Reporting


def flop_lines(r):
    b = r["base"]
    lines = [
        f"{r['model']} {r['resolution']}px (latent {r['latent'][0]}x{r['latent'][1]}), "
        f"{r['cross_attention_layers']} cross-attention layers, {r['tokens']}-token negative",
        f"  one call, no NASA          {b / 1e12:9.4f} TFLOP",
        f"  NASA, first call           {r['nasa_first'] / 1e12:9.4f} TFLOP  +{pct(r['overhead_first'], b):.3f}%"
        f"  (floor +{pct(r['floor'], b):.3f}%, overhead/floor {r['overhead_first'] / r['floor']:.3f})",
        f"  NASA, later call (cached)  {r['nasa_later'] / 1e12:9.4f} TFLOP  +{pct(r['overhead_later'], b):.3f}%"
        f"  (floor w/o projection +{pct(r['floor_cached'], b):.3f}%, overhead/that "
        f"{r['overhead_later'] / r['floor_cached']:.3f}; overhead/floor {r['overhead_later'] / r['floor']:.3f})",
        f"  CFG (batch 2)              {r['cfg'] / 1e12:9.4f} TFLOP  +{pct(r['cfg'] - b, b):.2f}%",
        f"  CFG + NASA (cached)        {r['cfg_nasa'] / 1e12:9.4f} TFLOP  +{pct(r['cfg_nasa'] - b, b):.2f}% "
        f"(NASA adds +{pct(r['overhead_cfg_nasa'], b):.3f}% of one call)",
        f"  floor: projection {r['floor_projection'] / 1e12:.5f} + attention {r['floor_attention'] / 1e12:.5f} "
        f"+ subtraction {r['floor_subtraction'] / 1e12:.6f} = {r['floor'] / 1e12:.5f} TFLOP; "
        f"projection counted through to_k/to_v {r['projection_counted'] / 1e12:.5f} TFLOP",
        f"  FlopCounterMode counts matmuls/convs/attention only, never elementwise ops: NASA's first-call overhead / "
        f"floor's matmul part (projection + attention) = {r['overhead_first'] / r['floor_matmul']:.4f}, later call / "
        f"attention part = {r['overhead_later'] / r['floor_attention']:.4f}",
        "  NASA - none by op, first call: " + ", ".join(f"{k} {v / 1e9:+.3f} GF" for k, v in r["ops_first_minus_base"].items()),
        "  NASA - none by op, later call: " + ", ".join(f"{k} {v / 1e9:+.3f} GF" for k, v in r["ops_later_minus_base"].items()),
        f"  {r['note']}",
        "  aten ops NASA adds to a later call (count): " + ", ".join(
            f"{k} {v:+d}" for k, v in sorted(r["dispatched_ops_nasa_minus_none"].items(), key=lambda kv: -abs(kv[1]))),
        "  ... to a CFG call (batch 2, NASA on the cond row): " + ", ".join(
            f"{k} {v:+d}" for k, v in sorted(r["dispatched_ops_cfg_nasa_minus_cfg"].items(), key=lambda kv: -abs(kv[1]))),
    ]
    return lines


def markdown(meta, flops, clocks):
    out = [f"Measured by `benchmarks/bench_unet.py` on {meta['date']}: ComfyUI {meta['runtime']}, torch "
           f"{meta['torch']}, alpha {meta['alpha']}.", ""]
    if flops:
        out += ["FLOPs of one denoiser call, batch 1, 77-token prompt and negative, counted with FlopCounterMode on "
                "the meta device through ComfyUI's real UNet configs and NASA's real patch path "
                "(`apply_nasa` -> `model_function_wrapper` -> `attn2` replace patches). The floor is the least work "
                "NASA must add, from the layer shapes: the negative through each layer's W_k and W_v, one more "
                "softmax(QK^T)V per layer, and the subtraction. Later calls reuse the cached negative K/V.", "",
                "| model, resolution " + FLOPS_COLUMNS.format(cached="floor without the projection"),
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [flops_row(f"{r['model']}, {r['resolution']} px", r) for r in flops]
        out += ["", "FlopCounterMode sees no elementwise op, so the overheads above miss the subtraction the floor "
                "includes (<0.002% of a call); against the floor's matmul part the ratio is 1.000x for every model."]
        out.append("")
    if clocks:
        dev = clocks[0]["device"]
        dev_s = meta["cpu"] if dev == "cpu" else meta.get("gpu", "cuda")
        out += [f"Wall-clock on {dev_s} ({meta['threads']} threads), random weights at real widths, batch 1 (CFG: 2), "
                f"medians of {clocks[0]['reps']} interleaved repetitions after {clocks[0]['warmup_rounds']} warm-up "
                f"rounds (ratio of medians; median of per-repetition ratios in brackets). NASA = later calls (negative "
                f"K/V cached); first call = a fresh NASA clone, K/V projected. Peak memory = most bytes allocated during "
                f"one call above what was held before it "
                f"({'torch.profiler allocation events' if dev == 'cpu' else 'torch.cuda.max_memory_allocated'}).", "",
                "| model, resolution | one call, no NASA | NASA / none | FLOPs predict | NASA first call / none | CFG / none | "
                "peak memory: none | NASA | CFG | NASA K/V cache |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in clocks:
            pk = r["peak_bytes"]
            pred = f"{r['flop_ratio_nasa_later']:.3f}x" if "flop_ratio_nasa_later" in r else "-"
            out.append(f"| {r['model']}, {r['resolution']} px | {r['median_s']['none']:.2f} s | {r['ratio_nasa']:.3f}x "
                       f"({r['paired_ratio_nasa']:.3f}x) | {pred} | {r['ratio_nasa_first']:.2f}x "
                       f"({r['paired_ratio_nasa_first']:.2f}x) | {r['ratio_cfg']:.2f}x ({r['paired_ratio_cfg']:.2f}x) | "
                       f"{mib(pk['none']):.0f} MiB | {mib(pk['nasa']):.0f} MiB ({mib(pk['nasa'] - pk['none']):+.1f}) | "
                       f"{mib(pk['cfg']):.0f} MiB | {mib(r['nasa_cache_bytes']):.1f} MiB |")
        out += ["", "On the CPU the peak is set by one allocation the size of the largest convolution weight "
                "(3x3, 2560 -> 1280 channels: 112.5 MiB, fp32) made on every call outside any aten op (oneDNN's "
                "weight reorder), the same with and without NASA; NASA's transient tensors stay below it. The bytes "
                "allocated per call are in the JSON.", ""]
        layer_rows = [(r, label, lr) for r in clocks for label, lr in r.get("layers", {}).items()]
        if layer_rows:
            out += ["The cross-attention layers alone at the floor's resolution (random q/k/v of the real shapes, NASA's "
                    "installed patch with its cached negative K/V, interleaved passes over all layers, medians): the "
                    "time NASA adds next to the floor written out by hand (one more attention over the same cached "
                    "K/V with alpha folded into V-, and an in-place subtraction on the rows NASA applies to).", "",
                    "| model, resolution, batch | attention alone | NASA adds | floor adds | NASA / floor | "
                    "NASA's largest extra ops (one profiled pass) |",
                    "| --- | --- | --- | --- | --- | --- |"]
            for r, label, lr in layer_rows:
                ops = ", ".join(f"{k.replace('aten::', '')} {v:+.0f} ms"
                                for k, v in list(lr["nasa_extra_ms_by_op"].items())[:5])
                out.append(f"| {r['model']}, {lr['resolution']} px, {'1' if label == 'batch1' else '2 (CFG, NASA on cond)'} | "
                           f"{lr['median_s']['base'] * 1e3:.0f} ms | +{lr['nasa_extra_s'] * 1e3:.0f} ms | "
                           f"+{lr['floor_extra_s'] * 1e3:.0f} ms | {lr['ratio_extra']:.2f}x | {ops} |")
            out.append("")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    runtime = setup_runtime(args.device)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = run_metadata(runtime, args.alpha, args.device)

    flops, clocks, problems = [], [], []
    if not args.skip_flops:
        print("\n== (a) FLOPs of one denoiser call (meta device, FlopCounterMode) ==", flush=True)
        for name in MODELS:
            r = flops_for(name, args.alpha)
            ok, msg = check_targets(r)
            r["matches_targets"], r["targets_check"] = ok, msg
            print("\n".join(flop_lines(r)))
            print(f"  targets.md: {'reproduced' if ok else 'NOT REPRODUCED'}: {msg}", flush=True)
            if not ok:
                problems.append(f"{name}: floor/base does not reproduce targets.md ({msg})")
            ratio = r["overhead_first"] / r["floor"]
            if ratio > TOLERATED_RATIO:
                problems.append(f"{name}: NASA's first-call overhead is {ratio:.3f}x the floor (> {TOLERATED_RATIO})")
            flops.append(r)
    if not args.skip_wallclock:
        print(f"\n== (b) wall-clock and peak memory, {args.resolution}px, {args.device} ==", flush=True)
        for name in [m.strip() for m in args.wallclock_models.split(",") if m.strip()]:
            if name not in MODELS:
                raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
            r = wallclock_for(name, args.resolution, args.reps, args.warmup, args.alpha, args.device, args.seed,
                              args.layer_reps)
            if args.device == "cpu" and not args.skip_flops:
                rf = flops_for(name, args.alpha, px=args.resolution)  # what the FLOPs predict at this size
                r["flop_ratio_nasa_later"] = rf["nasa_later"] / rf["base"]
                r["flop_ratio_nasa_first"] = rf["nasa_first"] / rf["base"]
            med, pk, lo = r["median_s"], r["peak_bytes"], r["min_s"]
            print(f"{name} {r['resolution']}px (latent {r['latent'][0]}x{r['latent'][1]}), {r['params'] / 1e6:.0f}M "
                  f"parameters, built+initialised in {r['build_and_init_s']:.0f}s; load average before/after "
                  f"{r['load_average_before_after']} on {os.cpu_count()} cores")
            print("  median s: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
                  + "\n  min s:    " + ", ".join(f"{k} {v:.3f}" for k, v in lo.items())
                  + "\n  CPU s:    " + ", ".join(f"{k} {v:.3f}" for k, v in r["cpu_median_s"].items())
                  + f"  (process CPU time, medians: NASA/none {r['cpu_ratio_nasa']:.3f}x, first call "
                  f"{r['cpu_ratio_nasa_first']:.3f}x, CFG/none {r['cpu_ratio_cfg']:.3f}x)")
            print(f"  NASA/none {r['ratio_nasa']:.3f}x (paired {r['paired_ratio_nasa']:.3f}x, min {r['min_ratio_nasa']:.3f}x)"
                  + (f"; FLOPs predict {r['flop_ratio_nasa_later']:.4f}x" if "flop_ratio_nasa_later" in r else ""))
            print(f"  NASA first call/none {r['ratio_nasa_first']:.3f}x (paired {r['paired_ratio_nasa_first']:.3f}x)"
                  + (f"; FLOPs predict {r['flop_ratio_nasa_first']:.4f}x" if "flop_ratio_nasa_first" in r else ""))
            print(f"  CFG/none {r['ratio_cfg']:.3f}x (paired {r['paired_ratio_cfg']:.3f}x, min {r['min_ratio_cfg']:.3f}x); "
                  f"(CFG+NASA)/CFG {r['ratio_cfg_nasa']:.3f}x (paired {r['paired_ratio_cfg_nasa']:.3f}x)")
            print("  peak MiB during a call: " + ", ".join(f"{k} {mib(v):.1f}" for k, v in pk.items())
                  + f"; NASA - none {mib(pk['nasa'] - pk['none']):+.2f} MiB (first call "
                  f"{mib(pk['nasa_first'] - pk['none']):+.2f}, CFG+NASA - CFG {mib(pk['cfg_nasa'] - pk['cfg']):+.2f}); "
                  f"K/V cache held {mib(r['nasa_cache_bytes']):.2f} MiB", flush=True)
            for label, lr in r["layers"].items():
                m = lr["median_s"]
                print(f"  cross-attention layers only, {lr['resolution']}px, {'batch 1' if label == 'batch1' else 'CFG batch 2 (NASA on the cond row)'}"
                      f", {lr['layers']} layers, median of {lr['reps']}: attention {m['base'] * 1e3:.1f} ms; NASA "
                      f"+{lr['nasa_extra_s'] * 1e3:.1f} ms, floor +{lr['floor_extra_s'] * 1e3:.1f} ms: NASA extra / floor "
                      f"extra {lr['ratio_extra']:.3f}")
                print("    NASA's extra by op (ms, one profiled pass): " + ", ".join(
                    f"{k} {v:+.1f}" for k, v in list(lr["nasa_extra_ms_by_op"].items())[:8]))
                print("    floor's extra by op (ms, one profiled pass): " + ", ".join(
                    f"{k} {v:+.1f}" for k, v in list(lr["floor_extra_ms_by_op"].items())[:8]))
                if lr["ratio_extra"] > TOLERATED_RATIO:
                    problems.append(f"{name} {label}: NASA's extra time in the cross-attention layers is "
                                    f"{lr['ratio_extra']:.2f}x the floor's (see the ops above)")
            print("  bytes allocated during one call (MiB): " + ", ".join(
                f"{k} {mib(v):.1f}" for k, v in r["allocated_bytes"].items()))
            la = r["load_average_before_after"]
            if any(v is not None and v > (os.cpu_count() or 1) * 1.25 for v in la):
                problems.append(f"{name} wall-clock: load average {la} above the {os.cpu_count()} cores: other "
                                "processes shared the CPU, the times are noisy (the interleaving and medians help)")
            clocks.append(r)

    md = markdown(meta, flops, clocks)
    print("\n== Markdown table ==\n")
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".md").write_text(md + "\n")
    Path(str(out) + ".json").write_text(json.dumps(dict(meta=meta, flops=flops, wallclock=clocks, problems=problems),
                                                   indent=1, default=str) + "\n")
    print(f"wrote {out}.md and {out}.json")
    if problems:
        print("\nNOTE:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
