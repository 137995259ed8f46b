"""Scripts and tests start ComfyUI through the pack's own runtime helper (nasa_core/comfy_env.py)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_nasa_runtime", ROOT / "nasa_core" / "comfy_env.py")
_runtime = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_runtime)
setup_comfy = _runtime.setup_comfy
