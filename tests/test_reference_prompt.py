"""apply_nasa's ``reference`` (the Advanced node's nasa_reference; beyond the paper) on every family NASA covers:
Z+ - alpha (Z- - Z_ref), installed as a second NASA run under the main one.

The equations themselves are checked in plain torch on the UNet (test_unet_adapter.py) and on FLUX / SD3 joint
blocks (test_joint_adapters.py). Here, on every other family's real ComfyUI classes: the reference run must act in
exactly the layers, rows and sigma window of the main run with exactly the opposite alpha, so a reference equal to
the negative cancels it (the unpatched model, to rounding), and a different reference changes the output."""
import pytest

import dit_testkit as dk
import nasa_testkit as tk
import test_joint_families as tf
from comfyui_nasa.nasa_core.adapters import apply_nasa

pytestmark = pytest.mark.compat  # runs on every ComfyUI release of the matrix (scripts/test.sh)


def _case_unet():
    model = tk.tiny_unet_patcher()
    return model, lambda m: tk.sample(m, tk.conditioning(1), steps=2), tk.text(2), tk.text(5, tokens=3), {}


def _case_dit(name):
    def case():
        if name in ("flux", "sd3"):
            model, width = (dk.flux_patcher(), 32) if name == "flux" else (dk.sd3_patcher(), 48)
            import test_joint_adapters as tj
            pos, neg = tj.cond(1, width=width), tj.cond(9, width=width)
            return (model, lambda m: tj.sample(m, pos, neg, steps=2), tj.cond(2, 7, width)[0][0],
                    tj.cond(5, 4, width)[0][0], {})
        module = {"pixart": "test_pixart_adapter", "wan": "test_wan_adapter", "kandinsky5": "test_kandinsky5_adapter",
                  "ltxv": "test_ltx_adapter"}[name]
        t = pytest.importorskip(module)  # each module skips itself where this ComfyUI has no such model
        model = {"pixart": lambda: dk.pixart_patcher(depth=t.DEPTH, caption_channels=t.WIDTH),
                 "wan": lambda: dk.wan_patcher(num_layers=t.DEPTH, text_dim=t.WIDTH),
                 "kandinsky5": lambda: t.k5_patcher(), "ltxv": lambda: t.ltxv_patcher()}[name]()
        pos = t.cond(1)
        return model, lambda m: t.sample(m, pos, steps=2), t.neg(2), t.neg(5, tokens=3), {}
    return case


def _case_rows(name):
    def case():
        spec = tf.family_or_skip(name)
        tf.needs_override()
        model = spec["make"]()
        pos = tf.conditioning(tf.text(1, 6, spec["ctx"]), spec)
        neg, ref = tf.text(2, 5, spec["ctx"]), tf.text(5, 3, spec["ctx"])
        extra = dict(negative_extra=tf.conditioning(neg, spec)[0][1], reference_extra=tf.conditioning(ref, spec)[0][1])
        return model, lambda m: tf.sample(m, spec, pos, steps=2), neg, ref, extra
    return case


CASES = {"unet": _case_unet, **{n: _case_dit(n) for n in ("flux", "sd3", "pixart", "wan", "kandinsky5", "ltxv")},
         **{n: _case_rows(n) for n in tf.FAMILIES}}  # the 2025-2026 joint-attention families


@pytest.mark.parametrize("name", list(CASES))
def test_a_reference_equal_to_the_negative_cancels_it_and_another_changes_the_output(name):
    model, sample, neg, ref, extra = CASES[name]()
    plain = sample(model)
    alone = sample(apply_nasa(model, neg, 0.7, **{k: v for k, v in extra.items() if k == "negative_extra"}))
    cancelled = sample(apply_nasa(model, neg, 0.7, reference=neg,
                                  **dict(extra, reference_extra=extra.get("negative_extra"))))
    centred = sample(apply_nasa(model, neg, 0.7, reference=ref, **extra))
    scale = plain.norm()
    assert (alone - plain).norm() > 1e-3 * scale                  # NASA acts on this tiny model
    assert (cancelled - plain).norm() < 1e-5 * scale, (cancelled - plain).norm() / scale
    assert (centred - alone).norm() > 1e-3 * scale                # the reference counts
