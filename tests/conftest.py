"""Sets up a real ComfyUI runtime for the tests: the modern tree when COMFYUI_PATH points at one,
else the PyPI copy (notcomfy) that scripts/setup.sh installs into .deps/comfy_pypi. Never a stand-in.
ComfyUI runs on the CPU with PyTorch attention; the pack is imported as package ``comfyui_nasa``."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # nasa_testkit

from comfy_runtime import setup_comfy  # noqa: E402

setup_comfy(cpu=True)


def pytest_report_header(config):
    import comfy
    where = os.environ.get("COMFYUI_PATH")
    return f"ComfyUI runtime: {'modern tree ' + where if where else 'PyPI copy (notcomfy 0.1.0)'} ({comfy.__path__[0]})"
