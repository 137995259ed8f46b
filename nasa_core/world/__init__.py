"""A synthetic captioned-image world for training a tiny text-to-image model on the CPU, and a pixel-level
reader that scores what a generated image shows. Pure torch (and scipy's ndimage in the reader);
deterministic by seed. One module per concern:

* ``spec``: the vocabulary, the priors and every number of a world (``WorldSpec``); worlds "v1" (the
  bundled models' world: uniform attributes, no quality) and "v2" (the default: skewed priors and a
  quality attribute, see its docstring for the table of priors);
* ``render``: sampling attributes, drawing them, the quality degradations, failure-mode perturbations;
* ``captions``: captions in the world's phrasing and the prompt parser (``attributes_of_prompt``);
* ``data``: training batches (``sample_batch``, ``batch_for_step``);
* ``reader``: ``read_attributes``, the quality measures;
* ``metrics``: matches / shows, the subject rule, cell metrics with Wilson intervals.

Images are float tensors [N, 3, H, W] in [-1, 1]; ``to_uint8_hwc`` converts them for saving.
"""
from .captions import PROMPT_WORDS, attributes_of_prompt, caption, caption_all, named_attributes
from .data import batch_for_step, public, sample_batch
from .metrics import (CELL_SHARES, Mean, Share, attribute_accuracy, attribute_shares, cell_metrics, free_of, keeps,
                      matches, named_accuracy, pooled, share, shows, shows_subject, wilson)
from .reader import MEASURES, quality_of, quality_score, read_attributes
from .render import (blocky_noise, fade, gaussian_blur, perturb, render, sample_attributes, shape_layout,
                     signed_distance, soften, to_uint8_hwc)
from .spec import (ATTRIBUTES, BACKGROUND_RGB, BACKGROUNDS, BENCHMARK_PAIRS, CLEAN, QUALITY_NEGATIVE, V1_PAIRS, V2_PAIRS, COLOUR_RGB, COLOURS, COUNTS, DEFAULT_SPEC,
                   DEGRADATIONS, PAIR_POSITION, POSITIONS, QUALITIES, SHAPES, SIZES, V1_SPEC, V2_SPEC, V2_PRIORS,
                   VOCAB, WORLDS, Attributes, WorldSpec, world_spec)

__all__ = [
    "ATTRIBUTES", "Attributes", "BACKGROUNDS", "BACKGROUND_RGB", "BENCHMARK_PAIRS", "QUALITY_NEGATIVE", "V1_PAIRS",
    "V2_PAIRS", "CELL_SHARES", "CLEAN", "COLOURS", "COLOUR_RGB",
    "COUNTS", "DEFAULT_SPEC", "DEGRADATIONS", "MEASURES", "Mean", "PAIR_POSITION", "POSITIONS", "PROMPT_WORDS",
    "QUALITIES", "SHAPES", "SIZES", "Share", "V1_SPEC", "V2_PRIORS", "V2_SPEC", "VOCAB", "WORLDS", "WorldSpec",
    "attribute_accuracy", "attribute_shares", "attributes_of_prompt", "batch_for_step", "blocky_noise", "caption",
    "caption_all", "cell_metrics", "fade", "free_of", "gaussian_blur", "keeps", "matches", "named_accuracy",
    "named_attributes", "perturb", "pooled", "public", "quality_of", "quality_score", "read_attributes", "render",
    "sample_attributes", "sample_batch", "shape_layout", "share", "shows", "shows_subject", "signed_distance",
    "soften", "to_uint8_hwc", "wilson", "world_spec",
]
