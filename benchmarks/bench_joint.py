#!/usr/bin/env python
"""What NASA costs on the joint-attention DiTs (FLUX.1, SD3.5-Large), measured through the real patch path.

(a) FLOPs of one denoiser call on the meta device (FlopCounterMode; matmuls, convolutions and attention only),
    ComfyUI's real configurations: FLUX.1 (19 double + 38 single blocks, 3072 wide) at 1024 px with 256 and 512
    T5 tokens, SD3.5-Large (38 joint blocks, 2432 wide) at 1024 px with 333 text tokens, steering all its joint
    blocks and the family default (the first third in run order: 13 of 38). The negative has as many
    tokens as the positive. Counted: no NASA, NASA (first call and a later call: nothing is cached between steps,
    the text branch is modulated by the timestep), CFG (batch 2), CFG + NASA, and the floors of
    shared/notes/targets.md ("full", "full+", "kv"), computed here from the shapes alone, the way targets.md counts
    them (the negative embedded once; in every steered block the negative's Q/K/V and the image queries'
    attention to it; in every block before the last steered one the stream's out-projection and MLP (blocks
    between steered ones carry the stream without the image-query attention); "full+" adds the
    negative queries over [negative; image]; "kv" applies only the K/V rows). The script checks that these
    floors reproduce targets.md.
(b) CPU wall-clock of NASA / none and CFG / none at real widths, few blocks, 256 px, and the peak memory of a
    call (the CPU allocator's events, replayed; see benchlib.cpu_peak_bytes), next to the FLOP ratio predicted
    for that same reduced model. At 256 px there are as many text tokens as image tokens, so the ratio there is
    far above the 1024 px one: the point of (b) is that the time follows the FLOPs.

    nice python benchmarks/bench_joint.py                   # ~4 min on 2 CPU cores
    nice python benchmarks/bench_joint.py --skip-wallclock  # FLOPs and (c)
    nice python benchmarks/bench_joint.py --skip-wallclock --skip-scale --out benchmarks/results/joint_flops_latest
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_joint.py
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import (count_flops, cpu_peak_bytes, load_average, mib, model_call, nasa_run_of, pct,  # noqa: E402
                      run_metadata, setup_runtime)
from report import write_report  # noqa: E402

# targets.md: base TFLOP and NASA extra % per reading ("double" = double blocks only, "all" = double + single)
TARGETS = {
    ("FLUX.1", 256): dict(base=69.467, double={"full": 1.88, "full+": 2.23, "kv": 0.63},
                          all={"full": 5.76, "full+": 6.86, "kv": 1.86}),
    ("FLUX.1", 512): dict(base=74.385, double={"full": 3.51, "full+": 4.21, "kv": 1.17},
                          all={"full": 10.75, "full+": 12.93, "kv": 3.47}),
    ("SD3.5-Large", 333): dict(base=31.121, double={"full": 7.29, "full+": 8.99, "kv": 2.61}),
}
TOLERATED_RATIO = 1.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per variant (after one warm-up round)")
    p.add_argument("--resolution", type=int, default=256, help="image side for the wall-clock part")
    p.add_argument("--skip-wallclock", action="store_true")
    p.add_argument("--skip-flops", action="store_true")
    p.add_argument("--skip-scale", action="store_true", help="skip part (c)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "joint_latest"))
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------------------
# Real configurations (comfy/model_detection.py's FLUX.1 and SD3.5-Large values)


def flux_config(depth=19, single=38):
    import comfy.ldm.flux.model as fm
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
               hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=depth, depth_single_blocks=single,
               axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(fm.FluxParams)}:
        cfg["txt_ids_dims"] = []
    import comfy.supported_models
    return comfy.supported_models.FluxSchnell(cfg)


def sd35_large_config(num_blocks=None):
    import comfy.supported_models
    cfg = {"in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "out_channels": 16, "depth": 38,
           "input_size": None, "adm_in_channels": 2048, "num_patches": 36864, "pos_embed_max_size": 192,
           "qk_norm": "rms", "x_block_self_attn_layers": [],
           "context_embedder_config": {"target": "torch.nn.Linear",
                                       "params": {"in_features": 4096, "out_features": 2432}}}
    if num_blocks is not None:
        cfg["num_blocks"] = num_blocks
    return comfy.supported_models.SD3(cfg)


MODELS = {
    "FLUX.1": dict(config=flux_config, pooled=768, guidance=True),
    "SD3.5-Large": dict(config=sd35_large_config, pooled=2048, guidance=False),
}


def build(name, device=None, **kw):
    import torch
    import comfy.model_patcher
    model = MODELS[name]["config"](**kw).get_model({}, device=device)
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    return model, patcher


def joint_call(patcher, apply_model, x, sigma, context, y, cond_or_uncond, guidance):
    """benchlib.model_call with the guidance input FLUX's forward takes."""
    import torch
    c = {"c_crossattn": context, "y": y}
    if guidance:
        c["guidance"] = torch.zeros(x.shape[0], device=context.device)
    return model_call(patcher, apply_model, x, sigma, c, cond_or_uncond)


