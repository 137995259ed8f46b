"""Sets up a real ComfyUI runtime for the tests: the modern tree when COMFYUI_PATH points at one,
else the PyPI copy (notcomfy) that .ci/run installs into .deps/comfy_pypi. Never a stand-in."""
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

_comfy_path = os.environ.get("COMFYUI_PATH")
if _comfy_path:
    sys.path.insert(0, str(Path(_comfy_path).resolve()))
elif (ROOT / ".deps" / "comfy_pypi").is_dir():
    sys.path.append(str(ROOT / ".deps" / "comfy_pypi"))
sys.path.insert(0, str(HERE))  # nasa_testkit

# ComfyUI parses its own command line at import: run it on the CPU with PyTorch attention.
_argv = sys.argv
sys.argv = [_argv[0], "--cpu", "--use-pytorch-cross-attention"]
try:
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401
    import comfy.model_management  # noqa: F401
finally:
    sys.argv = _argv

# Import the pack the way ComfyUI does: as a package named after its folder.
if "comfyui_nasa" not in sys.modules:
    spec = importlib.util.spec_from_file_location("comfyui_nasa", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_nasa"] = module
    spec.loader.exec_module(module)


def pytest_report_header(config):
    import comfy
    return f"ComfyUI runtime: {'modern tree ' + _comfy_path if _comfy_path else 'PyPI copy (notcomfy)'} ({Path(comfy.__path__[0])})"
