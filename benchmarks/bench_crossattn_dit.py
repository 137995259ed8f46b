#!/usr/bin/env python
"""What NASA costs on the DiTs with true cross-attention: PixArt-alpha, Wan 2.1/2.2, Kandinsky 5, LTX-Video and
LTX-2 (modern ComfyUI tree only).

(a) FLOPs of one denoiser call, FlopCounterMode on the meta device (see benchlib.py for why meta), with
    ComfyUI's real configurations: a skeleton state dict of meta tensors goes through
    comfy.model_detection (detect_unet_config, model_config_from_unet_config) exactly as a checkpoint would,
    giving PixArt-alpha 1024 px (28 blocks, 1152 wide, 120 T5 tokens) and Wan 2.1 T2V 1.3B (30 blocks, 1536
    wide, 480x832, 33 frames = 14040 video tokens, 512 T5 tokens). Counted: no NASA, NASA's first call (the
    negative through the caption embedder and every block's K/V), a later call (both cached), CFG (batch 2) and
    CFG + NASA, next to the floor of shared/notes/targets.md, recomputed here from the layer shapes: the
    negative (as many tokens as the positive) through the caption embedder and each block's K and V
    projections, one more softmax(QK^T)V per block, and the subtraction (1 FLOP per element).
    Also, FLOPs only (no wall-clock rows): Kandinsky 5 T2V Lite (32 visual blocks, 1792 wide, 768x512, 121 frames
    = 47616 video tokens, 128 Qwen2.5-VL tokens; its embedder is text_embeddings + the two text blocks, which the
    negative takes every call, since they are modulated by the timestep: nothing cached, floor cached = floor),
    LTX-Video 2B (28 blocks, 2048 wide, 768x512, 121 frames = 6144 tokens, 128 T5 tokens) and LTX-2 (48 blocks,
    video 4096 and audio 2048 wide, 1280x704, 121 frames = 14080 video tokens plus 121 audio tokens, 1024 text
    tokens as its connectors pad to; both attn2 and audio_attn2 steered). For these the embedder's share of the
    floor is its own FLOPs in the plain call (per module, FlopCounterMode), the negative being as long as the
    positive.
(b) CPU wall-clock NASA/none and CFG/none at real widths with reduced depth and resolution (random weights),
    medians of interleaved repetitions, and what the FLOPs predict for that same reduced model.

Calls go through apply_nasa and the patched ModelPatcher the way comfy.samplers runs them: the
model_function_wrapper (NASARun) and, for PixArt, the APPLY_MODEL wrapper ComfyUI merges into
transformer_options["wrappers"] at sampling time.

    COMFYUI_PATH=/path/to/ComfyUI nice python benchmarks/bench_crossattn_dit.py            # ~4 min, 1 thread
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_crossattn_dit.py --skip-wallclock  # FLOPs only
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchlib = _load("benchlib")   # runtime setup, FLOP and op counting (the shared benchmark library)
report = _load("report")

# name -> full-size workload (as targets.md quotes it) and the reduced one timed on the CPU
FAMILIES = {
    "PixArt-alpha": dict(depth=28, latent=(128, 128), tokens=120, target=(6.510, 1.27, 0.98),
                         wall=dict(depth=2, latent=(64, 64))),
    "Wan 2.1 1.3B": dict(depth=30, latent=(9, 60, 104), tokens=512, target=(72.930, 2.03, 1.82),
                         wall=dict(depth=2, latent=(9, 12, 20)), dim=1536, ffn=8960),
    # each of Wan 2.2 A14B's two experts (WAN21 configs at 14B dims), at 720p and 81 frames
    "Wan 2.2 A14B expert": dict(depth=40, latent=(21, 90, 160), tokens=512, target=None,
                                wall=dict(depth=2, latent=(3, 12, 20)), dim=5120, ffn=13824),
    # FLOPs only (wall=None): the real configs ComfyUI's detection builds for each, at its usual workload.
    # Kandinsky 5 T2V Lite: 5 s at 24 fps (121 frames -> 31 latent frames), 768x512, HunyuanVideo latent (16 ch,
    # 8x spatial), 2x2 patches; its concat_cond adds 17 channels (image + mask); pooled CLIP-L 768.
    "Kandinsky 5 T2V Lite": dict(depth=32, latent=(31, 64, 96), tokens=128, target=None, wall=None,
                                 kind="k5", dim=1792, ffn=7168, text_dim=3584, text_blocks=2, time_dim=512),
    # LTX-Video 2B: 128-ch latent, 32x spatial, 8x temporal (121 frames -> 16), T5 padded to 128 tokens
    "LTX-Video 2B": dict(depth=28, latent=(16, 16, 24), tokens=128, target=None, wall=None, kind="ltxv",
                         dim=2048, text_dim=4096),
    # LTX-2 (19B): video latent as LTX-Video's at 1280x704, 121 frames; audio latent 8 x 121 x 16 (25 latents per
    # second, LTXVEmptyLatentAudio's count for 121 frames at 25 fps); text [video 3840 | audio 3840] x 1024 tokens
    "LTX-2": dict(depth=48, latent=(16, 22, 40), audio=121, tokens=1024, target=None, wall=None, kind="ltx2",
                  dim=4096, text_dim=2 * 3840),
}
TOLERATED_RATIO = 1.1  # NASA's overhead may exceed the floor by at most this factor


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--reps", type=int, default=5, help="timed interleaved repetitions per variant (wall-clock)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    p.add_argument("--skip-wallclock", action="store_true")
    p.add_argument("--skip-flops", action="store_true")
    p.add_argument("--alpha", type=float, default=0.5, help="NASA scale (the paper's PixArt default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES), metavar="NAME",
                   help="the families to run: " + ", ".join(FAMILIES))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "crossattn_dit_latest"))
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------------------
# ComfyUI's real configurations, detected from a skeleton state dict


def skeleton(family: str, depth: int, device):
    import torch
    e = lambda *shape: torch.empty(*shape, device=device)  # noqa: E731
    sd = {}
    if family == "PixArt-alpha":
        sd["t_block.1.weight"] = e(6 * 1152, 1152)
        sd["y_embedder.y_embedding"] = e(120, 4096)
        sd["pos_embed"] = e(1, 64 * 64, 1152)      # 1024 px checkpoints: 64 x 64 patches
        sd["ar_embedder.mlp.0.weight"] = e(1152, 256)  # micro-conditioning: PixArt-alpha, not sigma
        for i in range(depth):
            sd[f"blocks.{i}.cross_attn.q_linear.weight"] = e(1152, 1152)
    elif kind_of(family) == "k5":
        spec = FAMILIES[family]
        dim = spec["dim"]
        sd["visual_embeddings.in_layer.bias"] = e(dim)
        sd["visual_embeddings.in_layer.weight"] = e(dim, (16 + 16 + 1) * 4)  # latent + concat (image, mask), 2x2
        sd["time_embeddings.in_layer.bias"] = e(spec["time_dim"])
        for i in range(spec["text_blocks"]):
            sd[f"text_transformer_blocks.{i}.self_attention.to_query.weight"] = e(dim, dim)
        for i in range(depth):
            sd[f"visual_transformer_blocks.{i}.cross_attention.key_norm.weight"] = e(64)  # head dim (16 + 24 + 24)
            sd[f"visual_transformer_blocks.{i}.feed_forward.in_layer.weight"] = e(spec["ffn"], dim)
    elif kind_of(family) in ("ltxv", "ltx2"):
        dim = FAMILIES[family]["dim"]
        sd["adaln_single.emb.timestep_embedder.linear_1.bias"] = e(dim)
        if kind_of(family) == "ltx2":
            sd["audio_adaln_single.linear.weight"] = e(6 * 2048, 2048)
        for i in range(depth):
            sd[f"transformer_blocks.{i}.attn2.to_k.weight"] = e(dim, dim)
    else:
        dim, ffn = FAMILIES[family]["dim"], FAMILIES[family]["ffn"]
        sd["head.modulation"] = e(1, 2, dim)
        sd["head.head.weight"] = e(16 * 4, dim)
        sd["patch_embedding.weight"] = e(dim, 16, 1, 2, 2)
        for i in range(depth):
            sd[f"blocks.{i}.ffn.0.weight"] = e(ffn, dim)
    return sd


def build(family: str, depth: int, device):
    import torch
    import comfy.model_detection as md
    import comfy.model_patcher

    sd = skeleton(family, depth, torch.device("meta"))
    unet_config = md.detect_unet_config(sd, "")
    model_config = md.model_config_from_unet_config(unet_config, sd)
    expected = {"pixart": "PixArtAlpha", "wan": "WAN21_T2V", "k5": "Kandinsky5", "ltxv": "LTXV",
                "ltx2": "LTXAV"}[kind_of(family)]
    if type(model_config).__name__ != expected:
        raise RuntimeError(f"ComfyUI detected {type(model_config).__name__}, expected {expected}")
    model = model_config.get_model({}, device=device)
    model.eval()
    load = torch.device("cpu")
    return model, comfy.model_patcher.ModelPatcher(model, load_device=load, offload_device=load)


def kind_of(family):
    return FAMILIES[family].get("kind", "pixart" if family == "PixArt-alpha" else "wan")


def cross_attentions(model, family):
    """Every text cross-attention NASA steers, in run order (LTX-2: each block's attn2, then its audio_attn2)."""
    dm, kind = model.diffusion_model, kind_of(family)
    if kind == "k5":
        return [b.cross_attention for b in dm.visual_transformer_blocks]
    if kind == "ltxv":
        return [b.attn2 for b in dm.transformer_blocks]
    if kind == "ltx2":
        return [m for b in dm.transformer_blocks for m in (b.attn2, b.audio_attn2)]
    return [b.cross_attn for b in dm.blocks]


def kv_projections(m, family):
    """(query width, W_k, W_v) of one text cross-attention of the newer families."""
    if kind_of(family) == "k5":
        return m.to_query.out_features, m.to_key, m.to_value
    return m.to_q.out_features, m.to_k, m.to_v


def embedder_names(family):
    """Module names (below the diffusion model) of the text embedder the negative goes through (the floor)."""
    kind = kind_of(family)
    if kind == "k5":
        return ["text_embeddings"] + [f"text_transformer_blocks.{i}" for i in range(FAMILIES[family]["text_blocks"])]
    if kind == "ltx2":
        return ["caption_projection", "audio_caption_projection"]
    return ["caption_projection"]


def extra_inputs(family, batch, device):
    """The model inputs beyond c_crossattn that ComfyUI's extra_conds gives each newer family."""
    import torch
    spec, kind = FAMILIES[family], kind_of(family)
    if kind == "k5":  # pooled CLIP-L, and concat_cond's zero image + mask
        return {"y": torch.empty(batch, 768, device=device),
                "c_concat": torch.empty(batch, 17, *spec["latent"], device=device)}
    c = {"attention_mask": None, "frame_rate": 25}  # T5 / Gemma: every token real
    if kind == "ltx2":
        c["latent_shapes"] = [torch.Size((batch, 128, *spec["latent"])), torch.Size((batch, 8, spec["audio"], 16))]
    return c


def embedder_modules(model, family):
    dm = model.diffusion_model
    return (dm.y_embedder.y_proj.fc1, dm.y_embedder.y_proj.fc2) if family == "PixArt-alpha" else \
        (dm.text_embedding[0], dm.text_embedding[2])


def denoiser_call(patcher, apply_model, x, sigma, context, cond_or_uncond, extra=None):
    """One denoiser call as comfy.samplers.calc_cond_batch makes it, with the patcher's wrappers merged into
    transformer_options as comfy.sampler_helpers.prepare_sampling does."""
    import torch
    import comfy.patcher_extension
    to = comfy.patcher_extension.copy_nested_dicts(patcher.model_options.get("transformer_options", {}))
    comfy.patcher_extension.merge_nested_dicts(to.setdefault("wrappers", {}), patcher.wrappers, copy_dict1=False)
    to["cond_or_uncond"] = list(cond_or_uncond)
    to["uuids"] = [uuid.uuid4() for _ in cond_or_uncond]
    to["sigmas"] = sigma
    c = dict(extra or {}, c_crossattn=context, transformer_options=to)
    timestep = torch.cat([sigma] * len(cond_or_uncond))
    wrapper = patcher.model_options.get("model_function_wrapper")
    if wrapper is not None:
        return wrapper(apply_model, {"input": x, "timestep": timestep, "c": c, "cond_or_uncond": list(cond_or_uncond)})
    return apply_model(x, timestep, **c)


def use(p, base):
    """Put ``p``'s object patches (NASA's, for a NASA clone) into the shared model, as ComfyUI's loader does when
    it loads that clone: the previous clone's come off first."""
    base.unpatch_model(unpatch_weights=False)
    p.patch_model(load_weights=False)


def latent_shape(family, latent, batch):
    kind = kind_of(family)
    if kind == "ltxv":
        return (batch, 128, *latent)
    if kind == "ltx2":  # video and audio packed into one tensor, as comfy.samplers packs them
        n = 128 * latent[0] * latent[1] * latent[2] + 8 * FAMILIES[family]["audio"] * 16
        return (batch, 1, n)
    return (batch, 4, *latent) if family == "PixArt-alpha" else (batch, 16, *latent)


# ------------------------------------------------------------------------------------------------------------
# (a) FLOPs on meta


def flops_for(family: str, alpha: float, depth=None, latent=None):
    import torch
    from comfyui_nasa.nasa_core.adapters import apply_nasa

    spec = FAMILIES[family]
    kind = kind_of(family)
    depth, latent, tokens = depth or spec["depth"], latent or spec["latent"], spec["tokens"]
    text_dim = spec.get("text_dim", 4096)
    meta = torch.device("meta")
    model, patcher = build(family, depth, meta)
    negative = torch.randn(1, tokens, text_dim, generator=torch.Generator().manual_seed(0))
    patched = apply_nasa(patcher, negative, alpha)
    run = benchlib.nasa_run_of(patched)
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])
    model.model_sampling.to(meta)

    def apply_model_on_meta(x, t, **c):
        return model.apply_model(x.to(meta), t.to(meta), **c)

    def inputs(batch):  # latent on the CPU: NASARun reads it; moved to meta by the shim
        extra = extra_inputs(family, batch, meta) if kind in ("k5", "ltxv", "ltx2") else None
        return (torch.zeros(latent_shape(family, latent, batch)), torch.empty(batch, tokens, text_dim, device=meta),
                extra)

    # floor from the layer shapes; the query tokens each cross-attention sees are recorded in the plain call
    layers = cross_attentions(model, family)
    query_tokens = []

    def record(mod, args, kwargs):
        query_tokens.append((args[0] if args else kwargs["x"]).shape[1])
    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in layers]
    x1, c1, e1 = inputs(1)
    with torch.inference_mode():
        use(patcher, patcher)
        base, base_modules = benchlib.count_module_flops(
            lambda: denoiser_call(patcher, apply_model_on_meta, x1, sigma, c1, [0], e1))
    for h in hooks:
        h.remove()
    with torch.inference_mode():
        _, base_ops = benchlib.count_flops(lambda: denoiser_call(patcher, apply_model_on_meta, x1, sigma, c1, [0], e1))
    if len(query_tokens) != len(layers):
        raise RuntimeError(f"{family}: {len(query_tokens)} of {len(layers)} cross-attention layers ran")
    floor_kv = floor_attn = floor_sub = 0
    if kind in ("pixart", "wan"):
        fc1, fc2 = embedder_modules(model, family)
        floor_embed = 2 * tokens * (fc1.in_features * fc1.out_features + fc2.in_features * fc2.out_features)
        for n_q, m in zip(query_tokens, layers):
            width = m.d_model if family == "PixArt-alpha" else m.dim
            floor_kv += 2 * tokens * width * 2 * width            # the embedded negative @ W_k, @ W_v
            floor_attn += 2 * n_q * tokens * width * 2           # Q K-^T and P V-
            floor_sub += n_q * width                            # Z+ - Z- (alpha folded into the cached V-)
    else:
        # the embedder's own FLOPs in the plain call (the positive as long as the negative, batch 1)
        floor_embed = 0
        for name in embedder_names(family):
            hits = [n for n in base_modules if n.endswith("." + name)]
            if len(hits) != 1:
                raise RuntimeError(f"{family}: module {name} found {len(hits)} times in the FLOP count: {hits}")
            floor_embed += base_modules[hits[0]]
        for n_q, m in zip(query_tokens, layers):
            width, k, v = kv_projections(m, family)
            floor_kv += 2 * tokens * (k.in_features * k.out_features + v.in_features * v.out_features)
            floor_attn += 2 * n_q * tokens * width * 2
            floor_sub += n_q * width
    floor = floor_embed + floor_kv + floor_attn + floor_sub
    # what later calls may skip: the embedded negative and its K/V, where they do not change between steps
    # (Kandinsky 5 refines the negative with each step's time embedding: nothing to skip)
    cached = kind != "k5"
    floor_cached = floor_attn + floor_sub if cached else floor

    with torch.inference_mode():
        use(patched, patcher)
        first, first_ops = benchlib.count_flops(
            lambda: denoiser_call(patched, apply_model_on_meta, x1, sigma, c1, [0], e1))
        cache = run.cache
        counted_first = (cache.embedded, cache.computed)
        later, later_ops = benchlib.count_flops(
            lambda: denoiser_call(patched, apply_model_on_meta, x1, sigma, c1, [0], e1))
        cache_hit = (cache.embedded, cache.computed) == counted_first
        x2, c2, e2 = inputs(2)
        cfg_nasa, _ = benchlib.count_flops(
            lambda: denoiser_call(patched, apply_model_on_meta, x2, sigma, c2, [0, 1], e2))
        ops_nasa = benchlib.count_ops(lambda: denoiser_call(patched, apply_model_on_meta, x1, sigma, c1, [0], e1))
        use(patcher, patcher)
        cfg, _ = benchlib.count_flops(lambda: denoiser_call(patcher, apply_model_on_meta, x2, sigma, c2, [0, 1], e2))
        ops_none = benchlib.count_ops(lambda: denoiser_call(patcher, apply_model_on_meta, x1, sigma, c1, [0], e1))
    if cached and (counted_first != (1, len(layers)) or not cache_hit):
        raise RuntimeError(f"{family}: cache counts {counted_first} after the first call (expected 1, {len(layers)}); "
                           f"later call hit the cache: {cache_hit}")
    if not cached and later != first:
        raise RuntimeError(f"{family}: nothing is cached, yet the later call counts {later} FLOPs against {first}")
    if first == base:
        raise RuntimeError(f"{family}: NASA added no FLOPs (did it apply?)")
    gc.collect()
    return dict(family=family, depth=depth, latent=list(latent), tokens=tokens, query_tokens=query_tokens[0],
                query_tokens_per_layer=sorted(set(query_tokens)), layers=len(layers), cached=cached,
                base=base, nasa_first=first, nasa_later=later, cfg=cfg, cfg_nasa=cfg_nasa,
                floor=floor, floor_embedder=floor_embed, floor_kv=floor_kv, floor_attention=floor_attn,
                floor_subtraction=floor_sub, floor_cached=floor_cached,
                overhead_first=first - base, overhead_later=later - base, overhead_cfg_nasa=cfg_nasa - cfg,
                ops_first_minus_base=benchlib.op_diff(first_ops, base_ops),
                ops_later_minus_base=benchlib.op_diff(later_ops, base_ops),
                dispatched_ops_nasa_minus_none=benchlib.op_diff(ops_nasa, ops_none))


