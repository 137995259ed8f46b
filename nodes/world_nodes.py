"""A loader for the pack's bundled world model (trained here on a synthetic world of coloured shapes), so a
stock graph (CLIP Text Encode, KSampler, VAE Decode, Save Image) and the NASA nodes run with no download."""
from __future__ import annotations

from pathlib import Path

from .schema import Input, NodeDef, Output, build_v1

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def bundled_checkpoints():
    return sorted(p.name for p in MODELS_DIR.glob("nasa_world*.safetensors"))


def load(checkpoint):
    from ..nasa_core.world_model.model import load_world_checkpoint
    path = MODELS_DIR / checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; bundled world models: {bundled_checkpoints() or 'none'}")
    return load_world_checkpoint(str(path))


WORLD_LOADER = NodeDef(
    node_id="LoadNASAWorldModel", display_name="Load NASA World Model (bundled)", function=load,
    function_name="load", search_aliases=("nasa", "world model", "demo", "offline"),
    description=("Loads the small text-to-image model bundled with the pack (64x64 images of coloured shapes; "
                 "prompts like 'a small red circle on a white background'). Use Empty Latent Image at 64x64."),
    inputs=(Input("checkpoint", "COMBO", "A world model shipped in this pack's models/ folder: nasa_world_teacher "
                  "(SD-style UNet, cross-attention; 20 steps, CFG 3) or nasa_world_flux (ComfyUI's FLUX classes, "
                  "joint attention), and their one-step students (*_student_sbv2, *_student_nasa_t; 1 step, cfg 1).",
                  choices=lambda: bundled_checkpoints() or ["nasa_world_teacher.safetensors"]),),
    outputs=(Output("MODEL", "MODEL", "The world model."), Output("CLIP", "CLIP", "Its text encoder."),
             Output("VAE", "VAE", "Its fixed image codec.")))

NODE_DEFS = [WORLD_LOADER]

LoadNASAWorldModel = build_v1(WORLD_LOADER)
