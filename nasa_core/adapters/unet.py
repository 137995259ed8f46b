"""NASA for ComfyUI's UNetModel: SD1.x, SD2.x, SDXL and their one-/few-step descendants.

Every text cross-attention layer (``BasicTransformerBlock.attn2``) gets a NASA patch in the ``attn2``
replace slot keyed ``(block, number, transformer_index)``, the key ComfyUI's UNet looks up first.
Self-attention (``attn1``) is never touched. Video UNets (SVD), whose attn2 also serves the temporal
layers with an image context, are not this adapter's.
"""
from __future__ import annotations

from typing import Iterator, Tuple

from .base import NASAAdapter, NASASettings, chosen_positions
from .comfy_runtime import NASACrossAttentionPatch, NASARun, install_patch, install_wrapper


def _diffusion_model(model_patcher):
    return model_patcher.model.diffusion_model


def _text_cross_attention_layers(unet) -> Iterator[Tuple[Tuple[str, int, int], object]]:
    """((block name, block number, transformer index), attn2 module) for every text cross-attention."""
    groups = [("input", list(enumerate(unet.input_blocks))),
              ("middle", [(0, unet.middle_block)] if getattr(unet, "middle_block", None) is not None else []),
              ("output", list(enumerate(unet.output_blocks)))]
    for name, blocks in groups:
        for number, block in blocks:
            for layer in block:
                transformer_blocks = getattr(layer, "transformer_blocks", None)
                if transformer_blocks is None:
                    continue
                for index, tblock in enumerate(transformer_blocks):
                    attn2 = getattr(tblock, "attn2", None)
                    # attn2 is self-attention when the block was built without a context (switch_temporal_ca_to_sa)
                    if attn2 is None or getattr(tblock, "switch_temporal_ca_to_sa", False):
                        continue
                    yield (name, number, index), attn2


class UNetAdapter(NASAAdapter):
    family = "UNet (SD1.x / SD2.x / SDXL)"

    def matches(self, model_patcher) -> bool:
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
        unet = _diffusion_model(model_patcher)
        if not isinstance(unet, UNetModel):
            return False
        if getattr(unet, "use_temporal_resblocks", False) or getattr(unet, "use_temporal_attention", False):
            return False  # SVD-style video UNet: its cross-attention context is an image embedding
        return any(True for _ in _text_cross_attention_layers(unet))

    def context_width(self, model_patcher) -> int:
        for _, attn2 in _text_cross_attention_layers(_diffusion_model(model_patcher)):
            return attn2.to_k.in_features
        raise ValueError("no cross-attention layer")

    def layers(self, model_patcher, blocks):
        """The chosen text cross-attention layers: the one rule of base.chosen_positions, each layer answering to
        its UNet group (input/middle/output); the default is every layer."""
        every = list(_text_cross_attention_layers(_diffusion_model(model_patcher)))
        labels = [frozenset({key[0]}) for key, _ in every]
        return [every[j] for j in chosen_positions(labels, blocks, range(len(every)), self.family)]

    def install(self, model_patcher, settings: NASASettings, run: NASARun) -> int:
        layers = self.layers(model_patcher, settings.blocks)
        for key, attn2 in layers:
            def make(_, previous, key=key, attn2=attn2):  # wraps an attn2 patch already in the slot
                return NASACrossAttentionPatch(run, key, key[0], attn2, previous=previous)
            install_patch(model_patcher, run, "attn2", key, make)
        install_wrapper(model_patcher, run)
        return len(layers)
