"""Prompt and negative-prompt sets for image-free distillation: read from text, JSONL or parquet files, or
made here (the world's captions; negatives from common quality terms). Which prompt a sample gets is a pure
function of (seed, global sample index), so a run resumes at any step and any number of processes sees one
shuffled stream between them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

import torch

from .config import QUALITY_TERMS, ConfigError

WORLD_PROMPT_SEED = 12345  # the world's prompt set is fixed: one "dataset" for every run
WORLD_PROMPT_COUNT = 5000


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), stable across processes and Python runs."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def read_text_rows(path: str) -> List[str]:
    """One prompt per row: .txt lines, .jsonl objects (key 'prompt', 'text' or 'caption') or strings, .parquet
    column 'prompt', 'text' or 'caption'. Empty rows are dropped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompt file {path} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), or give a .txt/.jsonl file") from None
        table = pq.read_table(p)
        column = next((c for c in ("prompt", "text", "caption") if c in table.column_names), None)
        if column is None:
            raise ConfigError(f"{path}: no 'prompt', 'text' or 'caption' column (columns: {table.column_names})")
        rows = [str(v) for v in table.column(column).to_pylist() if v is not None]
    elif suffix == ".jsonl":
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {n}: not JSON ({e})") from None
            if isinstance(item, dict):
                key = next((k for k in ("prompt", "text", "caption") if k in item), None)
                if key is None:
                    raise ConfigError(f"{path}, line {n}: no 'prompt', 'text' or 'caption' key")
                item = item[key]
            rows.append(str(item))
    else:
        rows = p.read_text(encoding="utf-8").splitlines()
    rows = [r.strip() for r in rows if r.strip()]
    if not rows:
        raise ConfigError(f"prompt file {path} holds no prompts")
    return rows


def _world_name(value: str) -> str:
    """The world a "world" / "world:v2" prompt or negative source names ("world" alone: v1, the world the
    first bundled models learnt; the bundled teachers now learnt v2)."""
    return value.split(":", 1)[1] if ":" in value else "v1"


def is_world_source(value: str) -> bool:
    return value == "world" or value.startswith("world:")


def world_prompts(world_name: str = "v1") -> List[str]:
    """Captions of the synthetic world in its own phrasing, some naming every attribute, some only a few."""
    from .. import world
    spec = world.world_spec(world_name)
    gen = torch.Generator().manual_seed(WORLD_PROMPT_SEED)
    attrs = world.sample_attributes(gen, WORLD_PROMPT_COUNT, spec)
    return [world.caption(a, gen, spec=spec) for a in attrs]


def world_negative_candidates(world_name: str = "v1") -> List[str]:
    """Single-attribute negatives, phrased as the benchmark phrases them ("red", "circle", "black background");
    in a world with quality also the quality words ("low quality", "blurry", ...)."""
    from .. import world
    spec = world.world_spec(world_name)
    out = [str(c) for c in world.VOCAB["colour"]] + [str(s) for s in world.VOCAB["shape"]]
    out += [f"{b} background" for b in world.VOCAB["background"]] + [str(s) for s in world.VOCAB["size"]]
    out += ["on the left", "on the right", "in the center", "two shapes", "a single shape"]
    if spec.has_quality:
        out += ["low quality", "worst quality, low quality"] + list(world.DEGRADATIONS)
    return out


def quality_negatives(n: int, seed: int = 0) -> List[str]:
    """``n`` negatives of 1 to 4 common quality terms, as the paper builds its 10K set."""
    g = torch.Generator().manual_seed(_mix(seed, 77))
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 5, (1,), generator=g))
        idx = torch.randperm(len(QUALITY_TERMS), generator=g)[:k].tolist()
        out.append(", ".join(QUALITY_TERMS[i] for i in idx))
    return out


class PromptStream:
    """prompt(g), negative(g) for global sample index g: epoch e = g // N visits the prompts in the order of a
    permutation seeded by (seed, e)."""

    def __init__(self, prompts: Sequence[str], negatives: Sequence[str], seed: int, world_negatives: bool = False,
                 world_name: str = "v1"):
        if not prompts:
            raise ConfigError("the prompt set is empty")
        self.prompts = list(prompts)
        self.negatives = list(negatives)
        self.seed = seed
        self.world_negatives = world_negatives
        self.world_name = world_name
        self._perm_cache = {}

    def _order(self, salt: int, epoch: int, n: int) -> List[int]:
        key = (salt, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 8:
                self._perm_cache.clear()
            g = torch.Generator().manual_seed(_mix(self.seed, salt, epoch))
            self._perm_cache[key] = torch.randperm(n, generator=g).tolist()
        return self._perm_cache[key]

    def prompt(self, g: int) -> str:
        n = len(self.prompts)
        return self.prompts[self._order(1, g // n, n)[g % n]]

    def negative(self, g: int) -> str:
        if not self.negatives:
            return ""
        if self.world_negatives:
            return self._world_negative(g)
        n = len(self.negatives)
        return self.negatives[self._order(2, g // n, n)[g % n]]

    def _world_negative(self, g: int) -> str:
        """A world attribute the prompt does not name (a negative that contradicts the prompt teaches nothing);
        "" (no negative) when the prompt names every attribute."""
        from .. import world
        spec = world.world_spec(self.world_name)
        named = world.attributes_of_prompt(self.prompt(g), spec)
        ok = [c for c in self.negatives if not set(world.attributes_of_prompt(c, spec)) & set(named)]
        if not ok:
            return ""
        r = torch.Generator().manual_seed(_mix(self.seed, 3, g))
        return ok[int(torch.randint(len(ok), (1,), generator=r))]


def build_stream(cfg) -> PromptStream:
    prompts = world_prompts(_world_name(cfg.prompts)) if is_world_source(cfg.prompts) else read_text_rows(cfg.prompts)
    world_neg = is_world_source(cfg.negatives)
    if cfg.negatives == "none":
        negatives: List[str] = []
    elif cfg.negatives == "quality":
        negatives = quality_negatives(cfg.num_negatives, cfg.seed)
    elif world_neg:
        negatives = world_negative_candidates(_world_name(cfg.negatives))
    else:
        negatives = read_text_rows(cfg.negatives)
    world_name = _world_name(cfg.negatives if world_neg else cfg.prompts)
    return PromptStream(prompts, negatives, cfg.seed, world_negatives=world_neg, world_name=world_name)
