"""Per-family descriptions for the joint-attention route of ``joint_rows.py``: where the text sits in the joint
sequence, how the negative becomes the first block's text input, its rotary positions, which image rows are the
image being generated, and which blocks exist in what order. Each is a few lines about facts of the family's
forward in ComfyUI's tree; the blocks themselves always run their own code.
"""
from __future__ import annotations

import importlib
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
    slot = "dit"                # "dit": patches_replace["dit"]; "object": an object patch on each block

    model_class = None  # (module, class name) of the diffusion model, matched exactly (not its subclasses)

    def matches(self, model_patcher) -> bool:
        module, name = self.model_class
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # a release without this family
            return False
        return type(_dm(model_patcher)) is cls

    def context_width(self, dm) -> int:
        return dm.txt_in.in_features

    def block_lists(self, dm) -> List[Tuple[str, list]]:
        return [("double", list(dm.double_blocks)), ("single", list(dm.single_blocks))]

    def negative_tokens(self, neg: torch.Tensor, info):
        """(negative, valid [n, T]): which raw tokens are real; zero rows are padding (FLUX.2, Wan)."""
        if neg.is_meta:  # FLOP counting (benchmarks): shapes only
            return neg, torch.ones(neg.shape[:2], dtype=torch.bool, device=neg.device)
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

    def single_text_len(self, dm, args, info) -> int:
        raise NotImplementedError(f"{self.name}: single-stream blocks ran before any double block")

    def fresh_rows(self, dm, rows, kind, index, info):
        """Rows the family's text gets anew in this block only (HiDream's per-block Llama layer), for the negative."""
        return None

    def object_forward(self, occupant, patch, *args, **kwargs):
        """slot "object": run ``patch`` around the block's own forward, from the block's own call signature."""
        raise NotImplementedError


def _dm(model_patcher):
    return model_patcher.model.diffusion_model


class ChromaRows(JointRowsFamily):
    name = display = "Chroma"
    untouched = "the positive text rows"

    model_class = ("comfy.ldm.chroma.model", "Chroma")


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

    model_class = ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel")

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

    model_class = ("comfy.ldm.hunyuan_video.model", "HunyuanVideo")

    def embed(self, dm, neg, valid, info):
        t = info.model_timestep.to(neg.device)
        mask = None
        if not valid.is_meta and not bool(valid.all()):
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