# ------------------------------------------------------------------------------------------------------------
# The floors, from the shapes only


_THIRDS = ("input", "middle", "output")


def steered_in_floor(kinds, blocks):
    """Positions (run order) a block choice steers, written out here rather than taken from the adapter: joint
    kinds select by kind; the node's thirds (all three = the family default, the first third) by position."""
    blocks = set(blocks)
    if blocks & {"double", "single"}:
        return [j for j, kind in enumerate(kinds) if kind in blocks]
    if blocks == set(_THIRDS):
        blocks = {"input"}
    return [j for j in range(len(kinds)) if _THIRDS[min(3 * j // len(kinds), 2)] in blocks]


def floors(dm, family, tokens, image_tokens, blocks_asked):
    """{reading: FLOPs} as shared/notes/targets.md counts them (2 FLOPs per multiply-add). ``blocks_asked``:
    what apply_nasa was given (see steered_in_floor)."""
    t, n = tokens, image_tokens
    if family == "FLUX.1":
        c = dm.hidden_size
        m = dm.double_blocks[0].txt_mlp[0].out_features
        blocks = [("double", c * 3 * c, c * c + 2 * c * m)] * len(dm.double_blocks)
        single = [("single", c * 3 * c, (c + m) * c + c * m)] * len(dm.single_blocks)  # linear1's MLP part + linear2
        blocks += single
        embed = 2 * t * dm.txt_in.in_features * c
    else:
        c = dm.joint_blocks[0].context_block.attn.qkv.in_features
        m = dm.joint_blocks[0].context_block.mlp.fc1.out_features
        blocks = [("double", c * 3 * c, c * c + 2 * c * m)] * len(dm.joint_blocks)
        embed = 2 * t * dm.context_embedder.in_features * c
    steered = set(steered_in_floor([kind for kind, _, _ in blocks], blocks_asked))
    last = max(steered)
    out = {}
    for reading in ("full", "full+", "kv"):
        total = embed
        for i, (kind, qkv_macs, advance_macs) in enumerate(blocks[:last + 1]):
            total += 2 * t * (qkv_macs * 2 // 3 if reading == "kv" else qkv_macs)
            if i in steered:
                total += 2 * 2 * n * t * c  # image queries: Q K-^T and P V-
            if reading != "kv" and i < last:
                total += 2 * t * advance_macs
                if reading == "full+":
                    total += 2 * 2 * t * (t + n) * c  # negative queries over [negative; image]
        out[reading] = total
    return out


def flops_for(name, tokens, alpha, px=1024, kinds=("double",), **build_kw):
    """kinds=None: the family default (apply_nasa without blocks)."""
    import torch
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from comfyui_nasa.nasa_core.adapters.base import ALL_BLOCKS
    from comfyui_nasa.nasa_core.adapters.joint import JointBlockPatch
    meta = torch.device("meta")
    spec = MODELS[name]
    model, patcher = build(name, device=meta, **build_kw)
    dm = model.diffusion_model
    g = torch.Generator().manual_seed(0)
    negative = torch.randn(1, tokens, 4096, generator=g)
    asked = set(ALL_BLOCKS) if kinds is None else set(kinds)
    patched = {s: apply_nasa(patcher, negative, alpha, blocks=asked, negative_stream=s)
               for s in ("full+", "full", "kv")}
    layout = ["double"] * len(getattr(dm, "double_blocks", getattr(dm, "joint_blocks", [])))
    layout += ["single"] * len(getattr(dm, "single_blocks", []))
    slots = patched["full+"].model_options["transformer_options"]["patches_replace"]["dit"].values()
    installed = sum(1 for v in slots if isinstance(v, JointBlockPatch) and v.apply)
    if installed != len(steered_in_floor(layout, asked)):
        raise RuntimeError(f"{name}: the adapter steers {installed} blocks, the floor counts "
                           f"{len(steered_in_floor(layout, asked))}")
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])
    model.model_sampling.to(meta)

    def apply_model_on_meta(x, t, **c):
        return model.apply_model(x.to(meta), t.to(meta), **c)

    lat = px // 8

    def inputs(batch):
        return (torch.zeros(batch, 16, lat, lat), torch.empty(batch, tokens, 4096, device=meta),
                torch.empty(batch, spec["pooled"], device=meta))

    x1, c1, y1 = inputs(1)
    x2, c2, y2 = inputs(2)
    g_ = spec["guidance"]
    with torch.inference_mode():
        base, _ = count_flops(lambda: joint_call(patcher, apply_model_on_meta, x1, sigma, c1, y1, [0], g_))
        cfg, _ = count_flops(lambda: joint_call(patcher, apply_model_on_meta, x2, sigma, c2, y2, [0, 1], g_))
        nasa = {}
        for s, p in patched.items():
            first, _ = count_flops(lambda: joint_call(p, apply_model_on_meta, x1, sigma, c1, y1, [0], g_))
            later, _ = count_flops(lambda: joint_call(p, apply_model_on_meta, x1, sigma, c1, y1, [0], g_))
            nasa[s] = dict(first=first, later=later)
            if s == "full+":
                cfg_nasa, _ = count_flops(lambda: joint_call(p, apply_model_on_meta, x2, sigma, c2, y2, [0, 1], g_))
        if nasa_run_of(patched["full+"]).calls_applied < 3:
            raise RuntimeError(f"{name}: NASA did not apply in the counted calls")
    image_tokens = (lat // 2) ** 2
    fl = floors(dm, name, tokens, image_tokens, asked)
    del model, patcher, patched
    gc.collect()
    label = (f"default: first third ({installed} of {len(layout)})" if kinds is None
             else "+".join(sorted(kinds)))
    return dict(model=name, tokens=tokens, resolution=px, image_tokens=image_tokens,
                blocks=["default"] if kinds is None else sorted(kinds), blocks_label=label,
                steered_blocks=installed, block_count=len(layout),
                base=base, cfg=cfg, cfg_nasa=cfg_nasa, nasa=nasa, floors=fl)


def check_targets(r):
    t = TARGETS.get((r["model"], r["tokens"]))
    if t is None:
        return True, "no targets.md row"
    key = "all" if "single" in r["blocks"] else "double"
    if key not in t or "default" in r["blocks"]:
        return True, "no targets.md row"
    base_ok = abs(r["base"] / 1e12 - t["base"]) < 0.0015
    got = {k: round(pct(v, r["base"]), 2) for k, v in r["floors"].items()}
    # targets.md prints two decimals; its SD3.5 row differs from this count by up to 0.02 points
    ok = base_ok and all(abs(got[k] - t[key][k]) <= 0.021 for k in got)
    return ok, f"base {r['base'] / 1e12:.3f} vs {t['base']}; floors {got} vs {t[key]}"


def flop_lines(r):
    b = r["base"]
    head = (f"{r['model']} {r['resolution']}px ({r['image_tokens']} image tokens), {r['tokens']} text tokens, "
            f"negative of {r['tokens']} tokens, NASA in {r['blocks_label']} blocks")
    lines = [head, f"  one call, no NASA      {b / 1e12:8.3f} TFLOP",
             f"  CFG (batch 2)          {r['cfg'] / 1e12:8.3f} TFLOP  +{pct(r['cfg'] - b, b):.2f}%",
             f"  CFG + NASA (full+)     {r['cfg_nasa'] / 1e12:8.3f} TFLOP  +{pct(r['cfg_nasa'] - b, b):.2f}% "
             f"(NASA adds +{pct(r['cfg_nasa'] - r['cfg'], b):.2f}% of one call)"]
    for s in ("full+", "full", "kv"):
        n, f = r["nasa"][s], r["floors"][s]
        lines.append(f"  NASA {s:5s} first call  +{pct(n['first'] - b, b):.3f}%, later call +{pct(n['later'] - b, b):.3f}%"
                     f"  | floor {s:5s} +{pct(f, b):.3f}%  | NASA/floor {(n['later'] - b) / f:.3f}")
    return lines


# ------------------------------------------------------------------------------------------------------------
# (b) wall-clock


def wallclock_for(name, px, reps, alpha, seed=0):
    import torch
    from comfyui_nasa.nasa_core.adapters import apply_nasa
    from nasa_testkit import init_weights
    spec = MODELS[name]
    small = dict(depth=1, single=1) if name == "FLUX.1" else dict(num_blocks=2)
    tokens = 256 if name == "FLUX.1" else 333
    t0 = time.perf_counter()
    model, patcher = build(name, **small)
    init_weights(model.diffusion_model, seed)
    if hasattr(model.diffusion_model, "pos_embed"):  # SD3's positional table is a torch.empty buffer
        model.diffusion_model.pos_embed.normal_(0, 0.02)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed + 1)
    lat = px // 8
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])
    x1 = torch.randn(1, 16, lat, lat, generator=g)
    c1 = torch.randn(1, tokens, 4096, generator=g)
    y1 = torch.randn(1, spec["pooled"], generator=g)
    x2, c2, y2 = torch.cat([x1, x1]), torch.cat([c1, torch.randn(1, tokens, 4096, generator=g)]), torch.cat([y1, y1])
    negative = torch.randn(1, tokens, 4096, generator=g)
    kinds = ("double", "single") if name == "FLUX.1" else ("double",)  # the stream crosses a block either way
    patched = apply_nasa(patcher, negative, alpha, blocks=set(kinds))
    am = model.apply_model
    gd = spec["guidance"]
    calls = {"none": lambda: joint_call(patcher, am, x1, sigma, c1, y1, [0], gd),
             "nasa": lambda: joint_call(patched, am, x1, sigma, c1, y1, [0], gd),
             "cfg": lambda: joint_call(patcher, am, x2, sigma, c2, y2, [0, 1], gd),
             "cfg_nasa": lambda: joint_call(patched, am, x2, sigma, c2, y2, [0, 1], gd)}
    times = {k: [] for k in calls}
    cpu = {k: [] for k in calls}  # process CPU seconds: one thread, so the compute itself, not the waiting
    load = [load_average()]
    with torch.inference_mode():
        diff = float((calls["nasa"]() - calls["none"]()).abs().max())
        if diff == 0.0:
            raise RuntimeError(f"{name}: NASA changed nothing")
        for k in calls:  # warm-up
            calls[k]()
        for _ in range(reps):
            for k, fn in calls.items():  # interleaved
                t, c = time.perf_counter(), time.process_time()
                fn()
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
        load.append(load_average())
        peaks = {k: cpu_peak_bytes(calls[k])[0] for k in ("none", "nasa")}
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    paired = {k: statistics.median(a / b for a, b in zip(times[k], times["none"])) for k in ("nasa", "cfg")}
    del model, patcher, patched
    gc.collect()
    # what the FLOPs predict for this same reduced model
    rf = flops_for(name, tokens, alpha, px=px, kinds=kinds, **small)
    return dict(model=name, resolution=px, tokens=tokens, blocks=small, nasa_blocks=kinds, build_s=build_s,
                median_s=med,
                times_s=times, cpu_s=cpu, cpu_median_s=cpu_med, cpu_ratio_nasa=cpu_med["nasa"] / cpu_med["none"],
                cpu_ratio_cfg=cpu_med["cfg"] / cpu_med["none"], cpu_ratio_cfg_nasa=cpu_med["cfg_nasa"] / cpu_med["cfg"],
                ratio_nasa=med["nasa"] / med["none"], ratio_cfg=med["cfg"] / med["none"],
                ratio_cfg_nasa=med["cfg_nasa"] / med["cfg"], paired=paired,
                flop_ratio_nasa=rf["nasa"]["full+"]["later"] / rf["base"], flop_ratio_cfg=rf["cfg"] / rf["base"],
                peak_bytes=peaks, load_average_before_after=load, max_abs_nasa_minus_none=diff)


