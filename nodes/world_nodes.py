"""A loader for the pack's bundled world model (trained here on a synthetic world of coloured shapes), so a
stock graph (CLIP Text Encode, KSampler, VAE Decode, Save Image) and the NASA nodes run with no download."""
from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def bundled_checkpoints():
    return sorted(p.name for p in MODELS_DIR.glob("nasa_world*.safetensors"))


class LoadNASAWorldModel:
    @classmethod
    def INPUT_TYPES(cls):
        names = bundled_checkpoints() or ["nasa_world_teacher.safetensors"]
        tip = ("A world model shipped in this pack's models/ folder: nasa_world_teacher (SD-style UNet, "
               "cross-attention) or nasa_world_flux (ComfyUI's FLUX classes, joint attention).")
        return {"required": {"checkpoint": (names, {"tooltip": tip})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "NASA"
    DESCRIPTION = ("Loads the small text-to-image model bundled with the pack (64x64 images of coloured shapes; "
                   "prompts like 'a small red circle on a white background'). Use Empty Latent Image at 64x64.")

    def load(self, checkpoint):
        from ..nasa_core.world_model.model import load_world_checkpoint
        path = MODELS_DIR / checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; bundled world models: {bundled_checkpoints() or 'none'}")
        return load_world_checkpoint(str(path))


NODE_CLASS_MAPPINGS = {"LoadNASAWorldModel": LoadNASAWorldModel}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadNASAWorldModel": "Load NASA World Model (bundled)"}
