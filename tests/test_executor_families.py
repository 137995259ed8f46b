"""Both NASA nodes in a real ComfyUI graph on the 2025-2026 families, run by ComfyUI's executor: a diffusion-model
file of the family (ComfyUI's own classes, random weights, built by the family's test builder) loaded by the stock
UNETLoader, so ComfyUI's own model detection picks the model config; the family's own latent node (loaded from
comfy_extras as ComfyUI loads it); the stock KSampler at cfg 1 (Wan 2.2 A14B: two KSamplerAdvanced, one per expert)
and SaveLatent. Each family's file is written once per module and its graphs run on an executor of their own.

Each file is as small as ComfyUI's detection allows: detection must read the family's layout back from it. It reads
head counts from widths (HunyuanVideo and Wan: one head per 128, LTX: 32 heads), fixes what it does not read (Wan's
and LTX-Video's text widths, Kandinsky 5's text and CLIP widths, HunyuanVideo 1.5's vision projection), and reads
LTX-2's audio sizes from the file's ``config`` metadata, as real LTX-2 files carry them. Those families are a few
million parameters and run on every release that has them (``compat``). Qwen-Image, Chroma and Lumina 2, whose
detection fixes the real width (3072 / 2304, and Chroma's 5120-wide guidance approximator), are one block at that
width (380-505 M parameters, 15-60 s, up to 7 GB): whole-suite runs only. Z-Image (3840 wide: 900 M parameters for
one block and its four refiners), FLUX.2 (48 heads of 128: 1.7 G) and HiDream-I1 (detection builds all 48 blocks)
get no file: a test-only loader (NASATestModel) builds the MODEL from ComfyUI's own config class (ZImage, Flux2,
HiDream) at a tiny width with the family's test builder, and everything after it is the same stock graph (compat).

The text comes from a test-only node (the real text encoders are multi-billion-parameter LLMs; what is tested is the
graph around the model), as do LTX-2's audio latent and Wan 2.2 TI2V's VAE input, which need an audio VAE and a VAE
the graph does not otherwise use; they are registered for this module and removed after it. HiDream's text is what
its encoders hand over: T5 as the tensor, the pooled CLIP-L+G and every Llama layer (``conditioning_llama3``)."""
from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import sys
import uuid
from typing import Callable

import pytest
import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.supported_models

from family_testkit import hidream_conditioning
from test_executor import (MessageSink, capture_problems, comfy_modules, forget_modules, full_tree, load_with_comfyui,
                           new_executor, pack_folder, restored_registry, settled, validate)

HAS_OVERRIDE = hasattr(comfy_attention, "wrap_attn")
NO_OVERRIDE = "no attention override (wrap_attn, v0.3.60+): NASA refuses the 2025-2026 joint families here"


def _randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ the families
# Each builder returns the state dict of one diffusion-model file and the file's metadata.


def _state(patcher):
    return patcher.model.diffusion_model.state_dict()


def _at_detected_sizes(small, seed, **sizes):
    """The builder's model rebuilt with the sizes ComfyUI's detection fixes (what the builder does not vary)."""
    from nasa_testkit import init_weights
    config = small.model.model_config
    accepted = inspect.signature(type(small.model.diffusion_model).__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):  # sizes this release's class does not take yet
        sizes = {k: v for k, v in sizes.items() if k in accepted}
    model = type(config)(dict(config.unet_config, **sizes)).get_model({})
    init_weights(model.diffusion_model, seed)
    return model.diffusion_model.state_dict()


