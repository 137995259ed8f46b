"""The trainer's typed configuration: checked when loaded, saved with every run (run.json), with presets for
the paper's runs (Table 6) and for the bundled world model. Every field is a command-line option."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what is wrong and what would fit."""


@dataclass
class DistillConfig:
    # -- models
    teacher: str = ""                    # ComfyUI checkpoint (SD1.5/2.1/SDXL all-in-one .safetensors), a diffusion-model file (with --text-encoder), or a NASA world checkpoint
    model_kind: str = "checkpoint"      # checkpoint | diffusion_model | world
    text_encoder: List[str] = field(default_factory=list)  # text-encoder files when the checkpoint has none (PixArt: T5-XXL)
    text_encoder_type: str = "stable_diffusion"  # ComfyUI CLIPLoader type for --text-encoder (pixart, sd3, ...)
    vae: str = ""                        # a VAE file when the checkpoint has none
    student_init: str = ""               # start the student from another checkpoint (e.g. a Turbo model, as SBv2 does); default: the teacher
    resolution: int = 512                # training image size in pixels (the latent is 1/8 of it)
    student_lora_rank: int = 0           # > 0: low-memory mode, the student is the teacher plus a LoRA of this rank
    # -- objective (equations 5 and 6)
    kappa_min: float = 0.5               # teacher guidance scale kappa ~ U(kappa_min, kappa_max) per sample
    kappa_max: float = 4.0
    nasa_t: bool = True                  # NASA inside the student with the negative at alpha ~ U(alpha_min, alpha_max)
    alpha_min: float = 0.0
    alpha_max: float = 1.0
    nasa_reference: bool = False         # NASA-T (beyond the paper): the student's negative measured from the empty prompt, Z+ - alpha (Z- - Z_empty), as the Advanced node's nasa_reference does at inference
    teacher_negative: bool = True        # the negative prompt replaces the empty prompt in the teacher's guidance (eq. 5)
    lora_teacher_negative: bool = False  # guide the LoRA teacher with the negative too (the paper found: better without)
    t_min: float = 0.02                  # diffusion time range sampled for the VSD and LoRA losses (fraction of the schedule)
    t_max: float = 0.98
    # -- LoRA teacher
    lora_rank: int = 64
    lora_scaling: float = 128.0
    lora_targets: List[str] = field(default_factory=lambda: [r"attn"])  # regexes over Linear layer names
    # -- clamped CLIP loss (SBv2); off when clip_model is empty
    clip_model: str = ""                 # open_clip checkpoint file; format "ARCH:PATH", e.g. ViT-B-32:/models/clip.bin
    clip_weight: float = 0.1             # decays linearly to 0 over the run
    clip_tau: float = 0.37
    # -- optimisation
    steps: int = 60000
    batch: int = 64                      # global batch: micro_batch * grad_accum * processes
    micro_batch: int = 16
    lr_student: float = 1e-6
    lr_lora: float = 1e-3
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0
    bf16: bool = True                    # bf16 autocast (GPU); fp32 math on CPU when false
    # -- data
    prompts: str = ""                    # .txt (one per line), .jsonl or .parquet (column 'prompt' or 'text'); "world" = the synthetic world's captions (world v1; "world:v2" for world v2, the bundled teachers')
    negatives: str = "quality"           # "quality" (generated from common quality terms), "world" / "world:v2", "none", or a file like --prompts
    num_negatives: int = 10000           # size of the generated negative set
    # -- run
    out: str = "runs/nasa_t"
    seed: int = 0
    ckpt_every: int = 500
    sample_every: int = 1000
    log_every: int = 1
    sample_prompts: List[str] = field(default_factory=list)  # fixed prompts for the sample grids (default: the first prompts of the set)
    sample_negative: str = ""            # the negative used in the grids' NASA column (default: the first negative)
    sample_alpha: float = 0.5
    threads: int = 0                     # torch CPU threads (0: torch's default)

    # ---------------------------------------------------------------------------------------------------
    def check(self) -> "DistillConfig":
        problems = []
        if not self.teacher:
            problems.append("--teacher is required (a ComfyUI checkpoint, or a preset that names one)")
        if self.model_kind not in ("checkpoint", "diffusion_model", "world"):
            problems.append(f"model_kind must be checkpoint, diffusion_model or world, not {self.model_kind!r}")
        if self.model_kind == "diffusion_model" and not self.text_encoder:
            problems.append("model_kind diffusion_model needs --text-encoder (the checkpoint holds no text encoder)")
        for name in ("kappa_min", "kappa_max", "alpha_min", "alpha_max", "t_min", "t_max", "lr_student", "lr_lora",
                     "lora_scaling", "clip_weight", "clip_tau", "weight_decay", "grad_clip", "sample_alpha"):
            v = getattr(self, name)
            if not math.isfinite(v):
                problems.append(f"{name} must be a finite number, got {v}")
        if not self.kappa_min <= self.kappa_max:
            problems.append(f"kappa range is empty: kappa_min {self.kappa_min} > kappa_max {self.kappa_max}")
        if not 0 <= self.alpha_min <= self.alpha_max:
            problems.append(f"alpha range must satisfy 0 <= alpha_min <= alpha_max, got {self.alpha_min}, {self.alpha_max}")
        if self.nasa_reference and not self.nasa_t:
            problems.append("nasa_reference measures NASA-T's negative from the empty prompt: it needs --nasa-t")
        if not 0 < self.t_min < self.t_max < 1:
            problems.append(f"time range must satisfy 0 < t_min < t_max < 1, got {self.t_min}, {self.t_max}")
        if self.lr_student <= 0 or self.lr_lora <= 0:
            problems.append("learning rates must be positive")
        if self.lora_rank < 1 or self.student_lora_rank < 0:
            problems.append("lora_rank must be >= 1 and student_lora_rank >= 0")
        if self.resolution < 8 or self.resolution % 8:
            problems.append(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.steps < 1 or self.micro_batch < 1 or self.batch < 1:
            problems.append("steps, batch and micro_batch must be >= 1")
        elif self.batch % self.micro_batch:
            problems.append(f"batch {self.batch} is not a multiple of micro_batch {self.micro_batch}")
        if self.ckpt_every < 1:
            problems.append("ckpt_every must be >= 1")
        if self.nasa_t and self.negatives == "none":
            problems.append("nasa_t needs negatives (--negatives quality, world or a file), or pass --no-nasa-t")
        if self.teacher_negative and self.negatives == "none":
            problems.append("teacher_negative needs negatives, or pass --no-teacher-negative")
        if not self.prompts:
            problems.append("--prompts is required (a .txt/.jsonl/.parquet file, or 'world')")
        if problems:
            raise ConfigError("bad configuration:\n  " + "\n  ".join(problems))
        return self

    def grad_accum(self, world_size: int) -> int:
        per_step = self.micro_batch * world_size
        if self.batch % per_step:
            raise ConfigError(f"batch {self.batch} cannot be split into micro-batches of {self.micro_batch} over "
                              f"{world_size} processes: make batch a multiple of {per_step}")
        return self.batch // per_step

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path):
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)


