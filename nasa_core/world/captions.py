"""Captions in the world's one phrasing, and the parser that says which attributes a prompt names.

Phrasing: ``"[a|one|two] [small|large] [colour] [circle|square|triangle|shape][s] [on the left|on the right|in
the center][,] [on a black|white|gray background][, quality]"`` (the comma before the background only after a
position). An unnamed shape is a "shape"; the position of two shapes ("sides") is never named. World v1 always
starts with an article ("a" when the count is unnamed, so "a shape" covers one shape of any kind) and never
names quality. World v2 has no article when the count is unnamed ("red circle on a white background" covers
one or two red circles), "a" for one shape and "two" for two, and names quality as real captions do: "high
quality" for a clean image; for a degraded one its own word ("blurry", "noisy", "washed out", "cut off"),
"low quality", "worst quality", or its word and "low quality".
"""
from __future__ import annotations

import re
from typing import Dict, Tuple, Union

import torch

from .spec import (ATTRIBUTES, BACKGROUNDS, CLEAN, COLOURS, DEFAULT_SPEC, DEGRADATIONS, PAIR_POSITION, SHAPES,
                   WorldSpec, generator)

_POSITION_PHRASE = {"left": "on the left", "right": "on the right", "center": "in the center"}
_QUALITY_FORMS = ("{kind}", "low quality", "{kind}, low quality", "worst quality")
CLEAN_PHRASE = "high quality"
# Every phrase a world-v2 caption can add (for the text encoder's vocabulary).
PROMPT_WORDS: Tuple[str, ...] = (CLEAN_PHRASE, "low quality", "worst quality") + DEGRADATIONS


def _bernoulli(rng, p: float) -> bool:
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng, dtype=torch.float64)) < p
    return rng.random() < p


def _choice(rng, n: int) -> int:
    if isinstance(rng, torch.Generator):
        return int(torch.randint(n, (), generator=rng))
    return rng.randrange(n)


def named_attributes(spec: WorldSpec = DEFAULT_SPEC) -> Tuple[str, ...]:
    """The attributes a caption of this world may name (world v1: not quality)."""
    return ATTRIBUTES if spec.has_quality else tuple(k for k in ATTRIBUTES if k != "quality")


def phrase(attrs: dict, named: Dict[str, bool], spec: WorldSpec = DEFAULT_SPEC, quality_form: int = 0) -> str:
    """The caption of ``attrs`` naming the attributes ``named`` says (``quality_form``: which of the degraded
    forms, see the module docstring)."""
    two = attrs["count"] == 2
    if not spec.article_names_count:  # world v1: the count is always implied ("a" / "one" / "two")
        words, plural = ["two" if two else ("one" if named.get("count") else "a")], two
    elif named.get("count"):
        words, plural = ["two" if two else "a"], two
    else:  # one or two shapes, unnamed: no article, singular noun
        words, plural = [], False
    if named.get("size"):
        words.append(attrs["size"])
    if named.get("colour"):
        words.append(attrs["colour"])
    noun = attrs["shape"] if named.get("shape") else "shape"
    words.append(noun + ("s" if plural else ""))
    text = " ".join(words)
    pos = named.get("position") and not two
    if pos:
        text += " " + _POSITION_PHRASE[attrs["position"]]
    if named.get("background"):
        text += (", on a " if pos else " on a ") + attrs["background"] + " background"
    if named.get("quality") and spec.has_quality:
        q = attrs.get("quality", CLEAN)
        text += ", " + (CLEAN_PHRASE if q == CLEAN else _QUALITY_FORMS[quality_form % len(_QUALITY_FORMS)].format(kind=q))
    return text


def caption(attrs: dict, rng=None, p_name: float = 0.5, spec: WorldSpec = DEFAULT_SPEC) -> str:
    """A caption naming each attribute independently with probability ``p_name``. ``rng``: a
    ``torch.Generator``, a ``random.Random`` or an int seed."""
    if rng is None or isinstance(rng, int):
        rng = generator(0 if rng is None else rng)
    named = {k: _bernoulli(rng, p_name) for k in named_attributes(spec)}
    form = _choice(rng, len(_QUALITY_FORMS)) if named.get("quality") and attrs.get("quality", CLEAN) != CLEAN else 0
    return phrase(attrs, named, spec, form)


def caption_all(attrs: dict, spec: WorldSpec = DEFAULT_SPEC) -> str:
    """The caption that names every attribute (the position of two shapes stays implied by "two"; a
    degradation by its own word)."""
    return phrase(attrs, {k: True for k in named_attributes(spec)}, spec, 0)


# ----------------------------------------------------------------------------------------------------------
# Prompt parsing

_WORDS: Dict[str, Tuple[str, Union[str, int]]] = {}
for _s in SHAPES:
    _WORDS[_s] = _WORDS[_s + "s"] = ("shape", _s)
