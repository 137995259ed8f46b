"""Start a real ComfyUI runtime for the command-line tools (trainers, demo, benchmarks) when they run
outside ComfyUI: the tree at COMFYUI_PATH, else the ComfyUI this pack sits in (ComfyUI/custom_nodes/<pack>),
else the PyPI copy in .deps/comfy_pypi that scripts/setup.sh installs. Inside ComfyUI none of this runs: ComfyUI has already set itself up."""
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _enclosing_comfyui():
    """The ComfyUI this pack is installed in (ComfyUI/custom_nodes/<pack>), if any."""
    for parent in ROOT.parents:
        if (parent / "comfy").is_dir() and (parent / "nodes.py").is_file():
            return str(parent)
    return None


def setup_comfy(cpu=None, import_pack: bool = True):
    """Make ``comfy`` importable, parse ComfyUI's arguments (CPU unless a GPU is there, PyTorch attention),
    and import this pack as package ``comfyui_nasa``, the way ComfyUI imports a custom node folder."""
    if "comfy.model_management" not in sys.modules:
        path = os.environ.get("COMFYUI_PATH") or _enclosing_comfyui()
        if path:
            sys.path.insert(0, str(Path(path).resolve()))
        elif (ROOT / ".deps" / "comfy_pypi").is_dir():
            sys.path.append(str(ROOT / ".deps" / "comfy_pypi"))
        import torch
        if cpu is None:
            cpu = not torch.cuda.is_available()
        argv = sys.argv
        sys.argv = [argv[0]] + (["--cpu"] if cpu else []) + ["--use-pytorch-cross-attention"]
        try:
            import comfy.options
            comfy.options.enable_args_parsing()
            import comfy.model_management  # noqa: F401  (parses the arguments above)
        finally:
            sys.argv = argv
    if import_pack and "comfyui_nasa" not in sys.modules:
        spec = importlib.util.spec_from_file_location("comfyui_nasa", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["comfyui_nasa"] = module
        spec.loader.exec_module(module)
    return sys.modules.get("comfyui_nasa")


def autograd_safe_context(arch: str = "unet"):
    """For the trainers (world model and NASA-T): the November-2024 ComfyUI adds residuals in place inside BasicTransformerBlock (``x += n``) after a
    LayerNorm saved ``x`` for backward, which autograd refuses, and both ComfyUI copies do so in Flux's
    blocks (``img += gate * ...``). There, give autograd its own copies of the tensors it saves (more
    memory, same numbers); elsewhere, nothing."""
    import contextlib
    import inspect
    import torch
    if arch == "unet":
        from comfy.ldm.modules.attention import BasicTransformerBlock
        if "x += n" not in inspect.getsource(BasicTransformerBlock.forward):
            return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


def enable_flux_rope_backward():
    """For the trainers (world model and NASA-T), on Flux-family models. The modern ComfyUI applies Flux's
    RoPE through comfy_kitchen's custom op ``comfy_kitchen::apply_rope``, which has no autograd formula, so
    backward through Flux stops there. RoPE is a fixed rotation of each (even, odd) pair by the 2x2 matrices
    in ``freqs_cis``; its gradient is the same op with the matrices transposed. Registered through torch.library (the route the error message
    names) once, and only when the op exists and cannot backward; inference never touches it."""
    import torch
    import comfy.ldm.flux.math as flux_math
    op = getattr(getattr(torch.ops, "comfy_kitchen", None), "apply_rope", None)
    if op is None or getattr(flux_math.apply_rope, "__module__", "") == flux_math.__name__:
        return False  # the November-2024 copy (or no comfy_kitchen): plain torch RoPE, autograd works
    q = torch.zeros(1, 1, 1, 2, requires_grad=True)
    fc = torch.eye(2).reshape(1, 1, 1, 1, 2, 2)
    try:
        sum(t.sum() for t in op(q, q, fc)).backward()
        return False
    except RuntimeError as e:
        if "autograd" not in str(e):
            raise

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])

    def backward(ctx, grad_q, grad_k):
        (freqs_cis,) = ctx.saved_tensors
        gq, gk = op(grad_q.contiguous(), grad_k.contiguous(), freqs_cis.transpose(-1, -2).contiguous())
        return gq, gk, None

    torch.library.register_autograd("comfy_kitchen::apply_rope", backward, setup_context=setup_context)
    return True