# Fields that may differ between a run and its resumption (where and how long, not what is trained).
RESUMABLE_CHANGES = {"steps", "out", "ckpt_every", "sample_every", "log_every", "threads", "sample_prompts",
                     "sample_negative", "sample_alpha"}

QUALITY_TERMS = ["bad photo", "duplicate", "low resolution", "low quality", "blurry", "worst quality", "jpeg artifacts",
                 "distorted", "deformed", "ugly", "bad anatomy", "watermark", "text", "cropped", "out of frame",
                 "noisy", "grainy", "overexposed", "underexposed", "oversaturated", "disfigured", "mutated",
                 "bad proportions", "extra limbs", "poorly drawn", "unclear details", "pixelated", "lowres",
                 "signature", "username", "error", "messy", "dull colors", "bad composition"]

# Table 6 of the paper, and the bundled world model.
WORLD_SAMPLE_PROMPTS = ["a shape", "a shape on a white background", "a large shape", "two shapes",
                        "a circle", "a small shape on the left"]
_PAPER = dict(kappa_min=0.5, kappa_max=4.0, alpha_min=0.0, alpha_max=1.0, lora_rank=64, lora_scaling=128.0,
              lr_student=1e-6, lr_lora=1e-3, clip_weight=0.1, clip_tau=0.37, bf16=True, negatives="quality")