_WORDS.update({"circular": ("shape", "circle"), "round": ("shape", "circle"), "disc": ("shape", "circle"),
               "discs": ("shape", "circle"), "disk": ("shape", "circle"), "disks": ("shape", "circle"),
               "triangular": ("shape", "triangle"), "squared": ("shape", "square")})
for _c in COLOURS:
    _WORDS[_c] = ("colour", _c)
for _b in BACKGROUNDS:
    _WORDS[_b] = ("background", _b)
_WORDS.update({"grey": ("background", "gray")})
_WORDS.update({"small": ("size", "small"), "little": ("size", "small"), "tiny": ("size", "small"),
               "large": ("size", "large"), "big": ("size", "large"), "huge": ("size", "large")})
_WORDS.update({"left": ("position", "left"), "right": ("position", "right"), "center": ("position", "center"),
               "centre": ("position", "center"), "middle": ("position", "center"),
               "centered": ("position", "center"), "centred": ("position", "center"),
               "sides": ("position", PAIR_POSITION)})
_WORDS.update({"one": ("count", 1), "single": ("count", 1), "1": ("count", 1), "two": ("count", 2),
               "2": ("count", 2), "pair": ("count", 2)})
_QUALITY_WORDS: Dict[str, str] = {"blurry": "blurry", "blurred": "blurry", "blur": "blurry", "soft": "blurry",
                                  "noisy": "noisy", "noise": "noisy", "grainy": "noisy", "grain": "noisy",
                                  "washed": "washed out", "faded": "washed out", "desaturated": "washed out",
                                  "dull": "washed out", "cut": "cut off", "cropped": "cut off",
                                  "sharp": CLEAN, "clean": CLEAN}
_BAD = ("low", "worst", "bad", "poor", "lowest")
_GOOD = ("high", "best", "good", "highest")
_NOUNS = set(_WORDS) - {w for w, (k, _) in _WORDS.items() if k != "shape"} | {"shape", "shapes"}


def attributes_of_prompt(text: str, spec: WorldSpec = DEFAULT_SPEC) -> Dict[str, Union[str, int, Tuple]]:
    """Which attributes a prompt (or negative prompt) names: {"colour": "red", "shape": "circle", ...}.

    Words are matched whole and case-insensitively, with a few synonyms (grey, centre/middle, big/little,
    round/disc, single/pair). Shape colours and background colours are disjoint, so "black", "white", "gray"
    always name the background, with or without the word "background"; a shape colour followed by
    "background" ("red background") names no attribute, since no background has that colour. "left and right"
    (or "both sides") is the position of two shapes. An attribute named with two different values gets a tuple
    of them in order of appearance ("red or blue" -> {"colour": ("red", "blue")}): ``matches`` and ``shows``
    read a tuple as "any of". Words the world does not know (including "shape", "background") are ignored.

    World v2 (``spec.article_names_count``): "a" / "an" before a shape noun ("a shape", "a large red circle",
    not "on a white background") names one shape. Quality (worlds that have it): "blurry", "noisy" / "grainy",
    "washed out" / "faded", "cut off" / "cropped" / "out of frame" name their degradation; "low / worst / bad
    quality" names every degradation (any of them); "high / best quality", "sharp", "clean" name a clean image.
    """
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    found: Dict[str, list] = {}

    def add(key, value):
        found.setdefault(key, [])
        if value not in found[key]:
            found[key].append(value)

    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if spec.has_quality:
            if nxt == "quality" and tok in _BAD:
                for d in DEGRADATIONS:
                    add("quality", d)
                continue
            if nxt == "quality" and tok in _GOOD:
                add("quality", CLEAN)
                continue
            if tok == "out" and nxt == "of" and i + 2 < len(tokens) and tokens[i + 2] == "frame":
                add("quality", "cut off")
                continue
            if tok in _QUALITY_WORDS:
                add("quality", _QUALITY_WORDS[tok])
                continue
        if tok in ("a", "an") and spec.article_names_count:
            for later in tokens[i + 1:i + 5]:
                if later in ("background", "backgrounds", "backdrop"):
                    break
                if later in _NOUNS:
                    add("count", 1)
                    break
            continue
        hit = _WORDS.get(tok)
        if hit is None:
            continue
        key, value = hit
        if key == "colour" and nxt in ("background", "backdrop", "backgrounds"):
            continue
        add(key, value)
    pos = found.get("position")
    if pos and "left" in pos and "right" in pos:
        rest = [p for p in pos if p not in ("left", "right", PAIR_POSITION)]
        found["position"] = [PAIR_POSITION] + rest
    return {k: (v[0] if len(v) == 1 else tuple(v)) for k, v in found.items()}
