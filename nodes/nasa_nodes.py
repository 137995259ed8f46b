"""ComfyUI nodes for NASA-I: thin translations of widgets into ``nasa_core`` calls, each defined once
(``schema.NodeDef``) and exposed as V3 or V1 by ``nodes/__init__.py``."""
from __future__ import annotations

import logging

from ..nasa_core.adapters import apply_nasa, negative_tensor
from ..nasa_core.adapters.base import parse_blocks
from ..nasa_core.adapters.comfy_runtime import attach_prompt_negative
from ..nasa_core.adapters.prompt_hook import hook_prompt
from .schema import Input, NodeDef, Output, build_v1

log = logging.getLogger("comfyui-nasa")

ALPHA_TOOLTIP = ("NASA strength alpha: how much of the negative's cross-attention is subtracted in every text "
                 "cross-attention layer (Z+ - alpha * Z-). 0 turns NASA off. Paper defaults: 0.1 for SD1.5-based "
                 "models, 0.2 for SD2.1-based models (SD-Turbo), 0.5 for PixArt-alpha-based models. Too high a "
                 "value washes out the positive prompt.")
NEGATIVE_TOOLTIP = ("What to keep out of the image: a CONDITIONING from CLIP Text Encode with the negative prompt, "
                    "encoded by this model's own text encoder. Unlike the sampler's negative input, it needs no CFG "
                    "and works at cfg 1.0 and in one step.")
SEARCH_ALIASES = ("negative prompt", "nasa", "one step", "few step", "turbo", "cfg 1", "negative attention", "nag")


def alpha_input(default=0.1):
    return Input("alpha", "FLOAT", ALPHA_TOOLTIP, default=default, min=0.0, max=5.0, step=0.01)


# ---------------------------------------------------------------------------------------------------------------
# NASA Negative Conditioning


def attach(positive, nasa_negative, alpha):
    """A per-prompt negative; alpha 0 (or an empty negative) turns NASA off for this prompt. Where ComfyUI has
    conditioning hooks (v0.3.30+) the prompt also carries NASA's hook, so it works on an unpatched MODEL."""
    negative = negative_tensor(nasa_negative, "nasa_negative")
    extra = nasa_negative[0][1] if negative is not None else None  # its mask, pooled output, Llama states travel too
    carried = attach_prompt_negative(positive, negative, alpha, extra)
    if negative is None or alpha == 0.0:
        return (carried,)
    return (hook_prompt(carried, alpha) or carried,)


NEGATIVE_CONDITIONING = NodeDef(
    node_id="NASANegativeConditioning", display_name="NASA Negative Conditioning", function=attach,
    function_name="attach", search_aliases=SEARCH_ALIASES + ("per prompt negative",),
    description=("Carries a negative prompt with this positive prompt so NASA removes it inside the model's "
                 "attention, even in one step at cfg 1.0, on any sampler. On ComfyUI v0.3.30 and later it works on its "
                 "own (a conditioning hook) for SD1.x/2.x/SDXL, FLUX.1 and SD3, and from v0.3.60 for Wan, Qwen-Image, "
                 "FLUX.2, Chroma and HunyuanVideo; PixArt, Z-Image/Lumina 2, Kandinsky 5, LTX and older ComfyUI need "
                 "the MODEL through Apply NASA Model Patch as well (the console says so); HiDream takes its negative "
                 "only through Apply NASA Model Patch. This prompt's negative "
                 "takes precedence over the model's; alpha 0 turns NASA off for this prompt."),
    inputs=(Input("positive", "CONDITIONING", "The prompt to sample (goes on to the sampler's positive input)."),
            Input("nasa_negative", "CONDITIONING", NEGATIVE_TOOLTIP),
            alpha_input()),
    outputs=(Output("CONDITIONING", "positive", "The positive prompt, carrying its NASA negative."),))


# ---------------------------------------------------------------------------------------------------------------
# Apply NASA Model Patch (and Advanced)

MODEL_TOOLTIP = ("The model to patch (SD1.x/2.x/SDXL, FLUX.1, SD3/SD3.5, PixArt, Wan 2.1/2.2, and on ComfyUI v0.3.60+ "
                 "Qwen-Image, FLUX.2, Chroma, HunyuanVideo 1.5, Z-Image, Lumina 2, HiDream, Kandinsky 5, LTX-Video, LTX-2; "
                 "their one-/few-step models). Apply NASA after LoRAs and other attention patches.")
BLOCK_TOOLTIPS = {
    "input_blocks": "Apply in the UNet's down (input) blocks. On DiTs: the first third of the blocks (FLUX.1: its 19 "
                    "double-stream blocks).",
    "middle_block": "Apply in the UNet's middle block. On DiTs: the middle third of the blocks.",
    "output_blocks": "Apply in the UNet's up (output) blocks. On DiTs: the last third of the blocks. All three "
                     "switches on means the family's default on every family (UNet, PixArt, Wan: every block; "
                     "joint-attention models such as FLUX, SD3, Qwen-Image: the first third).",
}
BLOCKS_TEXT_TOOLTIP = ("Overrides the three switches when not empty. Comma-separated: default (the family's "
                       "default), all, input / middle / output (UNet groups; DiTs: thirds), double / single "
                       "(joint-attention block kinds), an index (3) or a range (0-9) counting blocks in the order the "
                       "model runs them (UNet: its text cross-attention layers; FLUX: double blocks first).")