def check_target(r):
    t_base, t_first, t_cached = FAMILIES[r["family"]]["target"]
    b = r["base"]
    got = (b / 1e12, 100 * r["floor"] / b, 100 * r["floor_cached"] / b)
    ok = abs(got[0] - t_base) < 0.0005 and abs(got[1] - t_first) < 0.005 and abs(got[2] - t_cached) < 0.005
    return ok, (f"base {got[0]:.3f} TFLOP (targets.md {t_base:.3f}), floor +{got[1]:.2f}% ({t_first:.2f}%), "
                f"cached +{got[2]:.2f}% ({t_cached:.2f}%)")


# ------------------------------------------------------------------------------------------------------------
# (b) CPU wall-clock at real widths, reduced depth and resolution


def wallclock_for(family: str, alpha: float, reps: int, warmup: int):
    import torch
    import nasa_testkit
    from comfyui_nasa.nasa_core.adapters import apply_nasa

    spec = FAMILIES[family]
    depth, latent, tokens = spec["wall"]["depth"], spec["wall"]["latent"], spec["tokens"]
    t0 = time.time()
    model, patcher = build(family, depth, None)
    nasa_testkit.init_weights(model.diffusion_model, 0)
    built = time.time() - t0
    g = torch.Generator().manual_seed(1)
    negative = torch.randn(1, tokens, 4096, generator=g)
    x1 = torch.randn(*latent_shape(family, latent, 1), generator=g)
    x2 = torch.cat([x1, x1])
    c1 = torch.randn(1, tokens, 4096, generator=g)
    c2 = torch.cat([c1, torch.randn(1, tokens, 4096, generator=g)])
    sigma = torch.tensor([float(model.model_sampling.percent_to_sigma(0.5))])
    patched = apply_nasa(patcher, negative, alpha)
    patcher.patch_model()

    variants = ["none", "nasa", "nasa_first", "cfg"]
    times = {v: [] for v in variants}
    la_before = benchlib.load_average()
    with torch.inference_mode():
        for rnd in range(warmup + reps):
            for v in variants:
                # a fresh clone for the first call: the negative through the embedder and every block's K/V
                p = apply_nasa(patcher, negative, alpha) if v == "nasa_first" else patched if v == "nasa" else patcher
                use(p, patcher)
                x, c, rows = (x2, c2, [0, 1]) if v == "cfg" else (x1, c1, [0])
                t = time.perf_counter()
                denoiser_call(p, model.apply_model, x, sigma, c, rows)
                dt = time.perf_counter() - t
                if rnd >= warmup:
                    times[v].append(dt)
    patcher.unpatch_model(unpatch_weights=False)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    paired = lambda v: statistics.median(a / b for a, b in zip(times[v], times["none"]))  # noqa: E731
    params = sum(p.numel() for p in model.parameters())
    del model, patcher, patched
    gc.collect()
    return dict(family=family, depth=depth, latent=list(latent), tokens=tokens, params=params, build_s=built,
                reps=reps, warmup=warmup, median_s=med, times_s=times,
                ratio_nasa=med["nasa"] / med["none"], paired_ratio_nasa=paired("nasa"),
                ratio_nasa_first=med["nasa_first"] / med["none"], paired_ratio_nasa_first=paired("nasa_first"),
                ratio_cfg=med["cfg"] / med["none"], paired_ratio_cfg=paired("cfg"),
                load_average_before_after=[la_before, benchlib.load_average()])


