"""Block 0 of each 2025-2026 joint-attention family at its real width against the plain-torch reference of
test_joint_families.py (the same check as there at small widths, which runs on every release). Whole-suite runs
only (the PyPI copy and the newest release): a real-width block costs seconds to build on a CPU."""
from __future__ import annotations

import pytest

from test_joint_families import FAMILIES, check_block0_reference, family_or_skip, needs_override, one_blas_thread  # noqa: F401


@pytest.mark.parametrize("name", list(FAMILIES))
def test_block0_matches_reference_real_width(name):
    """Block 0 at the family's real width (Chroma, FLUX.2 klein, Qwen-Image: 3072 wide, 24 heads of 128;
    HunyuanVideo 1.5: 2048 wide, 16 heads; Z-Image: 3840 wide, 30 heads; Lumina 2: 2304 wide, 24 query heads
    over 8 key/value heads; HiDream-I1: 2560 wide, 20 heads), a few tokens."""
    spec = family_or_skip(name)
    needs_override()
    check_block0_reference(spec["make"](**spec["real"]), spec, pos_tokens=4, neg_tokens=3)