def hunyuan_video(seed):
    """HunyuanVideo T2V, 128 wide (one head of 128: detection reads num_heads = width / 128); a CLIP-L pooled input
    and a guidance input, as the real checkpoint has them (what tells it from HunyuanImage 2.1)."""
    import comfy.ldm.hunyuan_video.model as hv
    from family_testkit import release_fields
    from nasa_testkit import init_weights
    cfg = {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
           "context_in_dim": 32, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 2,
           "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 2, 2],
           "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
           "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
    model = comfy.supported_models.HunyuanVideo(release_fields(cfg, hv.HunyuanVideoParams)).get_model({})
    init_weights(model.diffusion_model, seed)
    return model.diffusion_model.state_dict(), None


def hunyuan_video15(seed):
    """HunyuanVideo 1.5, 128 wide, with the I2V vision projection (1152 wide, SigLIP) by which detection tells 1.5
    from HunyuanImage 2.1 (and, where the release has it, the summed meanflow that comes with it)."""
    import comfy.ldm.hunyuan_video.model as hv
    from family_testkit import hunyuan_video15_patcher, release_fields
    small = hunyuan_video15_patcher(hidden=128, heads=1, ctx=32, axes=(16, 56, 56), seed=seed)
    return _at_detected_sizes(small, seed, **release_fields({"vision_in_dim": 1152, "meanflow_sum": True},
                                                            hv.HunyuanVideoParams)), None


def hunyuan_image21(seed):
    from family_testkit import hunyuan_image21_patcher
    return _state(hunyuan_image21_patcher(hidden=128, heads=1, ctx=32, axes=(64, 64), seed=seed)), None


def wan(seed, ti2v=False):
    """Wan 2.1 / 2.2 A14B expert (WAN21_T2V) or TI2V 5B (WAN22_T2V, 48 channels), 128 wide (one head of 128, as
    detection reads it), umT5's 4096-wide text and the 256 frequencies detection fixes."""
    import dit_testkit
    return _state(dit_testkit.wan_patcher(dim=128, num_heads=1, num_layers=2, text_dim=4096, freq_dim=256, ffn_dim=256,
                                          seed=seed, ti2v=ti2v)), None


def kandinsky5(seed):
    """Kandinsky 5 (video), 64 wide (one head of 64: the head width is the sum of the default rope axes), with the
    Qwen2.5-VL (3584) and CLIP-L pooled (768) widths detection fixes."""
    from test_kandinsky5_adapter import k5_patcher
    return _state(k5_patcher(model_dim=64, ff_dim=128, time_dim=32, text_dim=3584, pooled_dim=768, axes=(16, 24, 24),
                             text_blocks=1, visual_blocks=2, seed=seed)), None


def ltxv(seed):
    """LTX-Video, 32 heads of 4 (detection reads the head width as the cross-attention width / 32), T5's 4096."""
    from test_ltx_adapter import ltxv_patcher
    return _state(ltxv_patcher(heads=32, head_dim=4, caption=4096, layers=2, seed=seed)), None


LTX2_AUDIO = {"audio_attention_head_dim": 8, "audio_num_attention_heads": 2, "audio_cross_attention_dim": 16}


def ltx2(seed):
    """LTX-2, video as LTX-Video above, the 3840-wide text halves detection fixes; the audio sizes in the file's
    config metadata (ComfyUI reads a real LTX-2 file's from there)."""
    from test_ltx_adapter import ltxav_patcher
    model = ltxav_patcher(heads=32, head_dim=4, audio_heads=LTX2_AUDIO["audio_num_attention_heads"],
                          audio_head_dim=LTX2_AUDIO["audio_attention_head_dim"], caption=3840, layers=2, seed=seed)
    return _state(model), {"config": json.dumps({"transformer": LTX2_AUDIO})}


def qwen_image(seed):
    """Qwen-Image, one block at its real width (24 heads of 128, Qwen2.5-VL's 3584): detection reads neither."""
    from family_testkit import qwen_image_patcher
    return _state(qwen_image_patcher(heads=24, head_dim=128, ctx=3584, layers=1, axes=(16, 56, 56), seed=seed)), None


def chroma(seed):
    """Chroma, one double block at its real width (24 heads of 128), its guidance approximator at detection's fixed
    5 layers x 5120, T5-XXL's 4096-wide text (which some releases' detection fixes)."""
    from family_testkit import chroma_patcher
    return _at_detected_sizes(chroma_patcher(ctx=4096, seed=seed), seed, hidden_size=3072, num_heads=24, axes_dim=[16, 56, 56],
                              depth=1, depth_single_blocks=0, out_dim=3072, hidden_dim=5120, n_layers=5), None


def lumina2(seed):
    """Lumina 2, one layer (and detection's default two refiners of each kind) at its real width: 2304, 24 query heads
    over 8 key/value heads, its rope and feed-forward sizes; the caption width is read from the file."""
    from family_testkit import z_image_patcher
    return _at_detected_sizes(z_image_patcher(z_image=False, seed=seed), seed, dim=2304, n_heads=24, n_kv_heads=8,
                              n_layers=1, n_refiner_layers=2, axes_dims=[32, 32, 32], axes_lens=[300, 512, 512],
                              rope_theta=10000.0, ffn_dim_multiplier=4.0), None


# Detection builds these three far larger than their own classes need to be (Z-Image: 3840 wide with its four
# refiners, FLUX.2: 48 heads of 128, HiDream-I1: all 48 blocks), so no small file of them loads: the test-only loader
# (NASATestModel) hands over the builder's MODEL instead, from ComfyUI's own config class at a tiny width.


def z_image(seed):
    """Z-Image (ComfyUI's ZImage config: NextDiT with its modulation, caption and image padded to multiples of 32),
    256 wide (four heads of 64; the class's layers take a timestep embedding of min(width, 256) against its fixed
    256), two layers and one refiner of each kind, a 32-wide caption."""
    from family_testkit import z_image_patcher
    return z_image_patcher(dim=256, heads=4, ctx=32, layers=2, refiner=1, seed=seed)


def flux2(seed):
    """FLUX.2 (ComfyUI's Flux2 config), 64 wide, on the 128-channel latent EmptyFlux2LatentImage makes."""
    from family_testkit import flux2_patcher
    return flux2_patcher(in_channels=128, seed=seed)


def hidream(seed):
    """HiDream-I1 (ComfyUI's HiDream config), two double and two single blocks with two-expert MoE FFNs, T5 32 wide,
    three Llama layers 24 wide."""
    from family_testkit import hidream_patcher
    return hidream_patcher(seed=seed)


def text(width, tokens, seed, **extra):
    return [[_randn(seed, 1, tokens, width), extra]]


def t5_padded(width):
    """T5 as ComfyUI's LTX-Video encoder gives it: padded tokens and its attention mask (here the last token pads)."""
    def make(seed, tokens):
        mask = torch.ones(1, tokens, dtype=torch.long)
        mask[:, tokens - 1:] = 0 if tokens > 1 else 1
        return text(width, tokens, seed, attention_mask=mask)
    return make


@dataclasses.dataclass
class Family:
    build: Callable                  # seed -> (state dict, metadata) of one file; NASATestModel: seed -> MODEL
    detected: str                    # the comfy.supported_models class detection (NASATestModel: the builder) must pick
    text: Callable                   # (seed, tokens) -> CONDITIONING of the family's text width
    latent: dict                     # API-format nodes; "6" gives the LATENT
    channels: int                    # of the sampled latent
    extras: tuple = ("nodes_hunyuan.py",)  # comfy_extras modules with the latent nodes
    needs: tuple = ()                # (module, attribute, what it is) the release must have
    joint: bool = False              # the joint-attention route: needs the attention override
    experts: int = 1                 # Wan 2.2 A14B: a high- and a low-noise expert, one sampler each
    sized_by_detection: str = ""     # why a release whose detection does not read this small size back skips
    real_width: bool = False         # hundreds of millions of parameters: whole-suite runs only, a bf16 file
    loader: str = "UNETLoader"       # NASATestModel: too large at detection's sizes, the builder's MODEL instead

    @property
    def steps(self):  # a real-width model samples one step (Chroma's approximator alone is 100 GFLOP a call)
        return 1 if self.real_width else 2


def video_latent(node, width=64, height=64, length=5):
    return {"6": {"class_type": node, "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}}}


IMAGE_LATENT = {"6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}

LTX_SIZED = ("this ComfyUI's model detection builds LTX-Video at its fixed 2B size from a diffusion-model file (it "
             "reads no width from transformer_blocks.0.attn2, and UNETLoader hands it no config from the file's "
             "metadata)")

FAMILIES = {
    "hunyuan_video": Family(
        hunyuan_video, "HunyuanVideo", lambda s, n: text(32, n, s, pooled_output=torch.zeros(1, 768)),
        video_latent("EmptyHunyuanLatentVideo"), 16, joint=True),
    "hunyuan_video15": Family(
        hunyuan_video15, "HunyuanVideo15", lambda s, n: text(32, n, s, pooled_output=None),
        video_latent("EmptyHunyuanVideo15Latent"), 32,
        needs=(("comfy.supported_models", "HunyuanVideo15", "HunyuanVideo 1.5"),), joint=True),
    "hunyuan_image21": Family(
        hunyuan_image21, "HunyuanImage21", lambda s, n: text(32, n, s, pooled_output=None),
        {"6": {"class_type": "EmptyHunyuanImageLatent", "inputs": {"width": 128, "height": 128, "batch_size": 1}}},
        64, needs=(("comfy.supported_models", "HunyuanImage21", "HunyuanImage 2.1"),), joint=True),
    "wan22_a14b": Family(
        wan, "WAN21_T2V", lambda s, n: text(4096, n, s), video_latent("EmptyHunyuanLatentVideo"), 16,
        needs=(("comfy.supported_models", "WAN21_T2V", "Wan"),), experts=2),
    "wan22_ti2v_5b": Family(
        lambda seed: wan(seed, ti2v=True), "WAN22_T2V", lambda s, n: text(4096, n, s),
        {"6": {"class_type": "Wan22ImageToVideoLatent",
               "inputs": {"vae": ["60", 0], "width": 64, "height": 64, "length": 5, "batch_size": 1}},
         "60": {"class_type": "NASATestUnusedVAE", "inputs": {}}}, 48, extras=("nodes_wan.py",),
        needs=(("comfy.supported_models", "WAN22_T2V", "Wan 2.2 TI2V config"),)),
    "kandinsky5": Family(
        kandinsky5, "Kandinsky5", lambda s, n: text(3584, n, s, pooled_output=_randn(s + 1000, 1, 768)),
        video_latent("EmptyHunyuanLatentVideo"), 16,
        needs=(("comfy.supported_models", "Kandinsky5", "Kandinsky 5"),)),
    "ltxv": Family(
        ltxv, "LTXV", t5_padded(4096), video_latent("EmptyLTXVLatentVideo", length=9), 128, extras=("nodes_lt.py",),
        needs=(("comfy.supported_models", "LTXV", "LTX-Video"),), sized_by_detection=LTX_SIZED),
    "ltx2": Family(
        ltx2, "LTXAV", lambda s, n: text(2 * 3840, n, s),
        {"60": video_latent("EmptyLTXVLatentVideo", length=9)["6"],
         "61": {"class_type": "NASATestAudioLatent", "inputs": {"length": 5}},
         "6": {"class_type": "LTXVConcatAVLatent", "inputs": {"video_latent": ["60", 0], "audio_latent": ["61", 0]}}},
        128, extras=("nodes_lt.py",), needs=(("comfy.supported_models", "LTXAV", "LTX-2"),)),
    "qwen_image": Family(
        qwen_image, "QwenImage", lambda s, n: text(3584, n, s), IMAGE_LATENT, 16, extras=("nodes_sd3.py",),
        needs=(("comfy.supported_models", "QwenImage", "Qwen-Image"),), joint=True, real_width=True),
    "chroma": Family(
        chroma, "Chroma", lambda s, n: text(4096, n, s, pooled_output=None), IMAGE_LATENT, 16, extras=("nodes_sd3.py",),
        needs=(("comfy.supported_models", "Chroma", "Chroma"),), joint=True, real_width=True),
    "lumina2": Family(
        lumina2, "Lumina2",
        lambda s, n: text(32, n, s, pooled_output=None, attention_mask=torch.ones(1, n, dtype=torch.long)),
        IMAGE_LATENT, 16, extras=("nodes_sd3.py",), needs=(("comfy.supported_models", "Lumina2", "Lumina 2"),),
        joint=True, real_width=True,
        sized_by_detection="this ComfyUI's model detection builds Lumina 2 at its fixed 2.6B size (26 layers, "
                           "2304-wide captions: it reads neither from the file)"),
    "z_image": Family(
        z_image, "ZImage",
        lambda s, n: text(32, n, s, pooled_output=None, attention_mask=torch.ones(1, n, dtype=torch.long)),
        IMAGE_LATENT, 16, extras=("nodes_sd3.py",), needs=(("comfy.supported_models", "ZImage", "Z-Image"),),
        joint=True, loader="NASATestModel"),
    "flux2": Family(
        flux2, "Flux2",
        lambda s, n: text(48, n, s, pooled_output=None, attention_mask=torch.ones(1, n, dtype=torch.long)),
        {"6": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}, 128,
        extras=("nodes_flux.py",), needs=(("comfy.model_base", "Flux2", "FLUX.2"),), joint=True,
        loader="NASATestModel"),
    "hidream": Family(
        hidream, "HiDream", lambda s, n: hidream_conditioning(s, tokens=n), IMAGE_LATENT, 16, extras=("nodes_sd3.py",),
        needs=(("comfy.supported_models", "HiDream", "HiDream-I1"),), joint=True,
        loader="NASATestModel"),
}


# ------------------------------------------------------------------------------------------------ test-only nodes


class NASATestText:
    """A CONDITIONING of a family's text width from a seed, as its text encoder would hand it over (test only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (sorted(FAMILIES),),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31}),
                             "tokens": ("INT", {"default": 6, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, family, seed, tokens):
        return (FAMILIES[family].text(seed, tokens),)


class NASATestModel:
    """A family's small MODEL (a ModelPatcher, as UNETLoader hands it over) from ComfyUI's own config class and the
    family's test builder, for the families ComfyUI's detection builds too large (test only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (sorted(n for n, f in FAMILIES.items() if f.loader == "NASATestModel"),),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, family, seed):
        import comfy.model_patcher
        model = FAMILIES[family].build(seed)
        config = type(model.model.model_config).__name__
        if not isinstance(model, comfy.model_patcher.ModelPatcher) or config != FAMILIES[family].detected:
            raise TypeError(f"the {family} builder gave a {type(model).__name__} of {config}")
        return (model,)


class NASATestAudioLatent:
    """LTX-2's empty audio latent as LTXVEmptyLatentAudio makes it (8 channels x 16 frequency bins), without the
    audio VAE it reads those sizes from (test only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"length": ("INT", {"default": 5, "min": 1, "max": 512})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, length):
        return ({"samples": torch.zeros(1, 8, length, 16), "sample_rate": 44100, "type": "audio"},)


class NASATestUnusedVAE:
    """The VAE input of Wan22ImageToVideoLatent, which reads it only to encode a start image (none here; test only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self):
        return (object(),)


TEST_NODES = {c.__name__: c for c in (NASATestText, NASATestModel, NASATestAudioLatent, NASATestUnusedVAE)}


# ------------------------------------------------------------------------------------------------ the graphs


def file_name(name, expert=0):
    return f"nasa_test_{name}_{expert}.safetensors"


def graph(name, nasa="none", alpha=0.5, model_alpha=0.1, seed=42):
    """An API-format prompt: the family's file(s) through UNETLoader (or its MODEL from NASATestModel), its latent
    node, KSampler (two experts: KSamplerAdvanced on the first for the first half of the steps, returning its leftover
    noise, then the second), SaveLatent. nasa: "none", "model" (Apply NASA Model Patch with the negative at
    ``alpha``), "prompt" (NASA Negative Conditioning with the negative at ``alpha``, the model through Apply NASA Model
    Patch without one at ``model_alpha``), "prompt_alone" (NASA Negative Conditioning only). Every expert gets the
    same patch."""
    family = FAMILIES[name]
    steps = family.steps
    p = {"3": {"class_type": "NASATestText", "inputs": {"family": name, "seed": 1, "tokens": 6}},
         "4": {"class_type": "NASATestText", "inputs": {"family": name, "seed": 9, "tokens": 1}},  # unused at cfg 1
         "5": {"class_type": "NASATestText", "inputs": {"family": name, "seed": 2, "tokens": 5}}}
    p.update(json.loads(json.dumps(family.latent)))
    positive = ["3", 0]
    if nasa in ("prompt", "prompt_alone"):
        p["11"] = {"class_type": "NASANegativeConditioning",
                   "inputs": {"positive": ["3", 0], "nasa_negative": ["5", 0], "alpha": alpha}}
        positive = ["11", 0]
    models = []
    for i in range(family.experts):
        p[f"10{i}"] = {"class_type": family.loader,
                       "inputs": {"unet_name": file_name(name, i), "weight_dtype": "default"}
                       if family.loader == "UNETLoader" else {"family": name, "seed": 7 * i}}
        models.append([f"10{i}", 0])
        if nasa in ("model", "prompt"):
            inputs = {"model": models[i], "alpha": alpha if nasa == "model" else model_alpha}
            if nasa == "model":
                inputs["nasa_negative"] = ["5", 0]
            p[f"20{i}"] = {"class_type": "ApplyNASAModelPatch", "inputs": inputs}
            models[i] = [f"20{i}", 0]
    common = {"cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "positive": positive, "negative": ["4", 0]}
    if family.experts == 1:
        p["7"] = {"class_type": "KSampler", "inputs": dict(common, model=models[0], seed=seed, steps=steps,
                                                           latent_image=["6", 0], denoise=1.0)}
    else:
        first, last = models
        p["70"] = {"class_type": "KSamplerAdvanced", "inputs": dict(
            common, model=first, add_noise="enable", noise_seed=seed, steps=steps, latent_image=["6", 0],
            start_at_step=0, end_at_step=steps // 2, return_with_leftover_noise="enable")}
        p["7"] = {"class_type": "KSamplerAdvanced", "inputs": dict(
            common, model=last, add_noise="disable", noise_seed=seed, steps=steps, latent_image=["70", 0],
            start_at_step=steps // 2, end_at_step=10000, return_with_leftover_noise="disable")}
    if name == "ltx2":  # the sampled video and audio, separated as LTX-2's graphs do before decoding
        p["80"] = {"class_type": "LTXVSeparateAVLatent", "inputs": {"av_latent": ["7", 0]}}
        p["8"] = {"class_type": "SaveLatent", "inputs": {"samples": ["80", 0], "filename_prefix": f"nasa_test/{name}"}}
        p["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["80", 1], "filename_prefix": f"nasa_test/{name}a"}}
    else:
        p["8"] = {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": f"nasa_test/{name}"}}
    return p


def family_or_skip(name):
    family = FAMILIES[name]
    for module, attribute, what in family.needs:
        if not hasattr(__import__(module, fromlist=[attribute]), attribute):
            pytest.skip(f"this ComfyUI has no {what} ({module}.{attribute})")
    if family.joint and not HAS_OVERRIDE:
        pytest.skip(NO_OVERRIDE)
    return family


def check_detection(name, state, metadata):
    """ComfyUI's own detection of the file: the family's config, at the file's sizes."""
    import comfy.model_detection
    family = FAMILIES[name]
    takes_metadata = "metadata" in inspect.signature(comfy.model_detection.model_config_from_unet).parameters
    config = comfy.model_detection.model_config_from_unet(state, "", **({"metadata": metadata} if takes_metadata else {}))
    assert type(config).__name__ == family.detected, f"ComfyUI's detection took the file for {type(config).__name__}"
    detected = config.get_model({}, device=torch.device("meta")).diffusion_model.state_dict()
    wrong = sorted(k for k, v in state.items() if k not in detected or detected[k].shape != v.shape)
    if wrong and family.sized_by_detection:
        pytest.skip(family.sized_by_detection)
    assert not wrong, f"ComfyUI's detection sizes {wrong[:3]} differently from the file"


@pytest.fixture(scope="module")
def comfy_env(tmp_path_factory):
    """ComfyUI with the pack loaded and the test and latent nodes registered. ``run(prompt, executor)`` gives the
    saved latent (LTX-2: video and audio, flattened and joined); ``run.write(name)`` writes a family's file(s)."""
    if full_tree() is None:
        pytest.skip("needs a full ComfyUI tree (COMFYUI_PATH with nodes.py and execution.py)")
    nodes, execution, folder_paths = comfy_modules()
    import comfy.model_management
    import comfy.utils
    import safetensors.torch
    base = tmp_path_factory.mktemp("comfy_home_families")
    unet_dir, output_dir = base / "diffusion_models", base / "output"
    unet_dir.mkdir()
    output_dir.mkdir()
    old_output = folder_paths.get_output_directory()
    with restored_registry(nodes):
        ok, records, _, module_name = load_with_comfyui(nodes, pack_folder(base))
        assert ok, "; ".join(r.getMessage() for r in records)
        nodes.NODE_CLASS_MAPPINGS.update(TEST_NODES)
        for extra in sorted({e for f in FAMILIES.values() for e in f.extras}):  # as ComfyUI loads comfy_extras
            path = full_tree() / "comfy_extras" / extra
            if path.is_file():
                settled(nodes.load_custom_node(str(path), module_parent="comfy_extras"))
        folder_paths.add_model_folder_path("diffusion_models", str(unet_dir), is_default=True)
        folder_paths.set_output_directory(str(output_dir))

        def write(name):
            family = FAMILIES[name]
            missing = sorted({n["class_type"] for n in family.latent.values()} - set(nodes.NODE_CLASS_MAPPINGS))
            if missing:
                pytest.skip(f"this ComfyUI has no {', '.join(missing)} (comfy_extras/{', '.join(family.extras)})")
            for expert in range(family.experts if family.loader == "UNETLoader" else 0):  # NASATestModel builds it
                path = unet_dir / file_name(name, expert)
                if not path.exists():
                    state, metadata = family.build(seed=7 * expert)
                    check_detection(name, state, metadata)
                    if family.real_width:  # half the file; ComfyUI computes in fp32 on a CPU all the same
                        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
                    comfy.utils.save_torch_file(state, str(path), metadata=metadata)

        def run(prompt, executor, refused=False):
            prompt_id = str(uuid.uuid4())
            valid = validate(execution, prompt_id, prompt)
            assert valid[0], f"ComfyUI rejected the prompt: {valid[1]} {valid[3]}"
            executor.execute(prompt, prompt_id, {"client_id": "nasa-test"}, valid[2])
            errors = [d for event, d in executor.status_messages if event == "execution_error"]
            if refused:  # the errors ComfyUI shows for the prompt
                assert not executor.success and errors, "the prompt ran"
                return errors
            assert executor.success and not errors, [d.get("exception_message") for d in errors]
            parts = []
            for node in sorted(k for k, v in prompt.items() if v["class_type"] == "SaveLatent"):
                saved = executor.history_result["outputs"][node]["latents"][0]
                parts.append(safetensors.torch.load_file(
                    str(output_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"])
            return parts[0] if len(parts) == 1 else torch.cat([t.flatten() for t in parts])

        run.write = write
        run.executor = lambda: new_executor(execution, MessageSink())
        run.pack = lambda sub: sys.modules[f"{module_name}.{sub}"]  # the pack's modules as ComfyUI loaded them
        try:
            yield run
        finally:
            folder_paths.set_output_directory(old_output)
            paths = folder_paths.folder_names_and_paths["diffusion_models"][0]
            if str(unet_dir) in paths:
                paths.remove(str(unet_dir))
            forget_modules(module_name)
            comfy.model_management.unload_all_models()
            comfy.model_management.soft_empty_cache()


def nasa_warnings(records):
    return [r.getMessage() for r in records if r.name == "comfyui-nasa" and r.levelname == "WARNING"]


def run_family(env, name):
    """Every graph of one family on an executor of its own, as ComfyUI's prompt worker runs queued prompts: plain,
    alpha 0, the model patch, NASA Negative Conditioning with the patch (HiDream: the errors ComfyUI reports) and
    alone, a plain graph at another seed after them; and that last one on a fresh executor."""
    import comfy.model_management
    env.write(name)
    env.pack("nasa_core.adapters.comfy_runtime")._unclaimed_warned[0] = -1e9  # that warning comes once per 30 s
    executor, out = env.executor(), {}
    with capture_problems() as (records, _):
        out["plain"] = env(graph(name, "none"), executor)
        out["zero"] = env(graph(name, "model", alpha=0.0), executor)
        out["model"] = env(graph(name, "model"), executor)
        out["prompt"] = env(graph(name, "prompt"), executor)
        out["patched_warnings"] = nasa_warnings(records)
        out["alone"] = env(graph(name, "prompt_alone"), executor)
        gc.collect()  # the unclaimed-negative warning comes when the prompt's conds are freed
        out["alone_warnings"] = nasa_warnings(records)[len(out["patched_warnings"]):]
        out["after"] = env(graph(name, "none", seed=43), executor)
    del executor
    out["fresh"] = env(graph(name, "none", seed=43), env.executor())
    comfy.model_management.unload_all_models()  # the next family starts with nothing of this one loaded
    gc.collect()
    return out


@pytest.fixture(scope="module")
def results(comfy_env):
    done = {}

    def get(name):
        family = family_or_skip(name)
        if name not in done:
            done[name] = run_family(comfy_env, name)
        return family, done[name]
    return get


def families():
    """Every family: the small ones in the compatibility suite (every release), the real-width ones in whole-suite
    runs only."""
    return [pytest.param(name, marks=[] if family.real_width else [pytest.mark.compat])
            for name, family in FAMILIES.items()]


@pytest.mark.parametrize("name", families())
def test_model_patch_in_a_graph(results, name):
    """The model patch removes the negative (the latent changes) and alpha 0 is the plain graph; no NASA warning."""
    family, r = results(name)
    assert not r["patched_warnings"], r["patched_warnings"]
    if name != "ltx2":  # LTX-2: video and audio, flattened
        assert r["plain"].shape[:2] == (1, family.channels), r["plain"].shape
    assert torch.isfinite(r["plain"]).all()
    assert torch.equal(r["zero"], r["plain"])
    assert (r["model"] - r["plain"]).abs().max() > 1e-4


@pytest.mark.parametrize("name", families())
def test_negative_conditioning_with_the_model_patch(results, name):
    """NASA Negative Conditioning's negative (alpha 0.5), the model through Apply NASA Model Patch without one (alpha
    0.1), gives what the patch's own negative at 0.5 gives: the same CONDITIONING, as the family's text encoder
    hands it over (LTX-Video: with T5's attention mask; Kandinsky 5: with its pooled CLIP-L; HiDream: with its Llama
    states)."""
    _, r = results(name)
    torch.testing.assert_close(r["prompt"], r["model"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", families())
def test_negative_conditioning_alone(results, name):
    """NASA Negative Conditioning on the unpatched MODEL gives what the model patch gives, with no warning: its
    conditioning hook installs NASA for that prompt's calls (object-patch families: in the live model for each call
    only, see test_nothing_stays_patched)."""
    from comfyui_nasa.nasa_core.adapters import prompt_hook
    family, r = results(name)
    if prompt_hook.hooks_api() is None:  # before v0.3.30 (LTX-Video on v0.3.10): ignored, and the console says why
        assert torch.equal(r["alone"], r["plain"])
        warned = r["alone_warnings"]
        assert len(warned) == 1 and "no conditioning hooks" in warned[0], warned
        return
    assert not r["alone_warnings"], r["alone_warnings"]
    torch.testing.assert_close(r["alone"], r["model"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", families())
def test_nothing_stays_patched(results, name):
    """A plain graph after the NASA graphs on the same executor (the loaders' MODEL cached) equals a fresh executor's."""
    _, r = results(name)
    assert torch.equal(r["after"], r["fresh"])
