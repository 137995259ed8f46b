"""Per-family descriptions for the joint-attention route of ``joint_rows.py``: where the text sits in the joint
sequence, how the negative becomes the first block's text input, its rotary positions, which image rows are the
image being generated, and which blocks exist in what order. Each is a few lines about facts of the family's
forward in ComfyUI's tree; the blocks themselves always run their own code.
"""
from __future__ import annotations

from typing import List, Tuple

import torch


class JointRowsFamily:
    """Defaults: text first, FLUX-style block arguments, text tokens at rotary position 0, every image-region
    token generated, all negative tokens real."""

    name = "joint"
    display = "joint"
    image_first = False
    txt_key = "txt"
    img_key = "img"
    untouched = "nothing else"  # README: which tokens NASA never steers or subtracts on this family

    def matches(self, model_patcher) -> bool:
        raise NotImplementedError

    def context_width(self, dm) -> int:
        return dm.txt_in.in_features

    def block_lists(self, dm) -> List[Tuple[str, list]]:
        return [("double", list(dm.double_blocks)), ("single", list(dm.single_blocks))]

    def negative_tokens(self, neg: torch.Tensor, info):
        """(negative, valid [n, T]): which raw tokens are real; zero rows are padding (FLUX.2, Wan)."""
        return neg, neg.abs().amax(dim=-1) > 0

    def embed(self, dm, neg, valid, info):
        return dm.txt_in(neg)

    def text_ids(self, dm, tokens: int, info, device) -> torch.Tensor:
        """The rotary ids the family gives a prompt of ``tokens`` text tokens (zeros: FLUX.1-style)."""
        return torch.zeros((1, tokens, len(dm.pe_embedder.axes_dim)), device=device, dtype=torch.float32)

    def negative_pe(self, dm, tokens: int, info, device):
        return dm.pe_embedder(self.text_ids(dm, tokens, info, device))

    def generated_rows(self, dm, image_region: Tuple[int, int], info) -> Tuple[int, int]:
        return image_region

    def single_text_len(self, args, info) -> int:
        raise NotImplementedError(f"{self.name}: single-stream blocks ran before any double block")


def _dm(model_patcher):
    return model_patcher.model.diffusion_model


class ChromaRows(JointRowsFamily):
    name = display = "Chroma"
    untouched = "the positive text rows"

    def matches(self, model_patcher) -> bool:
        try:
            from comfy.ldm.chroma.model import Chroma
        except ImportError:
            return False
        return type(_dm(model_patcher)) is Chroma


class Flux2Rows(JointRowsFamily):
    """FLUX.2 (dev, klein): FLUX blocks with global modulation; ComfyUI left-pads the text to 512 tokens with zeros
    and gives text tokens positions along ``txt_ids_dims``. The negative takes the positions left-padding would give
    it; zero rows are padding, masked out of both the negative's own attention and the subtraction."""

    name = "FLUX.2"
    display = "FLUX.2 (dev, klein)"
    untouched = "the positive text and its zero padding, reference images after the generated image"
    pad_to = 512

    def matches(self, model_patcher) -> bool:
        try:
            import comfy.model_base
            from comfy.ldm.flux.model import Flux
        except ImportError:
            return False
        model_base_flux2 = getattr(comfy.model_base, "Flux2", None)
        return (model_base_flux2 is not None and isinstance(model_patcher.model, model_base_flux2)
                and type(_dm(model_patcher)) is Flux)

    def embed(self, dm, neg, valid, info):
        if getattr(dm, "txt_norm", None) is not None:
            neg = dm.txt_norm(neg)
        return dm.txt_in(neg)

    def text_ids(self, dm, tokens, info, device):
        ids = super().text_ids(dm, tokens, info, device)
        start = max(self.pad_to - tokens, 0)
        dims = getattr(dm.params, "txt_ids_dims", None)
        if dims is None:  # v0.3.77: FLUX.2's four rotary axes put text positions on the last one
            dims = [3] if len(dm.params.axes_dim) == 4 else []
        for d in dims:
            ids[:, :, d] = torch.arange(start, start + tokens, device=device, dtype=torch.float32)
        return ids

    def generated_rows(self, dm, image_region, info):
        lo, _ = image_region
        shape = info.latent_shape
        return lo, lo + shape[-1] * shape[-2]  # patch size 1; reference latents follow the image


class QwenImageRows(JointRowsFamily):
    """Qwen-Image (and -Edit): double-stream blocks over [text; image; reference latents]; text positions start
    past the image grid (``txt_start``) on all three rotary axes."""

    name = "Qwen-Image"
    display = "Qwen-Image (and Edit)"
    untouched = "the positive text, edit reference latents after the generated image"

    def matches(self, model_patcher) -> bool:
        try:
            from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
        except ImportError:
            return False
        return type(_dm(model_patcher)) is QwenImageTransformer2DModel

    def block_lists(self, dm):
        return [("double", list(dm.transformer_blocks))]

    def embed(self, dm, neg, valid, info):
        return dm.txt_in(dm.txt_norm(neg))

    def negative_pe(self, dm, tokens, info, device):
        p = dm.patch_size
        h, w = info.latent_shape[-2], info.latent_shape[-1]
        start = round(max(((w + (p // 2)) // p) // 2, ((h + (p // 2)) // p) // 2))
        ids = torch.arange(start, start + tokens, device=device).reshape(1, -1, 1).repeat(1, 1, 3)
        return dm.pe_embedder(ids)

    def generated_rows(self, dm, image_region, info):
        lo, _ = image_region
        p = 2
        shape = info.latent_shape
        frames = shape[2] if len(shape) == 5 else 1
        return lo, lo + frames * ((shape[-2] + p - 1) // p) * ((shape[-1] + p - 1) // p)


class HunyuanRows(JointRowsFamily):
    """HunyuanVideo, HunyuanVideo 1.5, HunyuanImage 2.1: image first, then the text ([byT5 glyph tokens; LLM text]
    on 1.5, vision tokens for I2V); FLUX-style double then single blocks. The negative goes through the model's
    token refiner (``txt_in``, which reads the timestep) and follows the whole text."""

    name = "HunyuanVideo"
    display = "HunyuanVideo / 1.5, HunyuanImage 2.1"
    image_first = True
    untouched = "the positive text, byT5 glyph tokens, I2V vision tokens, reference latents before the image"

    def matches(self, model_patcher) -> bool:
        try:
            from comfy.ldm.hunyuan_video.model import HunyuanVideo
        except ImportError:
            return False
        return type(_dm(model_patcher)) is HunyuanVideo

    def embed(self, dm, neg, valid, info):
        t = info.model_timestep
        mask = None
        if not bool(valid.all()):
            mask = (valid.to(neg.dtype) - 1) * torch.finfo(neg.dtype).max
        h = dm.txt_in(neg, t, mask)
        if getattr(dm, "cond_type_embedding", None) is not None:
            h = h + dm.cond_type_embedding(torch.zeros_like(h[:, :, 0], dtype=torch.long)).to(h.dtype)
        return h

    def context_width(self, dm) -> int:
        return dm.txt_in.input_embedder.in_features

    def generated_rows(self, dm, image_region, info):
        _, hi = image_region
        p = dm.patch_size
        shape = info.latent_shape
        dims = shape[2:]
        count = 1
        for size, ps in zip(dims, p):
            count *= (size + ps // 2) // ps
        return hi - count, hi  # reference latents come before the image


JOINT_ROWS_FAMILIES = [ChromaRows(), Flux2Rows(), QwenImageRows(), HunyuanRows()]