# ------------------------------------------------------------------------------------------------------------
# (c) scale of the subtracted term against the positive one, one block at real width and token counts


def scale_for(name, seed=0, alpha=1.0):
    """For the image queries of one block (random weights, real width, 1024 px token counts): the attention
    mass on the positive text p_txt, and per token |alpha Z-| / |Z+| and |alpha Z-| / |Z+ restricted to the text|.
    Random weights give near-uniform attention, so p_txt sits near T / (T + N); trained models differ. The
    point is the shape of the comparison: Z- has softmax mass 1 on the negative text, the positive text only p_txt
    of Z+."""
    import torch
    import torch.nn.functional as F
    from nasa_testkit import init_weights
    g = torch.Generator().manual_seed(seed)
    n_img, t = 4096, (256 if name == "FLUX.1" else 333)
    if name == "FLUX.1":
        model, _ = build(name, depth=1, single=0)
        blk = model.diffusion_model.double_blocks[0]
        init_weights(blk, seed)
        h = blk.num_heads
        vec = torch.randn(1, 3072, generator=g)

        def qkv(x, mod, attn):
            m = mod(vec)[0]
            q, k, v = attn.qkv((1 + m.scale) * F.layer_norm(x, (x.shape[-1],), eps=1e-6) + m.shift).chunk(3, -1)
            split = lambda z: z.view(1, z.shape[1], h, -1).transpose(1, 2)  # noqa: E731
            return attn.norm.query_norm(split(q)), attn.norm.key_norm(split(k)), split(v)
        img_qkv = lambda x: qkv(x, blk.img_mod, blk.img_attn)  # noqa: E731
        txt_qkv = lambda x: qkv(x, blk.txt_mod, blk.txt_attn)  # noqa: E731
    else:
        model, _ = build(name, num_blocks=2)
        blk = model.diffusion_model.joint_blocks[0]
        init_weights(blk, seed)
        h = blk.x_block.attn.num_heads
        c = torch.randn(1, 2432, generator=g)

        def qkv_of(b):
            def f(x):
                (q, k, v), _ = b.pre_attention(x, c)
                split = lambda z: z.view(1, z.shape[1], h, -1).transpose(1, 2)  # noqa: E731
                return split(q), split(k), split(v)
            return f
        img_qkv, txt_qkv = qkv_of(blk.x_block), qkv_of(blk.context_block)
    width = 3072 if name == "FLUX.1" else 2432
    with torch.inference_mode():
        img = torch.randn(1, n_img, width, generator=g)
        txt, neg = torch.randn(1, t, width, generator=g), torch.randn(1, t, width, generator=g)
        iq, ik, iv = img_qkv(img)
        tq, tk, tv = txt_qkv(txt)
        nq, nk, nv = txt_qkv(neg)
        k, v = torch.cat((tk, ik), 2), torch.cat((tv, iv), 2)
        p = torch.softmax(iq @ k.transpose(-1, -2) / iq.shape[-1] ** 0.5, -1)
        z_pos, z_pos_txt = p @ v, p[..., :t] @ tv
        z_neg = torch.softmax(iq @ nk.transpose(-1, -2) / iq.shape[-1] ** 0.5, -1) @ nv
        merge = lambda z: z.transpose(1, 2).reshape(1, n_img, -1)  # noqa: E731
        zp, zpt, zn = merge(z_pos), merge(z_pos_txt), merge(z_neg)
        r = (alpha * zn.norm(dim=-1) / zp.norm(dim=-1))[0]
        r_txt = (alpha * zn.norm(dim=-1) / zpt.norm(dim=-1))[0]
        p_txt = p[..., :t].sum(-1)
    del model
    gc.collect()
    return dict(model=name, text_tokens=t, image_tokens=n_img, uniform_p_txt=t / (t + n_img),
                p_txt_mean=float(p_txt.mean()), p_txt_p95=float(p_txt.flatten().quantile(0.95)),
                ratio_neg_to_pos_median=float(r.median()), ratio_neg_to_pos_text_median=float(r_txt.median()))


