"""The bundled world model as ComfyUI objects: a real ``UNetModel`` (SD-style, cross-attention) over a fixed
DCT latent, a small text encoder over ComfyUI's CLIP tokenizer, and the matching VAE.

The latent: each 8x8 block of a 64x64 RGB image is taken to its 2-D DCT and the 4x4 lowest frequencies are
kept (3 x 16 = 48 channels on an 8x8 grid). ComfyUI's "latent = image / 8" holds, so the stock Empty Latent
Image at 64x64 works; the UNet runs on 8x8 positions (cheap on a CPU); and the codec is fixed, not learned:
decoding is a few matrix products, off by 0.013 on average on the world's images (flat shapes), which the
attribute reader reads exactly as the originals. Why not the plain 8x8 fold (192 channels): a 64-wide UNet
cannot carry 192 noise channels per position, and its samples stay noisy.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence

from pathlib import Path

import torch
from torch import nn

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import comfy.utils

FOLD = 8        # image pixels per latent position, each way
KEEP = 4        # DCT frequencies kept per block, each way
IMAGE_SIZE = 64
LATENT_CHANNELS = 3 * KEEP * KEEP  # 48
TEXT_WIDTH = 128
MAX_TOKENS = 77
DC_SCALE = 1.0 / FOLD  # the DC coefficient is 8x the block mean: scaled back to the pixel range

UNET_CONFIG = dict(
    use_checkpoint=False, image_size=IMAGE_SIZE // FOLD, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
    model_channels=64, num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
    transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, num_head_channels=32,
    context_dim=TEXT_WIDTH, use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, dtype=torch.float32,
)


# --------------------------------------------------------------------------------------------------------
# Latent: blockwise DCT, low frequencies


def _dct_matrix(n: int = FOLD) -> torch.Tensor:
    k = torch.arange(n).unsqueeze(1).double()
    i = torch.arange(n).unsqueeze(0).double()
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.float()  # orthonormal: m @ m.T == I


_DCT = _dct_matrix()
_SCALE = torch.ones(KEEP, KEEP)
_SCALE[0, 0] = DC_SCALE


def to_latent(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 48, H/8, W/8]: per 8x8 block and channel, the 4x4 lowest DCT frequencies."""
    b, c, h, w = images.shape
    d = _DCT.to(images.device, images.dtype)
    blocks = images.reshape(b, c, h // FOLD, FOLD, w // FOLD, FOLD).permute(0, 1, 2, 4, 3, 5)  # b c y x i j
    coef = (d @ blocks @ d.T)[..., :KEEP, :KEEP] * _SCALE.to(images.device, images.dtype)
    return coef.permute(0, 1, 4, 5, 2, 3).reshape(b, c * KEEP * KEEP, h // FOLD, w // FOLD)


def from_latent(latent: torch.Tensor) -> torch.Tensor:
    """[B, 48, h, w] -> [B, 3, 8h, 8w] (the dropped frequencies are zero)."""
    b, _, h, w = latent.shape
    d = _DCT.to(latent.device, latent.dtype)
    coef = latent.reshape(b, 3, KEEP, KEEP, h, w).permute(0, 1, 4, 5, 2, 3) / _SCALE.to(latent.device, latent.dtype)
    full = torch.zeros(b, 3, h, w, FOLD, FOLD, device=latent.device, dtype=latent.dtype)
    full[..., :KEEP, :KEEP] = coef
    blocks = d.T @ full @ d
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, 3, h * FOLD, w * FOLD)


class BlockDCT(comfy.latent_formats.LatentFormat):
    """The block-DCT latent as the model sees it. ``channel_std`` (48 numbers, optional): the model works on
    each channel divided by its standard deviation over the world's images, so every channel meets the noise
    at the same signal-to-noise ratio (as SD's scale_factor does for its one scale). Without it the DCT's
    high-frequency channels (std ~0.05 against the DC's ~0.6) are drowned by the noise at almost every
    sigma, and the model learns edges only at the last few. The VAE stays the plain codec either way."""
    latent_channels = LATENT_CHANNELS
    scale_factor = 1.0

    def __init__(self, channel_std: Optional[Sequence[float]] = None):
        self.channel_std = None if channel_std is None else torch.tensor([float(v) for v in channel_std])

    def _std(self, latent):
        return self.channel_std.to(latent.device, latent.dtype).view(1, -1, 1, 1)

    def process_in(self, latent):
        return latent if self.channel_std is None else latent / self._std(latent)

    def process_out(self, latent):
        return latent if self.channel_std is None else latent * self._std(latent)


class _DCTDecoder(nn.Module):
    """The codec as ComfyUI VAEs expose their network (``first_stage_model.decode``: latent -> [-1, 1] images,
    differentiable), so trainers decode the world's latents the way they decode any VAE's."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return from_latent(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return to_latent(x)


class WorldVAE:
    """What ComfyUI's VAE Decode / VAE Encode nodes call: decode(latent) -> [B, H, W, 3] in [0, 1];
    encode(pixels [B, H, W, 3] in [0, 1]) -> latent. A fixed transform: encode(decode(z)) == z."""

    latent_channels = LATENT_CHANNELS
    downscale_ratio = FOLD
    upscale_ratio = FOLD
    output_channels = 3
    vae_dtype = torch.float32
    first_stage_model = _DCTDecoder()

    def decode(self, samples: torch.Tensor, **kwargs) -> torch.Tensor:
        images = from_latent(samples.float().cpu()).clamp(-1, 1)
        return ((images + 1) / 2).movedim(1, -1)

    def encode(self, pixels: torch.Tensor, **kwargs) -> torch.Tensor:
        pixels = pixels[..., :3].float().cpu()
        h, w = pixels.shape[1] // FOLD * FOLD, pixels.shape[2] // FOLD * FOLD
        return to_latent(pixels[:, :h, :w].movedim(-1, 1) * 2 - 1)

    def spacial_compression_decode(self):
        return FOLD

    def spacial_compression_encode(self):
        return FOLD

    def memory_used_decode(self, shape, dtype):
        return 0

    def memory_used_encode(self, shape, dtype):
        return 0


# --------------------------------------------------------------------------------------------------------
# Text: ComfyUI's CLIP tokenizer, a small transformer encoder


def clip_tokenizer_path() -> str:
    """ComfyUI's own copy of CLIP's tokenizer files. The PyPI copy of ComfyUI lacks them; there the same BPE
    merges come from the open_clip package's data file (read as data, open_clip is not imported), laid out the
    way ComfyUI's copy is."""
    comfy_dir = os.path.join(os.path.dirname(os.path.realpath(comfy.sd1_clip.__file__)), "sd1_tokenizer")
    if os.path.isfile(os.path.join(comfy_dir, "vocab.json")):
        return comfy_dir
    return _tokenizer_from_open_clip()


def _bytes_to_unicode() -> Dict[int, str]:
    """CLIP's reversible byte -> printable-character table (the base of its byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _tokenizer_from_open_clip() -> str:
    import gzip
    import importlib.util
    import json
    import tempfile
    spec = importlib.util.find_spec("open_clip")
    bpe = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz") if spec else None
    if bpe is None or not os.path.isfile(bpe):
        raise FileNotFoundError("CLIP's tokenizer files are missing from this ComfyUI (comfy/sd1_tokenizer) and the "
                                "open_clip_torch package is not installed to provide them")
    out = os.path.join(tempfile.gettempdir(), "comfyui-nasa-clip-tokenizer")
    if not os.path.isfile(os.path.join(out, "vocab.json")):
        lines = gzip.open(bpe).read().decode("utf-8").split("\n")
        merges = lines[1:49152 - 256 - 2 + 1]
        base = list(_bytes_to_unicode().values())
        vocab = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges] + \
            ["<|startoftext|>", "<|endoftext|>"]
        os.makedirs(out, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=out)
        with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({tok: i for i, tok in enumerate(vocab)}, f)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                       "unk_token": "<|endoftext|>", "model_max_length": 77, "do_lower_case": True}, f)
        for name in ("merges.txt", "tokenizer_config.json", "vocab.json"):  # vocab.json last: it marks completion
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
        os.rmdir(tmp)
    return out


class WorldTokenizer(comfy.sd1_clip.SDTokenizer):
    """ComfyUI's SD1 CLIP tokenizer (BPE vocab shipped with ComfyUI), 77 tokens, for the world's encoder."""

    def __init__(self, embedding_directory=None, tokenizer_data={}, **kwargs):
        super().__init__(tokenizer_path=clip_tokenizer_path(), embedding_directory=embedding_directory,
                         embedding_size=TEXT_WIDTH, embedding_key="nasa_world", tokenizer_data=tokenizer_data)

    def ids(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, 77] of plain texts (weights ignored), as the encoder sees them in ComfyUI."""
        return torch.tensor([[int(t[0]) for t in self.tokenize_with_weights(text)[0]] for text in texts])


class WorldTextEncoder(nn.Module):
    """Token ids -> [B, 77, 128]. CLIP's 49408-token vocabulary is mapped to the few hundred ids the
    world's captions use (``vocab``); any other token shares one 'unknown' embedding."""

    def __init__(self, vocab: Sequence[int], width: int = TEXT_WIDTH, layers: int = 2, heads: int = 4):
        super().__init__()
        self.register_buffer("vocab", torch.tensor(sorted(set(int(v) for v in vocab)), dtype=torch.long))
        self.embed = nn.Embedding(len(self.vocab) + 1, width)
        self.position = nn.Parameter(torch.randn(MAX_TOKENS, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def compact(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.vocab, ids).clamp(max=len(self.vocab) - 1)
        known = self.vocab[pos] == ids
        return torch.where(known, pos + 1, torch.zeros_like(pos))  # 0 = unknown

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.compact(ids)) + self.position[: ids.shape[1]]
        return self.norm(self.encoder(x))


class WorldClipModel(nn.Module):
    """The ``cond_stage_model`` ComfyUI's CLIP object drives (CLIP Text Encode and friends)."""

    def __init__(self, device=None, dtype=None, model_options={}, encoder: Optional[WorldTextEncoder] = None, **kwargs):
        super().__init__()
        self.encoder = encoder if encoder is not None else WorldTextEncoder([])
        self.dtypes = {torch.float32}

    def reset_clip_options(self):
        pass

    def set_clip_options(self, options):
        pass

    def encode_token_weights(self, token_weight_pairs):
        ids = torch.tensor([[int(t[0]) for t in batch] for batch in token_weight_pairs], dtype=torch.long)
        device = self.encoder.position.device
        with torch.no_grad():
            cond = self.encoder(ids.to(device)).float()
        cond = cond.reshape(1, -1, cond.shape[-1])  # long prompts: 77-token chunks side by side, as ComfyUI does
        return cond, cond.mean(dim=1)

    def load_sd(self, sd):
        return self.encoder.load_state_dict(sd, strict=False)


# --------------------------------------------------------------------------------------------------------
# The diffusion model


class NASAWorld(comfy.supported_models_base.BASE):
    """ComfyUI model config for the bundled world model: SD-style v-prediction model, folded-pixel latent."""

    unet_config = {}
    unet_extra_config = {}
    latent_format = BlockDCT
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float32]

    def model_type(self, state_dict, prefix=""):
        # v-prediction: 192 noise channels per position cannot pass through a 64-wide UNet, so epsilon
        # prediction is capped far from zero; v is about -x0 at high noise, where sampling needs it most
        return comfy.model_base.ModelType.V_PREDICTION

    def inpaint_model(self):
        return False  # ComfyUI takes any UNet with more than 4 input channels for an inpainting model

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(WorldTokenizer, WorldClipModel)


def build_unet_model(seed: Optional[int] = None, width: int = 64, latent_std: Optional[Sequence[float]] = None):
    """A fresh ComfyUI BaseModel (UNetModel inside) with the world config; random init when seeded.
    ``width``: the UNet's model_channels; ``latent_std``: per-channel latent scale (see BlockDCT)."""
    config = NASAWorld(dict(UNET_CONFIG, model_channels=int(width)))
    config.latent_format = BlockDCT(latent_std)
    model = config.get_model({})
    if seed is not None:
        init_unet(model.diffusion_model, seed)
    return model


def init_unet(unet: nn.Module, seed: int):
    """ComfyUI's ops skip weight init; give the UNet a standard one (zero output layers, as SD does)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.dim() == 1:  # 1-D weights are the GroupNorm/LayerNorm scales; 1-D biases start at 0
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(1.0 / p[0].numel()))
        for m in unet.modules():  # zero the last conv of each residual branch and the output: stable start
            if type(m).__name__ == "ResBlock":
                nn.init.zeros_(m.out_layers[-1].weight)
        nn.init.zeros_(unet.out[-1].weight)


def world_vocab(tokenizer: WorldTokenizer, texts: Sequence[str]) -> List[int]:
    ids = tokenizer.ids(list(texts))
    return sorted(set(ids.flatten().tolist()))


def save_world_checkpoint(path: str, unet_state: Dict[str, torch.Tensor], encoder_state: Dict[str, torch.Tensor],
                          metadata: Optional[Dict[str, str]] = None, dtype=torch.float16):
    """One safetensors file: 'model.*' UNet weights, 'text.*' encoder weights, written atomically."""
    sd = {f"model.{k}": (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in unet_state.items()}
    sd.update({f"text.{k}": (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in encoder_state.items()})
    tmp = f"{path}.tmp"
    comfy.utils.save_torch_file(sd, tmp, metadata=metadata)
    os.replace(tmp, path)


def checkpoint_metadata(path: str) -> Dict[str, str]:
    """The safetensors header's metadata ({} for other files)."""
    try:
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def checkpoint_world(path: str) -> str:
    """The world a checkpoint learnt: its metadata's "world", else v1 (files from before world v2)."""
    return checkpoint_metadata(path).get("world", "v1")


def load_world_checkpoint(path: str):
    """(MODEL, CLIP, VAE) for ComfyUI from a world checkpoint file. Its metadata entry "arch" says which
    model: "flux" (flux_world.py), else the UNet (files written before the entry existed have none)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"world checkpoint {path} does not exist")
    try:
        sd = comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as e:  # truncated or corrupt file, or not a tensor file at all
        raise ValueError(f"{path} could not be read as a checkpoint ({type(e).__name__}: {e}); the file is corrupt "
                         "or incomplete: restore it from the pack (git checkout models/) or download it again") from None
    unet_sd = {k[len("model."):]: v.float() for k, v in sd.items() if k.startswith("model.")}
    text_sd = {k[len("text."):]: (v.float() if v.is_floating_point() else v) for k, v in sd.items() if k.startswith("text.")}
    if not unet_sd or "vocab" not in text_sd:
        raise ValueError(f"{path} is not a NASA world-model checkpoint (needs 'model.*' and 'text.*' tensors)")
    meta = checkpoint_metadata(path)
    arch = meta.get("arch", "unet")
    latent_std = json.loads(meta["latent_std"]) if meta.get("latent_std") else None
    tokenizer = WorldTokenizer
    if arch == "flux":
        from . import flux_world
        model = flux_world.load(unet_sd, meta, path, latent_std=latent_std)
        tokenizer = flux_world.WorldFluxTokenizer
    elif arch == "unet":
        width = unet_sd["input_blocks.0.0.weight"].shape[0] if "input_blocks.0.0.weight" in unet_sd else 64
        model = build_unet_model(width=width, latent_std=latent_std)
        missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path} does not match the world UNet: missing {missing[:3]}..., unexpected {unexpected[:3]}...")
    else:
        raise ValueError(f"{path} has world-model arch {arch!r}; this code knows 'unet' and 'flux'")
    layers = len({k.split(".")[2] for k in text_sd if k.startswith("encoder.layers.")}) or 2
    encoder = WorldTextEncoder(text_sd["vocab"].tolist(), layers=layers)
    encoder.load_state_dict(text_sd)
    encoder.eval()
    device = comfy.model_management.get_torch_device()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device,
                                               offload_device=comfy.model_management.unet_offload_device())
    target = comfy.supported_models_base.ClipTarget(tokenizer, WorldClipModel)
    target.params = {"encoder": encoder}
    clip = comfy.sd.CLIP(target=target, embedding_directory=None)
    return patcher, clip, WorldVAE()
