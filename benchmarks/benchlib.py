"""What every benchmark script shares: the ComfyUI runtime set-up, one denoiser call as ComfyUI's sampler makes it,
FLOP and op counting (on the meta device: see bench_unet.py's docstring for why), peak memory, the load average,
run metadata, and the report writer (report.py). Scripts import it as ``import benchlib`` from benchmarks/."""
from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import sys
import uuid
from pathlib import Path

from report import write_report  # noqa: F401  (re-exported: the one report writer)

ROOT = Path(__file__).resolve().parents[1]


def setup_runtime(device: str):
    """ComfyUI through the pack's own runtime helper (nasa_core/comfy_env.py, as scripts/ use it)."""
    spec = importlib.util.spec_from_file_location("_nasa_runtime", ROOT / "nasa_core" / "comfy_env.py")
    runtime_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime_module)
    runtime_module.setup_comfy(cpu=(device == "cpu"))
    sys.path.insert(0, str(ROOT / "tests"))  # nasa_testkit (init_weights)
    comfy_path = os.environ.get("COMFYUI_PATH")
    import comfy
    where = Path(comfy.__path__[0]).parent
    return f"modern tree ({where})" if comfy_path else f"PyPI copy (notcomfy, {where})"


def model_call(patcher, apply_model, x, sigma, c, cond_or_uncond):
    """One denoiser call the way comfy.samplers.calc_cond_batch makes it, with the model inputs ``c`` (without
    transformer_options: the patcher's, with the call's cond_or_uncond / uuids / sigmas, are added here)."""
    import torch
    mo = patcher.model_options
    to = dict(mo.get("transformer_options", {}))
    to.update(cond_or_uncond=list(cond_or_uncond), uuids=[uuid.uuid4() for _ in cond_or_uncond], sigmas=sigma)
    c = dict(c, transformer_options=to)
    timestep = torch.cat([sigma] * len(cond_or_uncond))
    wrapper = mo.get("model_function_wrapper")
    if wrapper is not None:
        return wrapper(apply_model, {"input": x, "timestep": timestep, "c": c, "cond_or_uncond": list(cond_or_uncond)})
    return apply_model(x, timestep, **c)


def denoiser_call(patcher, apply_model, x, sigma, context, y, cond_or_uncond):
    """model_call with a text context and an optional pooled vector (the UNets)."""
    c = {"c_crossattn": context}
    if y is not None:
        c["y"] = y
    return model_call(patcher, apply_model, x, sigma, c, cond_or_uncond)


def nasa_run_of(patched):
    from comfyui_nasa.nasa_core.adapters.comfy_runtime import NASARun
    w = patched.model_options.get("model_function_wrapper")
    while w is not None and not isinstance(w, NASARun):
        w = getattr(w, "previous_wrapper", None)
    if w is None:
        raise RuntimeError("apply_nasa installed no NASARun wrapper")
    return w


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_op = {str(op).split(".")[-1] if "." in str(op) else str(op): int(n)
              for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def count_module_flops(fn):
    """Total FLOPs of fn() and {module fqn: FLOPs} (FlopCounterMode's per-module counts)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    counts = {name: sum(int(v) for v in ops.values()) for name, ops in counter.get_flop_counts().items()}
    return int(counter.get_total_flops()), counts


def count_ops(fn):
    """How many times each aten op is dispatched during fn() (all ops, not only the ones with FLOPs)."""
    from collections import Counter
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    mode = _Count()
    with mode:
        fn()
    return dict(mode.ops)


def op_diff(a: dict, b: dict) -> dict:
    keys = sorted(set(a) | set(b))
    return {k: a.get(k, 0) - b.get(k, 0) for k in keys if a.get(k, 0) != b.get(k, 0)}


class quiet_fd2:
    """Silence file descriptor 2 (kineto prints profiler start/stop lines there)."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.devnull, 2)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.devnull)
        return False


def cpu_peak_bytes(fn):
    """Peak bytes the CPU allocator holds during fn() above what it held before (and what stays after):
    every allocation/free event torch.profiler records with profile_memory=True, in time order."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted((e.start_ns(), i, e.nbytes()) for i, e in enumerate(prof.profiler.kineto_results.events())
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = allocated = 0
    for _, _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
        allocated += max(nbytes, 0)
    return peak, live, allocated


def cuda_peak_bytes(fn):
    import torch
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.reset_accumulated_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    del out
    stats = torch.cuda.memory_stats()
    return (torch.cuda.max_memory_allocated() - before, torch.cuda.memory_allocated() - before,
            stats.get("allocated_bytes.all.allocated", 0))


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def pct(a, b):
    return 100.0 * a / b


FLOPS_COLUMNS = ("| one call | NASA, first call | floor | overhead / floor | NASA, later calls | {cached} | overhead / that | "
                 "CFG |")


def flops_row(label: str, r: dict) -> str:
    """One markdown row of a FLOP table: ``r`` has base, overhead_first, floor, overhead_later, floor_cached, cfg."""
    b = r["base"]
    return (f"| {label} | {b / 1e12:.3f} TFLOP | +{pct(r['overhead_first'], b):.2f}% | +{pct(r['floor'], b):.2f}% | "
            f"{r['overhead_first'] / r['floor']:.3f}x | +{pct(r['overhead_later'], b):.2f}% | "
            f"+{pct(r['floor_cached'], b):.2f}% | {r['overhead_later'] / r['floor_cached']:.3f}x | "
            f"+{pct(r['cfg'] - b, b):.0f}% |")


def mib(b):
    return b / 2 ** 20


def run_metadata(runtime: str, alpha: float, device: str = "cpu") -> dict:
    """Where and when a benchmark ran (date, ComfyUI runtime, torch, CPU, threads, arguments), printed once and
    saved with its results; every benchmark script shares it."""
    import torch
    cpu_name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), runtime=runtime,
                torch=torch.__version__, python=platform.python_version(), cpu=f"{cpu_name}, {os.cpu_count()} cores",
                threads=torch.get_num_threads(), alpha=alpha, argv=sys.argv[1:])
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    print(f"ComfyUI runtime: {runtime}; torch {torch.__version__}; {meta['cpu']}; {meta['threads']} thread(s)", flush=True)
    return meta