# ------------------------------------------------------------------------------------------------------------


def markdown(meta, flops, clocks, scales=()):
    out = [f"# NASA on joint attention: cost ({meta['date']}, {meta['runtime']}, torch {meta['torch']}, "
           f"{meta['threads']} thread(s))", "",
           "FLOPs: one denoiser call, meta device, ComfyUI's real configs; NASA rows are the extra over no NASA "
           "(first call = later call: nothing is cached across steps).", "",
           "| model | text tokens | NASA blocks | one call TFLOP | CFG | NASA full+ (default) | floor full+ | "
           "NASA/floor | NASA full | floor full | NASA kv | floor kv |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in flops:
        b = r["base"]
        n = {s: pct(r["nasa"][s]["later"] - b, b) for s in r["nasa"]}
        f = {s: pct(v, b) for s, v in r["floors"].items()}
        out.append(f"| {r['model']} {r['resolution']}px | {r['tokens']} | {r['blocks_label']} | {b / 1e12:.3f} | "
                   f"+{pct(r['cfg'] - b, b):.1f}% | +{n['full+']:.2f}% | +{f['full+']:.2f}% | "
                   f"{n['full+'] / f['full+']:.3f} | +{n['full']:.2f}% | +{f['full']:.2f}% | +{n['kv']:.2f}% | "
                   f"+{f['kv']:.2f}% |")
    if clocks:
        out += ["", f"CPU wall-clock, real widths, few blocks, {clocks[0]['resolution']}px, median of "
                    f"{len(clocks[0]['times_s']['none'])} interleaved reps:", "",
                "| model (blocks; NASA in) | none, CPU s | NASA/none CPU (wall) | FLOPs predict | CFG/none CPU (wall) | "
                "(CFG+NASA)/CFG CPU | peak MiB none | peak MiB NASA |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in clocks:
            out.append(f"| {r['model']} {r['blocks']}; {'+'.join(r['nasa_blocks'])}; {r['tokens']} tokens | "
                       f"{r['cpu_median_s']['none']:.2f} | {r['cpu_ratio_nasa']:.3f}x ({r['ratio_nasa']:.3f}x) | "
                       f"{r['flop_ratio_nasa']:.3f}x | {r['cpu_ratio_cfg']:.3f}x ({r['ratio_cfg']:.3f}x) | "
                       f"{r['cpu_ratio_cfg_nasa']:.3f}x | {mib(r['peak_bytes']['none']):.0f} | "
                       f"{mib(r['peak_bytes']['nasa']):.0f} |")
    if scales:
        out += ["", "Scale of the subtracted term, one block, real width, 1024 px token counts, random weights "
                    "(alpha 1; everything scales with alpha):", "",
                "| model | text tokens | attention mass on the text, mean (uniform would be) | |Z-| / |Z+| median | "
                "|Z-| / |text part of Z+| median |", "| --- | --- | --- | --- | --- |"]
        for r in scales:
            out.append(f"| {r['model']} | {r['text_tokens']} | {r['p_txt_mean']:.3f} ({r['uniform_p_txt']:.3f}) | "
                       f"{r['ratio_neg_to_pos_median']:.2f} | {r['ratio_neg_to_pos_text_median']:.2f} |")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    runtime = setup_runtime("cpu")
    import torch
    torch.set_num_threads(args.threads)
    meta = run_metadata(runtime, args.alpha)
    flops, clocks, problems = [], [], []
    if not args.skip_flops:
        print("\n== (a) FLOPs of one denoiser call (meta device) ==", flush=True)
        for name, tokens, kinds in (("FLUX.1", 256, ("double",)), ("FLUX.1", 256, ("double", "single")),
                                    ("FLUX.1", 512, ("double",)), ("FLUX.1", 512, ("double", "single")),
                                    ("SD3.5-Large", 333, ("double",)), ("SD3.5-Large", 333, None)):
            r = flops_for(name, tokens, args.alpha, kinds=kinds)
            ok, msg = check_targets(r)
            r["targets_check"], r["matches_targets"] = msg, ok
            print("\n".join(flop_lines(r)))
            print(f"  targets.md: {'reproduced' if ok else 'NOT REPRODUCED'}: {msg}", flush=True)
            if not ok:
                problems.append(f"{name} {tokens}: floors do not reproduce targets.md ({msg})")
            ratio = (r["nasa"]["full+"]["later"] - r["base"]) / r["floors"]["full+"]
            if ratio > TOLERATED_RATIO:
                problems.append(f"{name} {tokens}: NASA full+ is {ratio:.3f}x its floor")
            flops.append(r)
    if not args.skip_wallclock:
        print(f"\n== (b) CPU wall-clock, real widths, few blocks, {args.resolution}px ==", flush=True)
        for name in MODELS:
            r = wallclock_for(name, args.resolution, args.reps, args.alpha)
            print(f"{name} {r['blocks']}, NASA in {'+'.join(r['nasa_blocks'])} ({r['tokens']} text tokens), process CPU "
                  f"time: none {r['cpu_median_s']['none']:.2f}s, NASA/none {r['cpu_ratio_nasa']:.3f}x (FLOPs predict "
                  f"{r['flop_ratio_nasa']:.3f}x), CFG/none {r['cpu_ratio_cfg']:.3f}x (FLOPs {r['flop_ratio_cfg']:.3f}x), "
                  f"(CFG+NASA)/CFG {r['cpu_ratio_cfg_nasa']:.3f}x")
            print(f"  wall clock: none {r['median_s']['none']:.2f}s; NASA/none "
                  f"{r['ratio_nasa']:.3f}x (paired {r['paired']['nasa']:.3f}x; FLOPs predict {r['flop_ratio_nasa']:.3f}x); "
                  f"CFG/none {r['ratio_cfg']:.3f}x (paired {r['paired']['cfg']:.3f}x; FLOPs {r['flop_ratio_cfg']:.3f}x); "
                  f"(CFG+NASA)/CFG {r['ratio_cfg_nasa']:.3f}x; peak MiB none {mib(r['peak_bytes']['none']):.0f}, "
                  f"NASA {mib(r['peak_bytes']['nasa']):.0f}; load {r['load_average_before_after']}", flush=True)
            clocks.append(r)
    scales = []
    if not args.skip_scale:
        print("\n== (c) scale of alpha Z- against Z+ (one block, real width, random weights, alpha 1) ==", flush=True)
        for name in MODELS:
            r = scale_for(name)
            print(f"{name}: image queries' attention mass on the {r['text_tokens']} text tokens: mean "
                  f"{r['p_txt_mean']:.3f} (uniform {r['uniform_p_txt']:.3f}, 95th percentile {r['p_txt_p95']:.3f}); "
                  f"median |Z-|/|Z+| {r['ratio_neg_to_pos_median']:.2f}, median |Z-|/|text part of Z+| "
                  f"{r['ratio_neg_to_pos_text_median']:.2f}", flush=True)
            scales.append(r)
    out = write_report(args.out, markdown(meta, flops, clocks, scales),
                       dict(meta=meta, flops=flops, wallclock=clocks, scale=scales, problems=problems))
    print(f"\nwritten: {out.with_suffix('.md')}, {out.with_suffix('.json')}")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
