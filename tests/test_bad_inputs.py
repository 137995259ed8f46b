"""Every bad input in the README's table "Bad input, refused" gets its error: one case here per row, matched by the
row's id, and the row's message must be in the error raised (the table and this file cannot drift apart)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import comfy.model_patcher
import comfy.supported_models
import comfy.utils

import dit_testkit as dk
import nasa_testkit as tk
from comfyui_nasa.nasa_core.adapters import apply_nasa, joint
from comfyui_nasa.nodes.nasa_nodes import ApplyNASAModelPatch, ApplyNASAModelPatchAdvanced, NASANegativeConditioning
from comfyui_nasa.nodes.world_nodes import LoadNASAWorldModel

pytestmark = pytest.mark.compat

README = Path(__file__).resolve().parents[1] / "README.md"


def table_rows():
    """(id, message) of each row between the bad-inputs markers of the README."""
    text = README.read_text()
    body = text.split("<!-- bad-inputs:start -->")[1].split("<!-- bad-inputs:end -->")[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and not set(cells[0]) <= set("-` "):
            message = re.findall(r"`([^`]+)`", cells[2])
            rows.append((cells[0].strip("`"), message[0] if message else ""))
    return rows


def unet():
    return tk.tiny_unet_patcher()


def flux_sample(model, positive):
    latent = torch.zeros(1, 16, 16, 16)
    return dk.sample_latent(model, positive, latent, negative=[[torch.zeros(1, 1, 32), dict(positive[0][1])]])


def case_wrong_width_model():
    ApplyNASAModelPatch().patch(unet(), 0.5, nasa_negative=tk.conditioning(2, width=32))


def case_wrong_width_prompt():
    enabled, = ApplyNASAModelPatch().patch(unet(), 0.5)
    positive, = NASANegativeConditioning().attach(tk.conditioning(1), tk.conditioning(2, width=32), 0.5)
    tk.sample(enabled, positive)


def case_unsupported_family():
    config = comfy.supported_models.AuraFlow({"cond_seq_dim": 64, "in_channels": 4, "out_channels": 4, "dim": 64,
                                              "n_layers": 2, "n_double_layers": 1, "n_heads": 2,
                                              "global_conddim": 64, "max_seq": 64})
    aura = comfy.model_patcher.ModelPatcher(config.get_model({}), torch.device("cpu"), torch.device("cpu"))
    ApplyNASAModelPatch().patch(aura, 0.5, nasa_negative=tk.conditioning(2))


def case_unsupported_release(monkeypatch):
    if joint.HAS_ATTENTION_OVERRIDE:
        pytest.skip("this ComfyUI has the attention override (v0.3.60+): NASA runs FLUX's own block forward, and "
                    "this refusal of the composed route cannot occur")
    monkeypatch.setattr(joint, "_COMPOSED_VERIFIED", {})
    model = dk.flux_patcher()
    handle = model.model.diffusion_model.double_blocks[0].register_forward_hook(lambda m, a, out: (out[0] * 2, out[1]))
    try:
        patched = apply_nasa(model, tk.text(2, width=32), 0.5)
        flux_sample(patched, [[tk.text(1, width=32), {"pooled_output": torch.zeros(1, 16)}]])
    finally:
        handle.remove()


def case_reference_width():
    ApplyNASAModelPatchAdvanced().patch(unet(), 0.5, nasa_negative=tk.conditioning(2),
                                        nasa_reference=tk.conditioning(3, width=32))


def case_reference_batch():
    apply_nasa(unet(), tk.text(2), 0.5, reference=tk.text(3, batch=2))


def case_alpha_not_finite():
    ApplyNASAModelPatch().patch(unet(), float("nan"), nasa_negative=tk.conditioning(2))


def case_negative_batch():
    patched = apply_nasa(unet(), tk.text(2, batch=3), 0.5)
    tk.sample(patched, tk.conditioning(1), batch=2)


def case_no_block():
    apply_nasa(dk.flux_patcher(depth=1, single=0), tk.text(2, width=32), 0.5, blocks={"output"})  # one block: a first third


def case_hidream_llama():
    if not hasattr(__import__("comfy.ldm.modules.attention", fromlist=["x"]), "wrap_attn"):
        pytest.skip("no attention override (v0.3.60+): HiDream is refused before its negative is read")
    try:
        from family_testkit import hidream_conditioning, hidream_patcher
        model = hidream_patcher()
    except (ImportError, AttributeError):
        pytest.skip("this ComfyUI has no HiDream")
    positive = hidream_conditioning(1)
    empty = [[torch.zeros(1, 1, 32), dict(positive[0][1])]]
    dk.sample_latent(apply_nasa(model, hidream_conditioning(2)[0][0], 0.5), positive, torch.zeros(1, 16, 8, 8),
                     negative=empty)


def case_block_kind_missing():
    apply_nasa(dk.sd3_patcher(), tk.text(2, width=48), 0.5, blocks={"single"})


def case_block_index():
    apply_nasa(unet(), tk.text(2), 0.5, blocks={99})


def case_block_text():
    ApplyNASAModelPatchAdvanced().patch(unet(), 0.5, blocks="0-3, top")


def case_several_entries():
    ApplyNASAModelPatch().patch(unet(), 0.5, nasa_negative=tk.conditioning(2) + tk.conditioning(3))


def case_negative_mask():
    negative = [[tk.conditioning(1)[0][0], {"attention_mask": torch.ones(1, 5)}]]
    NASANegativeConditioning().attach(tk.conditioning(1), negative, 0.5)


def case_not_a_text_tensor():
    ApplyNASAModelPatch().patch(unet(), 0.5, nasa_negative=[[torch.zeros(1, 64), {}]])


def case_sigma_window():
    apply_nasa(unet(), tk.text(2), 0.5, start_percent=0.8, end_percent=0.2)


def case_bound():
    apply_nasa(dk.flux_patcher(), tk.text(2, width=32), 0.5, bound=-1.0)


def case_negative_stream():
    apply_nasa(dk.flux_patcher(), tk.text(2, width=32), 0.5, negative_stream="sideways")


def case_world_model_missing():
    LoadNASAWorldModel().load("nasa_world_missing.safetensors")


def case_world_model_corrupt(tmp_path):
    import comfyui_nasa.nodes.world_nodes as world_nodes
    source = world_nodes.MODELS_DIR / "nasa_world_teacher.safetensors"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(source.read_bytes()[:4096])
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint
    load_world_checkpoint(str(broken))


def case_world_model_foreign(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    comfy.utils.save_torch_file({"weight": torch.zeros(2, 2)}, str(foreign))
    from comfyui_nasa.nasa_core.world_model.model import load_world_checkpoint
    load_world_checkpoint(str(foreign))


def case_trainer_checkpoint_corrupt(tmp_path):
    from comfyui_nasa.nasa_core.distill.trainer import read_checkpoint
    broken = tmp_path / "step_10.pt"
    torch.save({"format": "x", "config": {}}, broken)
    broken.write_bytes(broken.read_bytes()[:40])
    read_checkpoint(broken)


def case_trainer_config_file(tmp_path):
    from comfyui_nasa.nasa_core.distill.config import load_config_file
    bad = tmp_path / "run.json"
    bad.write_text("{ steps: 10 ")
    load_config_file(str(bad))


def case_trainer_config_key(tmp_path):
    from comfyui_nasa.nasa_core.distill.config import load_config_file
    bad = tmp_path / "run.json"
    bad.write_text('{"stepz": 10}')
    load_config_file(str(bad))


CASES = {name[len("case_"):].replace("_", "-"): fn for name, fn in dict(globals()).items() if name.startswith("case_")}


def test_the_table_and_the_cases_name_the_same_inputs():
    ids = [row for row, _ in table_rows()]
    assert len(ids) == len(set(ids)), ids
    assert set(ids) == set(CASES), f"README rows without a case: {set(ids) - set(CASES)}; " \
                                   f"cases without a row: {set(CASES) - set(ids)}"
    assert all(message for _, message in table_rows())


@pytest.mark.parametrize("row, message", table_rows(), ids=[r for r, _ in table_rows()])
def test_bad_input_gets_its_error(row, message, request):
    fn = CASES[row]
    kwargs = {name: request.getfixturevalue(name) for name in fn.__code__.co_varnames[:fn.__code__.co_argcount]}
    with pytest.raises(Exception) as caught:
        fn(**kwargs)
    assert message in str(caught.value), f"{row}: expected {message!r} in {caught.value!r}"
    assert not isinstance(caught.value, (AttributeError, KeyError, IndexError, TypeError)), \
        f"{row} failed with a crash, not a refusal: {caught.value!r}"