# ------------------------------------------------------------------------------------------------------------


pct = benchlib.pct


def table(meta, flops, clocks):
    out = [f"Measured by `benchmarks/bench_crossattn_dit.py` on {meta['date']}: ComfyUI {meta['runtime']}, torch "
           f"{meta['torch']}, alpha {meta['alpha']}.", ""]
    if flops:
        out += ["FLOPs of one denoiser call, batch 1, FlopCounterMode on the meta device, ComfyUI's real configs "
                "(detected from a skeleton state dict), NASA's real patch path. The negative has as many tokens as "
                "the positive. Floor = the negative through the caption embedder and each block's W_k, W_v + one "
                "more softmax(QK^T)V per block + the subtraction; later calls reuse the cached embedder output and "
                "K/V (floor: attention + subtraction), except on Kandinsky 5, whose negative goes through the text "
                "blocks with each step's time embedding (nothing cached: its cached floor is the first call's). "
                "Kandinsky 5's embedder is text_embeddings + its text blocks; LTX-2's steered layers are each "
                "block's attn2 (video) and audio_attn2 (audio), its embedder both caption projections.", "",
                "| model, workload " + benchlib.FLOPS_COLUMNS.format(cached="floor, cached"),
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [benchlib.flops_row(f"{r['family']}, {describe(r)}", r) for r in flops]
        out += ["", "FlopCounterMode counts no elementwise op, so the measured overheads miss the floor's subtraction "
                "(n_query x width per block, under 0.01% of a call).", ""]
    if clocks:
        out += [f"CPU wall-clock ({meta['cpu']}, {meta['threads']} thread(s)), real widths with fewer blocks and a "
                f"smaller latent, random weights, batch 1 (CFG: 2), medians of interleaved repetitions (median of "
                f"per-repetition ratios in brackets). NASA = later calls (cached); first call = a fresh NASA clone.",
                "", "| model, reduced workload | one call, no NASA | NASA / none | FLOPs predict | NASA first call / none "
                "| CFG / none |", "| --- | --- | --- | --- | --- | --- |"]
        for r in clocks:
            pred = f"{r['flop_ratio_nasa_later']:.4f}x" if "flop_ratio_nasa_later" in r else "-"
            out.append(f"| {r['family']}, {describe(r)} | {r['median_s']['none']:.2f} s | {r['ratio_nasa']:.3f}x "
                       f"({r['paired_ratio_nasa']:.3f}x) | {pred} | {r['ratio_nasa_first']:.3f}x "
                       f"({r['paired_ratio_nasa_first']:.3f}x) | {r['ratio_cfg']:.2f}x ({r['paired_ratio_cfg']:.2f}x) |")
        out.append("")
    return "\n".join(out)


def describe(r):
    kind = kind_of(r["family"])
    if kind in ("ltxv", "ltx2"):
        f, h, w = r["latent"]
        video = f"{w * 32}x{h * 32}, {(f - 1) * 8 + 1} frames ({f * h * w} video tokens"
        if kind == "ltx2":
            video += f" + {FAMILIES[r['family']]['audio']} audio tokens"
        text = "T5" if kind == "ltxv" else "Gemma (connector)"
        return f"{video}), {r['depth']} blocks, {r['tokens']} {text} tokens"
    if kind == "k5":
        f, h, w = r["latent"]
        return (f"{w * 8}x{h * 8}, {(f - 1) * 4 + 1} frames ({f * (h // 2) * (w // 2)} tokens), {r['depth']} blocks, "
                f"{r['tokens']} Qwen2.5-VL tokens")
    if r["family"] == "PixArt-alpha":
        h, w = r["latent"]
        return f"{h * 8}x{w * 8} px, {r['depth']} blocks, {r['tokens']} T5 tokens"
    f, h, w = r["latent"]
    return (f"{h * 8}x{w * 8}, {(f - 1) * 4 + 1} frames ({f * (h // 2) * (w // 2)} tokens), {r['depth']} blocks, "
            f"{r['tokens']} T5 tokens")


def main(argv=None):
    args = parse_args(argv)
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("PixArt and Wan exist only in the modern ComfyUI tree: set COMFYUI_PATH to it")
    runtime = benchlib.setup_runtime("cpu")
    import torch
    torch.set_num_threads(args.threads)
    meta = benchlib.run_metadata(runtime, args.alpha)
    flops, clocks, problems = [], [], []
    if not args.skip_flops:
        print("\n== (a) FLOPs of one denoiser call (meta device) ==", flush=True)
        for family in args.families:
            r = flops_for(family, args.alpha)
            if FAMILIES[family]["target"] is None:  # not in targets.md: nothing to reproduce
                ok, msg = True, "not in targets.md"
            else:
                ok, msg = check_target(r)
            r["targets_check"], r["matches_targets"] = msg, ok
            b = r["base"]
            print(f"{family}, {describe(r)}: one call {b / 1e12:.4f} TFLOP\n"
                  f"  NASA first call +{pct(r['overhead_first'], b):.3f}% (floor +{pct(r['floor'], b):.3f}%, "
                  f"overhead/floor {r['overhead_first'] / r['floor']:.4f})\n"
                  f"  NASA later call +{pct(r['overhead_later'], b):.3f}% (floor cached +{pct(r['floor_cached'], b):.3f}%, "
                  f"overhead/that {r['overhead_later'] / r['floor_cached']:.4f})\n"
                  f"  CFG +{pct(r['cfg'] - b, b):.2f}%; CFG+NASA adds +{pct(r['overhead_cfg_nasa'], b):.3f}% of one call\n"
                  f"  NASA - none by op, first call: " + ", ".join(f"{k} {v / 1e9:+.2f} GF" for k, v in r["ops_first_minus_base"].items())
                  + "\n  NASA - none by op, later call: " + ", ".join(f"{k} {v / 1e9:+.2f} GF" for k, v in r["ops_later_minus_base"].items())
                  + "\n  aten ops NASA adds to a later call: " + ", ".join(f"{k} {v:+d}" for k, v in r["dispatched_ops_nasa_minus_none"].items())
                  + f"\n  targets.md: {'reproduced' if ok else 'NOT REPRODUCED'}: {msg}", flush=True)
            if not ok:
                problems.append(f"{family}: the floor does not reproduce targets.md ({msg})")
            if r["overhead_first"] / r["floor"] > TOLERATED_RATIO:
                problems.append(f"{family}: first-call overhead {r['overhead_first'] / r['floor']:.3f}x the floor")
            flops.append(r)
    if not args.skip_wallclock:
        print("\n== (b) CPU wall-clock, real widths, reduced depth/resolution ==", flush=True)
        for family in args.families:
            if FAMILIES[family]["wall"] is None:
                print(f"{family}: FLOPs only (no wall-clock configuration)", flush=True)
                continue
            r = wallclock_for(family, args.alpha, args.reps, args.warmup)
            if not args.skip_flops:
                rf = flops_for(family, args.alpha, depth=r["depth"], latent=tuple(r["latent"]))
                r["flop_ratio_nasa_later"] = rf["nasa_later"] / rf["base"]
                r["flop_ratio_nasa_first"] = rf["nasa_first"] / rf["base"]
                r["flop_ratio_cfg"] = rf["cfg"] / rf["base"]
            m = r["median_s"]
            print(f"{family}, {describe(r)}: {r['params'] / 1e6:.0f}M parameters; median s "
                  + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
                  + f"\n  NASA/none {r['ratio_nasa']:.3f}x (paired {r['paired_ratio_nasa']:.3f}x)"
                  + (f", FLOPs predict {r['flop_ratio_nasa_later']:.4f}x" if "flop_ratio_nasa_later" in r else "")
                  + f"; first call {r['ratio_nasa_first']:.3f}x (paired {r['paired_ratio_nasa_first']:.3f}x)"
                  + (f", FLOPs predict {r['flop_ratio_nasa_first']:.4f}x" if "flop_ratio_nasa_first" in r else "")
                  + f"; CFG/none {r['ratio_cfg']:.3f}x (paired {r['paired_ratio_cfg']:.3f}x)"
                  + f"; load average before/after {r['load_average_before_after']}", flush=True)
            la = r["load_average_before_after"]
            if any(v is not None and v > (os.cpu_count() or 1) * 1.25 for v in la):
                problems.append(f"{family} wall-clock: load average {la} above {os.cpu_count()} cores (noisy times)")
            clocks.append(r)
    out = report.write_report(args.out, table(meta, flops, clocks),
                              dict(meta=meta, flops=flops, wallclock=clocks, problems=problems))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    if problems:
        print("\nNOTE:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