class LuminaRows(JointRowsFamily):
    """Z-Image (Turbo) and Lumina 2 (``NextDiT``): one stream [caption; image] from the first main layer on. The
    caption is embedded, padded to a multiple of 32 with the learned pad token (Z-Image) and refined by the
    ``context_refiner`` layers before it joins the image; the negative goes the same way. Its pad tokens run in its
    stream as the model's own do, but are masked out of the subtracted term. The main layers have no ``dit`` slot
    (only post-block patches), so each is an object patch around the layer's own forward."""

    name = "Z-Image"
    display = "Z-Image / Z-Image-Turbo, Lumina 2"
    slot = "object"
    untouched = "the positive caption and its pad tokens, the image pad tokens"

    model_class = ("comfy.ldm.lumina.model", "NextDiT")

    def context_width(self, dm) -> int:
        return dm.cap_embedder[1].in_features

    def block_lists(self, dm):
        return [("single", list(dm.layers))]

    def block_path(self, kind, index) -> str:
        return f"diffusion_model.layers.{index}"

    def object_forward(self, occupant, patch, x, x_mask, freqs_cis, adaln_input=None, transformer_options={}):
        def block(a):
            return {"img": occupant(a["img"], x_mask, a["pe"], adaln_input, transformer_options=a["transformer_options"])}
        return patch({"img": x, "pe": freqs_cis, "transformer_options": transformer_options},
                     {"original_block": block})["img"]

    def _ids(self, tokens, device, first):
        ids = torch.zeros((1, tokens, 3), device=device, dtype=torch.float32)
        ids[:, :, 0] = torch.arange(tokens, device=device, dtype=torch.float32) + first  # caption positions
        return ids

    def _first_position(self, dm, info, device) -> int:
        """Where caption positions start: 1 from v0.3.77 (Z-Image's layout), 0 before. Read off the rotary rows
        the model gave its own caption's first token, not assumed from a release."""
        pe = info.call_pe
        if pe is None or pe.is_meta:
            return 1
        for first in (1, 0):
            candidate = dm.rope_embedder(self._ids(1, device, first)).movedim(1, 2)[0, 0]
            if torch.allclose(candidate.to(pe.dtype).float(), pe[0, 0].float(), atol=1e-2):
                return first
        from ..attention import NASAInputError
        raise NASAInputError(f"NASA: this ComfyUI's {self.display} gives its caption rotary positions NASA does not "
                             "recognise (neither from 0 nor from 1)")

    def embed(self, dm, neg, valid, info):
        h = dm.cap_embedder(neg)
        multiple = getattr(dm, "pad_tokens_multiple", None)
        if multiple:
            extra = (-h.shape[1]) % multiple
            pad = dm.cap_pad_token.to(device=h.device, dtype=h.dtype).unsqueeze(0).expand(h.shape[0], extra, -1)
            h = torch.cat((h, pad), dim=1)
            valid = torch.cat((valid, valid.new_zeros((valid.shape[0], extra))), dim=1)
        info.caption_first = self._first_position(dm, info, h.device)
        freqs = dm.rope_embedder(self._ids(h.shape[1], h.device, info.caption_first)).movedim(1, 2)
        if info.call_pe is not None:  # in the dtype the model's own rotary rows have (cast before v0.3.77)
            freqs = freqs.to(info.call_pe.dtype)
        for layer in dm.context_refiner:
            h = layer(h, None, freqs)
        return h, valid

    def negative_pe(self, dm, tokens, info, device):
        return dm.rope_embedder(self._ids(tokens, device, info.caption_first))

    def _image_tokens(self, dm, info):
        p = dm.patch_size
        h, w = info.latent_shape[-2], info.latent_shape[-1]
        n = ((h + p - 1) // p) * ((w + p - 1) // p)
        multiple = getattr(dm, "pad_tokens_multiple", None)
        padded = n + ((-n) % multiple if multiple else 0)
        return n, padded

    def single_text_len(self, dm, args, info) -> int:
        _, padded = self._image_tokens(dm, info)
        return args["img"].shape[1] - padded

    def generated_rows(self, dm, image_region, info):
        lo, _ = image_region
        n, _ = self._image_tokens(dm, info)
        return lo, lo + n  # the image pad tokens after it are not the image


class HiDreamRows(JointRowsFamily):
    """HiDream-I1 (Full, Dev, Fast): image first; each double block's text is [T5; last Llama layer] (a stream that
    evolves block to block) plus a fresh projected Llama layer that the block gets anew and drops after it; the
    single blocks append a fresh Llama layer to [image; stream] likewise. The negative goes the same way, so it
    needs its Llama states: the conditioning dict's ``conditioning_llama3`` (both nodes pass the negative's
    CONDITIONING dict on). Blocks have no ``dit`` slot: object patches. HiDream sets no
    ``block_index``; the object patch is the block, so each knows its own index."""

    name = "HiDream"
    display = "HiDream-I1"
    image_first = True
    slot = "object"
    untouched = "the positive text (T5 and every Llama layer)"

    model_class = ("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel")

    def context_width(self, dm) -> int:
        return dm.caption_projection[-1].linear.in_features

    def block_lists(self, dm):
        return [("double", list(dm.double_stream_blocks)), ("single", list(dm.single_stream_blocks))]

    def block_path(self, kind, index) -> str:
        return f"diffusion_model.{kind}_stream_blocks.{index}"

    def embed(self, dm, neg, valid, info):
        from ..attention import NASAInputError
        extra = info.negative_extra or {}
        llama = extra.get("conditioning_llama3")
        if llama is None:
            raise NASAInputError(
                "NASA on HiDream needs the negative's Llama states with its T5 text: encode the negative with a CLIP "
                "Text Encode of the HiDream text encoders (its CONDITIONING carries them) and connect it to NASA "
                "Negative Conditioning or Apply NASA Model Patch's nasa_negative, not a bare tensor")
        llama = llama.to(device=neg.device, dtype=neg.dtype)
        steered = info.steered_rows
        if llama.shape[0] not in (1, len(steered)):
            raise NASAInputError(f"the negative's Llama states have batch {llama.shape[0]}; give one negative")
        full = torch.zeros((neg.shape[0],) + tuple(llama.shape[1:]), dtype=neg.dtype, device=neg.device)
        full[steered] = llama.expand(len(steered), *llama.shape[1:])
        info.negative_llama = full  # [B, layers, tokens, width]
        last = len(dm.llama_layers) - 1
        stream = torch.cat((dm.caption_projection[-1](neg),
                            dm.caption_projection[last](full[:, dm.llama_layers[last]])), dim=1)
        valid = torch.cat((valid, valid.new_ones((valid.shape[0], llama.shape[2]))), dim=1)
        return stream, valid

    def fresh_rows(self, dm, rows, kind, index, info):
        j = index if kind == "double" else len(dm.double_stream_blocks) + index
        return dm.caption_projection[j](info.negative_llama[:, dm.llama_layers[j]])

    def negative_pe(self, dm, tokens, info, device):
        ids = torch.zeros((1, tokens, 3), device=device, dtype=torch.float32)  # text ids are zeros
        return dm.pe_embedder(ids).movedim(1, 2)  # its layout is [B, tokens, 1, ...]: to pe_embedder's usual

    def object_forward(self, occupant, patch, image_tokens, image_tokens_masks=None, text_tokens=None,
                       adaln_input=None, rope=None, transformer_options={}):
        double = patch.kind == "double"

        def block(a):
            out = occupant(image_tokens=a["img"], image_tokens_masks=image_tokens_masks,
                           text_tokens=a.get("txt"), adaln_input=adaln_input, rope=a["pe"],
                           transformer_options=a["transformer_options"])
            return {"img": out[0], "txt": out[1]} if double else {"img": out}

        args = {"img": image_tokens, "pe": rope, "transformer_options": transformer_options}
        if double:
            args["txt"] = text_tokens
        out = patch(args, {"original_block": block})
        return (out["img"], out["txt"]) if double else out["img"]


JOINT_ROWS_FAMILIES = [ChromaRows(), Flux2Rows(), QwenImageRows(), HunyuanRows(), LuminaRows(), HiDreamRows()]
