"""Honest scores for a world model's samples, read by the pixel reader, with 95% confidence intervals.

Per cell (a prompt / negative pair and a sampling method), every share counts an image as a success only
when it shows the prompt's subject (at least one shape): a blank or shapeless image is never "free of the
negative" and never "keeps the positive".

* ``shows_subject``: the reader found a shape.
* ``free_of_negative``: shows the subject and none of the attributes the negative names.
* ``keeps_positive``: shows the subject and every attribute the positive names.
* ``success``: both of the above.
* ``clean``: shows the subject and the reader's quality is "clean"; ``quality_score``: the mean of the
  reader's quality score (0 for an image without a shape), with a normal-approximation interval.

Intervals on shares are Wilson score intervals (``wilson``), which stay inside [0, 1] and behave at 0 and 100%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence

from .reader import quality_score
from .spec import ATTRIBUTES, Attributes

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95):
    """The Wilson score interval (lo, hi) for k successes in n trials (n = 0: (0, 1))."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval holds p: at k = 0 or n the bound equals p up to a rounding error (5.6e-17 above 0 at 0 of 3),
    # which a plot's error bar takes as a negative length
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclass(frozen=True)
class Share:
    """k of n, with its Wilson 95% interval."""
    k: int
    n: int

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self):
        return wilson(self.k, self.n)

    def __add__(self, other: "Share") -> "Share":
        return Share(self.k + other.k, self.n + other.n)

    def fmt(self, digits: int = 0) -> str:
        lo, hi = self.interval
        return f"{100 * self.p:.{digits}f}% [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"

    def to_dict(self) -> dict:
        lo, hi = self.interval
        return {"k": self.k, "n": self.n, "p": self.p, "lo": lo, "hi": hi}


def share(flags: Iterable[bool]) -> Share:
    flags = [bool(f) for f in flags]
    return Share(sum(flags), len(flags))


@dataclass(frozen=True)
class Mean:
    """A mean with a normal-approximation 95% interval."""
    mean: float
    sd: float
    n: int

    @property
    def interval(self):
        half = Z95 * self.sd / math.sqrt(self.n) if self.n > 1 else float("inf")
        return self.mean - half, self.mean + half

    def fmt(self, digits: int = 2) -> str:
        lo, hi = self.interval
        return f"{self.mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    def to_dict(self) -> dict:
        lo, hi = self.interval
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "lo": lo, "hi": hi}


def mean(values: Sequence[float]) -> Mean:
    values = list(values)
    n = len(values)
    m = sum(values) / n if n else float("nan")
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Mean(m, sd, n)


# ----------------------------------------------------------------------------------------------------------
# Reads against prompts

def _as_options(value) -> tuple:
    return value if isinstance(value, (tuple, list, set, frozenset)) else (value,)


def matches(read: Attributes, wanted: dict) -> bool:
    """True when the read image has every attribute in ``wanted`` (a tuple value: any of its values).
    An attribute the reader could not determine (None) does not match."""
    return all(read.get(k) is not None and read.get(k) in _as_options(v) for k, v in wanted.items()
               if not k.startswith("_"))


def shows(read: Attributes, attribute_dict: dict) -> bool:
    """True when the read image shows ANY of the attributes in ``attribute_dict`` (e.g. those a negative
    prompt names). An attribute the reader could not determine (None) is not shown; an empty dict is never
    shown. (Alone this counts a blank image as free of everything: use ``free_of`` for scores.)"""
    return any(read.get(k) is not None and read.get(k) in _as_options(v) for k, v in attribute_dict.items()
               if not k.startswith("_"))


def shows_subject(read: Attributes) -> bool:
    """The image shows the prompt's subject: the reader found at least one shape."""
    return read.get("count") is not None


def free_of(read: Attributes, unwanted: dict) -> bool:
    """Shows the subject and none of ``unwanted``."""
    return shows_subject(read) and not shows(read, unwanted)


def keeps(read: Attributes, wanted: dict) -> bool:
    """Shows the subject and all of ``wanted``."""
    return shows_subject(read) and matches(read, wanted)


CELL_SHARES = ("shows_subject", "free_of_negative", "keeps_positive", "success", "clean")


def cell_metrics(reads: Sequence[Attributes], wanted: dict, unwanted: Optional[dict] = None) -> Dict[str, object]:
    """The shares of one cell (``CELL_SHARES``: Share each) and ``quality_score`` (a Mean)."""
    unwanted = unwanted or {}
    out: Dict[str, object] = {
        "shows_subject": share(shows_subject(r) for r in reads),
        "free_of_negative": share(free_of(r, unwanted) for r in reads),
        "keeps_positive": share(keeps(r, wanted) for r in reads),
        "success": share(free_of(r, unwanted) and keeps(r, wanted) for r in reads),
        "clean": share(shows_subject(r) and r.get("quality") == "clean" for r in reads),
        "quality_score": mean([quality_score(r) for r in reads]),
    }
    return out


def pooled(cells: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Cells pooled: shares add their counts; the quality score is the mean over all images."""
    out: Dict[str, object] = {}
    for key in CELL_SHARES:
        total = Share(0, 0)
        for c in cells:
            total = total + c[key]
        out[key] = total
    n = sum(c["quality_score"].n for c in cells)
    m = sum(c["quality_score"].mean * c["quality_score"].n for c in cells) / max(1, n)
    # pooled sd from the cells' sums of squares
    ss = sum((c["quality_score"].n - 1) * c["quality_score"].sd ** 2 + c["quality_score"].n * (c["quality_score"].mean - m) ** 2
             for c in cells)
    out["quality_score"] = Mean(m, math.sqrt(ss / max(1, n - 1)), n)
    return out


def as_json(metrics: Dict[str, object]) -> Dict[str, dict]:
    return {k: v.to_dict() for k, v in metrics.items()}


def attribute_accuracy(reads: Sequence[Attributes], truths: Sequence[dict],
                       keys: Sequence[str] = ATTRIBUTES) -> Dict[str, float]:
    """Per-attribute share of reads equal to the truth, plus ``"all"`` (every attribute of ``keys`` right).
    A truth without "quality" is clean."""
    shares = attribute_shares(reads, truths, keys)
    return {k: s.p if s.n else 0.0 for k, s in shares.items()}


def attribute_shares(reads: Sequence[Attributes], truths: Sequence[dict],
                     keys: Sequence[str] = ATTRIBUTES) -> Dict[str, Share]:
    """As ``attribute_accuracy``, as Shares with intervals."""
    def truth(t, k):
        return t.get(k, "clean" if k == "quality" else None)
    out = {k: share(r.get(k) == truth(t, k) for r, t in zip(reads, truths)) for k in keys}
    out["all"] = share(all(r.get(k) == truth(t, k) for k in keys) for r, t in zip(reads, truths))
    return out


def named_accuracy(reads: Sequence[Attributes], prompts_attrs: Sequence[dict]) -> Share:
    """Share of images that show the subject and every attribute their prompt names."""
    return share(keeps(r, a) for r, a in zip(reads, prompts_attrs))


__all__ = ["CELL_SHARES", "Mean", "Share", "as_json", "attribute_accuracy", "attribute_shares", "cell_metrics",
           "free_of", "keeps", "matches", "mean", "named_accuracy", "pooled", "share", "shows", "shows_subject",
           "wilson"]