REFERENCE_TOOLTIP = ("Optional, beyond the paper: a prompt the negative is measured from, usually an empty CLIP Text "
                     "Encode. NASA then subtracts what the negative adds to it, alpha * (Z- - Z_ref), instead of the "
                     "negative's whole attention, which also carries what any prompt implies (the model's defaults), "
                     "so less of the positive is lost with it. Applies to NASA Negative Conditioning's negatives too; "
                     "costs a second negative's attention.")


def patch(model, alpha, nasa_negative=None, start_percent=0.0, end_percent=1.0,
          input_blocks=True, middle_block=True, output_blocks=True, blocks="", nasa_reference=None):
    if str(blocks).strip():
        chosen = parse_blocks(blocks)
    else:
        chosen = {name for name, on in (("input", input_blocks), ("middle", middle_block), ("output", output_blocks))
                  if on}
    blocks = chosen
    negative = negative_tensor(nasa_negative, "nasa_negative")
    if negative is None:
        log.info("NASA: no model-wide negative; only negatives carried by NASA Negative Conditioning apply.")
    extra = nasa_negative[0][1] if negative is not None else None  # HiDream reads its Llama states from here
    reference = negative_tensor(nasa_reference, "nasa_reference")
    if nasa_reference is not None and reference is None:
        log.warning("NASA: the nasa_reference conditioning is empty (zeroed out), so the negative is not measured "
                    "from a reference: connect CLIP Text Encode with an empty text instead of a zeroed conditioning.")
    ref_extra = nasa_reference[0][1] if reference is not None else None
    return (apply_nasa(model, negative, alpha, start_percent, end_percent, blocks, negative_extra=extra,
                       reference=reference, reference_extra=ref_extra),)


MODEL_INPUTS = (Input("model", "MODEL", MODEL_TOOLTIP), alpha_input(),
                Input("nasa_negative", "CONDITIONING", NEGATIVE_TOOLTIP + " Leave unconnected to use only negatives "
                      "carried by NASA Negative Conditioning.", optional=True))
MODEL_OUTPUT = (Output("MODEL", "MODEL", "The model with NASA installed (the input model is left as it was)."),)

MODEL_PATCH = NodeDef(
    node_id="ApplyNASAModelPatch", display_name="Apply NASA Model Patch", function=patch, function_name="patch",
    search_aliases=SEARCH_ALIASES,
    description=("Negative prompts for one-step and few-step models (NASA, Negative-Away Steer Attention): the "
                 "negative's attention is subtracted inside the model at about 1-3% extra compute, instead of CFG's "
                 "second model pass. With CFG > 1 it acts on the positive branch only."),
    inputs=MODEL_INPUTS, outputs=MODEL_OUTPUT)

MODEL_PATCH_ADVANCED = NodeDef(
    node_id="ApplyNASAModelPatchAdvanced", display_name="Apply NASA Model Patch (Advanced)", function=patch,
    function_name="patch", search_aliases=SEARCH_ALIASES + ("sigma window", "blocks"),
    description=("Apply NASA Model Patch with the part of sampling it acts in (start/end percent, converted with the "
                 "model sampling in force when sampling), a choice of blocks, and optionally a reference prompt the "
                 "negative is measured from."),
    inputs=MODEL_INPUTS[:2] + (
        Input("start_percent", "FLOAT", "Start of the sampling range NASA acts in (0 = first step).",
              default=0.0, min=0.0, max=1.0, step=0.001),
        Input("end_percent", "FLOAT", "End of the sampling range NASA acts in (1 = last step).",
              default=1.0, min=0.0, max=1.0, step=0.001),
    ) + tuple(Input(name, "BOOLEAN", tip, default=True) for name, tip in BLOCK_TOOLTIPS.items()) + MODEL_INPUTS[2:]
    + (Input("blocks", "STRING", BLOCKS_TEXT_TOOLTIP, default="", optional=True),
       Input("nasa_reference", "CONDITIONING", REFERENCE_TOOLTIP, optional=True)),
    outputs=MODEL_OUTPUT)

NODE_DEFS = [NEGATIVE_CONDITIONING, MODEL_PATCH, MODEL_PATCH_ADVANCED]

# V1 classes: what ComfyUI loads where it has no V3 API, and what the pack's own code and tests call
NASANegativeConditioning = build_v1(NEGATIVE_CONDITIONING)
ApplyNASAModelPatch = build_v1(MODEL_PATCH)
ApplyNASAModelPatchAdvanced = build_v1(MODEL_PATCH_ADVANCED)