# The bundled world models on a CPU (see README): they distil in hundreds of steps, not tens of thousands.
# The bundled teachers learnt world v2, so its prompts and negatives. Student lr 1e-6, the paper's (5e-6, the
# pilots' choice on world v1, made the v2 students noisier within 300 steps: docs/world_ablations.md); the LoRA
# teacher on every Linear layer (attention alone could not follow the student), kappa from 1.5 (the teachers'
# images are mush below CFG 1.5).
_WORLD = dict(teacher="models/nasa_world_teacher.safetensors", model_kind="world", prompts="world:v2", resolution=64,
              kappa_min=1.5, kappa_max=4.0, lora_rank=16, lora_scaling=32.0, lora_targets=["."], lr_student=1e-6,
              lr_lora=1e-3, batch=32, micro_batch=32, steps=600, ckpt_every=50, sample_every=100, bf16=False,
              sample_alpha=0.5, sample_negative="red", sample_prompts=WORLD_SAMPLE_PROMPTS)
PRESETS: Dict[str, Dict[str, Any]] = {
    "sd15": dict(_PAPER, batch=64, steps=60000, sample_alpha=0.1),
    "sd21": dict(_PAPER, batch=64, steps=40000, resolution=768, sample_alpha=0.2),
    "pixart_alpha": dict(_PAPER, kappa_max=3.0, batch=32, steps=50000, model_kind="diffusion_model",
                         text_encoder_type="pixart", resolution=1024, sample_alpha=0.5),
    # Not in the paper: SDXL with SD1.5's settings.
    "sdxl": dict(_PAPER, batch=64, steps=60000, resolution=1024, sample_alpha=0.2),
    "world_sbv2": dict(_WORLD, negatives="none", nasa_t=False, teacher_negative=False),
    "world_nasa_t": dict(_WORLD, negatives="world:v2", nasa_t=True, teacher_negative=True),
}


def _coerce(name: str, kind, value):
    """Check a value loaded from a file against the field's type."""
    origin = get_origin(kind)
    if origin in (list, List):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        return list(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def config_from_dict(values: Dict[str, Any], base: Optional[DistillConfig] = None) -> DistillConfig:
    hints = get_type_hints(DistillConfig)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown configuration keys {unknown}; known keys: {sorted(hints)}")
    cfg = dataclasses.replace(base) if base is not None else DistillConfig()
    for k, v in values.items():
        setattr(cfg, k, _coerce(k, hints[k], v))
    return cfg


def load_config_file(path: str, base: Optional[DistillConfig] = None) -> DistillConfig:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"configuration file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"configuration file {path} must hold a JSON object of option: value")
    return config_from_dict(values, base)


def preset(name: str) -> DistillConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    return config_from_dict(PRESETS[name])


def field_help() -> List[Tuple[str, Any, str]]:
    """(name, default, help) for every field, the help being the comment beside it in this file."""
    import inspect
    import re
    source = inspect.getsource(DistillConfig)
    comments = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+): [^#\n]*#(.*)$", source, re.M)}
    return [(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory(), comments.get(f.name, ""))
            for f in dataclasses.fields(DistillConfig)]
