"""ComfyUI nodes for NASA-I: thin translations of widgets into ``nasa_core`` calls."""
from __future__ import annotations

import logging

from ..nasa_core.adapters import apply_nasa, negative_tensor
from ..nasa_core.adapters.comfy_runtime import attach_prompt_negative

log = logging.getLogger("comfyui-nasa")

CATEGORY = "NASA"

ALPHA_TOOLTIP = ("NASA strength alpha: how much of the negative's cross-attention is subtracted in every text "
                 "cross-attention layer (Z+ - alpha * Z-). 0 turns NASA off. Paper defaults: 0.1 for SD1.5-based "
                 "models, 0.2 for SD2.1-based models (SD-Turbo), 0.5 for PixArt-alpha-based models. Too high a "
                 "value washes out the positive prompt.")
NEGATIVE_TOOLTIP = ("What to keep out of the image: a CONDITIONING from CLIP Text Encode with the negative prompt, "
                    "encoded by this model's own text encoder. Unlike the sampler's negative input, it needs no CFG "
                    "and works at cfg 1.0 and in one step.")


def _alpha_input(default=0.1):
    return ("FLOAT", {"default": default, "min": 0.0, "max": 5.0, "step": 0.01, "tooltip": ALPHA_TOOLTIP})


class NASANegativeConditioning:
    """Attach a NASA negative to a prompt; it travels with that prompt through any sampler."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "The prompt to sample (goes on to the sampler's positive input)."}),
            "nasa_negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP}),
            "alpha": _alpha_input(),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    FUNCTION = "attach"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Carries a negative prompt with this positive prompt so NASA removes it inside the model's "
                   "cross-attention, even in one step at cfg 1.0. The MODEL must go through Apply NASA Model Patch "
                   "(its own negative may be left empty); per-prompt negatives take precedence over the model's.")

    def attach(self, positive, nasa_negative, alpha):
        negative = negative_tensor(nasa_negative, "nasa_negative")
        if negative is None or alpha == 0.0:
            return (positive,)
        return (attach_prompt_negative(positive, negative, alpha),)


class ApplyNASAModelPatch:
    """Patch a MODEL so every text cross-attention layer steers away from a negative prompt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "alpha": _alpha_input(),
        }, "optional": {
            "nasa_negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP + " Leave unconnected to use only "
                                               "negatives carried by NASA Negative Conditioning."}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Negative prompts for one-step and few-step models (NASA, Negative-Away Steer Attention): "
                   "the negative's cross-attention is subtracted inside the model at about 1% extra compute, "
                   "instead of CFG's second model pass. With CFG > 1 it acts on the positive branch only.")

    def patch(self, model, alpha, nasa_negative=None, start_percent=0.0, end_percent=1.0,
              input_blocks=True, middle_block=True, output_blocks=True):
        blocks = {name for name, on in (("input", input_blocks), ("middle", middle_block), ("output", output_blocks)) if on}
        negative = negative_tensor(nasa_negative, "nasa_negative")
        if negative is None:
            log.info("NASA: no model-wide negative; only negatives carried by NASA Negative Conditioning apply.")
        return (apply_nasa(model, negative, alpha, start_percent, end_percent, blocks),)


class ApplyNASAModelPatchAdvanced(ApplyNASAModelPatch):
    """Apply NASA Model Patch with a sigma window and a choice of UNet blocks."""

    @classmethod
    def INPUT_TYPES(cls):
        types = super().INPUT_TYPES()
        types["required"].update({
            "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                        "tooltip": "Start of the sampling range NASA acts in (0 = first step)."}),
            "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                      "tooltip": "End of the sampling range NASA acts in (1 = last step)."}),
            "input_blocks": ("BOOLEAN", {"default": True, "tooltip": "Apply in the UNet's down (input) blocks. "
                                         "On DiTs: the first third of the blocks (FLUX.1: its 19 double-stream blocks)."}),
            "middle_block": ("BOOLEAN", {"default": True, "tooltip": "Apply in the UNet's middle block. "
                                         "On DiTs: the middle third of the blocks."}),
            "output_blocks": ("BOOLEAN", {"default": True, "tooltip": "Apply in the UNet's up (output) blocks. "
                                          "On DiTs: the last third of the blocks. On FLUX/SD3, all three switches on "
                                          "means the family default, the first third only (FLUX.1: the double "
                                          "blocks), the cautious default."}),
        })
        return types


NODE_CLASS_MAPPINGS = {
    "NASANegativeConditioning": NASANegativeConditioning,
    "ApplyNASAModelPatch": ApplyNASAModelPatch,
    "ApplyNASAModelPatchAdvanced": ApplyNASAModelPatchAdvanced,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "NASANegativeConditioning": "NASA Negative Conditioning",
    "ApplyNASAModelPatch": "Apply NASA Model Patch",
    "ApplyNASAModelPatchAdvanced": "Apply NASA Model Patch (Advanced)",
}
