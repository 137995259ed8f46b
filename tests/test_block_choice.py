"""The block choice means the same on every family (base.chosen_positions, one rule): the Advanced node's three
switches all on = the family's default; `all`; `default`; input/middle/output (UNet groups, DiT thirds);
double/single (joint kinds); indices and ranges over NASA's blocks in run order. Old saved graphs (no `blocks`
text) keep their meaning."""
from __future__ import annotations

import pytest
import torch

import comfy.ldm.modules.attention as comfy_attention

import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa
from comfyui_nasa.nasa_core.adapters.base import ALL_BLOCKS, NASAInputError, parse_blocks
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatchAdvanced

pytestmark = pytest.mark.compat


def steered(patched):
    """How many attention layers / blocks NASA acts in (the slots it holds that steer)."""
    run = patched.model_options["model_function_wrapper"]
    return [key for kind, key, patch in run.slots if getattr(patch, "apply", True)]


def test_parse_blocks_grammar():
    assert parse_blocks("default") == {"default"}
    assert parse_blocks(" All , double ") == {"all", "double"}
    assert parse_blocks("0-3, 7") == {0, 1, 2, 3, 7}
    assert parse_blocks("input,output") == {"input", "output"}
    for bad, why in (("top", "is not a block choice"), ("5-2", "runs backwards"), (" , ", "is empty")):
        with pytest.raises(NASAInputError, match=why):
            parse_blocks(bad)


def test_unet_choices():
    model = tk.tiny_unet_patcher()
    neg = tk.text(2)
    every = len(steered(apply_nasa(model, neg, 0.5)))  # default on a UNet: every text cross-attention layer
    assert every > 2
    assert len(steered(apply_nasa(model, neg, 0.5, blocks={"all"}))) == every
    assert len(steered(apply_nasa(model, neg, 0.5, blocks={"default"}))) == every
    assert steered(apply_nasa(model, neg, 0.5, blocks={0, 1})) == steered(apply_nasa(model, neg, 0.5))[:2]
    groups = [key[0] for key in steered(apply_nasa(model, neg, 0.5))]
    assert [k[0] for k in steered(apply_nasa(model, neg, 0.5, blocks={"input"}))] == [g for g in groups if g == "input"]
    with pytest.raises(NASAInputError, match="has no double blocks"):
        apply_nasa(model, neg, 0.5, blocks={"double"})
    with pytest.raises(NASAInputError, match=f"block {every} does not exist"):
        apply_nasa(model, neg, 0.5, blocks={every})


def test_flux_choices_count_in_run_order():
    model = dk.flux_patcher(depth=3, single=3)  # 6 blocks: doubles 0-2, singles 3-5
    neg = tk.text(2, width=32)

    def chosen(blocks):
        return steered(apply_nasa(model, neg, 0.5, blocks=blocks))

    assert chosen(ALL_BLOCKS) == chosen({"default"}) == [("double_block", 0), ("double_block", 1)]  # first third
    assert len(chosen({"all"})) == 6
    assert chosen({3, 4}) == [("single_block", 0), ("single_block", 1)]
    assert chosen({"single"}) == [("single_block", i) for i in range(3)]
    assert chosen({"input", "single"}) == chosen({0, 1, 3, 4, 5})  # a union, whatever the kinds of names


def test_advanced_node_text_overrides_the_switches_and_old_graphs_keep_their_meaning():
    model = tk.tiny_unet_patcher()
    neg = tk.conditioning(2)
    node = ApplyNASAModelPatchAdvanced()
    inputs = ApplyNASAModelPatchAdvanced.INPUT_TYPES()
    assert list(inputs["required"]) == ["model", "alpha", "start_percent", "end_percent", "input_blocks",
                                        "middle_block", "output_blocks"]  # the widgets saved graphs hold, in order
    assert list(inputs["optional"]) == ["nasa_negative", "blocks", "nasa_reference"]  # new inputs go last, optional
    assert inputs["optional"]["blocks"][1]["default"] == ""
    old, = node.patch(model, 0.5, neg, 0.0, 1.0, True, False, False)  # a graph saved before the text existed
    new, = node.patch(model, 0.5, neg, 0.0, 1.0, True, False, False, blocks="")
    assert steered(old) == steered(new) == [k for k in steered(apply_nasa(model, neg[0][0], 0.5)) if k[0] == "input"]
    text, = node.patch(model, 0.5, neg, 0.0, 1.0, True, False, False, blocks="all")  # switches ignored
    assert steered(text) == steered(apply_nasa(model, neg[0][0], 0.5, blocks={"all"}))


def test_cross_attention_dits_by_third_and_index():
    if not hasattr(comfy_attention, "optimized_attention"):
        pytest.skip("no attention module")
    try:
        model = dk.pixart_patcher(depth=6)
    except (ImportError, AttributeError, KeyError):
        pytest.skip("this ComfyUI has no PixArt (comfy.ldm.pixart)")
    neg = tk.text(2, width=32)
    assert len(steered(apply_nasa(model, neg, 0.5))) == 6  # default: every block
    assert [k for k in steered(apply_nasa(model, neg, 0.5, blocks={"middle"}))] == \
        ["diffusion_model.blocks.2.cross_attn", "diffusion_model.blocks.3.cross_attn"]
    assert steered(apply_nasa(model, neg, 0.5, blocks=parse_blocks("0-1"))) == \
        steered(apply_nasa(model, neg, 0.5, blocks={"input"}))


def test_joint_rows_family_choices():
    if not hasattr(comfy_attention, "wrap_attn"):
        pytest.skip("no attention override (v0.3.60+): the joint-rows families are refused here")
    from family_testkit import qwen_image_patcher
    try:
        model = qwen_image_patcher(layers=6)
    except (ImportError, AttributeError):
        pytest.skip("this ComfyUI has no Qwen-Image")
    neg = torch.randn(1, 4, 40)
    assert steered(apply_nasa(model, neg, 0.5)) == [("double_block", 0), ("double_block", 1)]  # first third
    assert len(steered(apply_nasa(model, neg, 0.5, blocks={"all"}))) == 6
    assert steered(apply_nasa(model, neg, 0.5, blocks={4})) == [("double_block", 4)]
    with pytest.raises(NASAInputError, match="has no single blocks"):
        apply_nasa(model, neg, 0.5, blocks={"single"})
