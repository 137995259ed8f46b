"""The synthetic world (nasa_core.world): determinism, captions that only name what the image has, the prompt
parser, and the pixel-level attribute reader (accuracy on clean, noisy and blurred world images; blank images)."""
import random

import pytest
import torch

from comfyui_nasa.nasa_core import world as W
from comfyui_nasa.nasa_core.world import (ATTRIBUTES, PAIR_POSITION, VOCAB, attribute_accuracy, attributes_of_prompt,
                                          batch_for_step, caption, caption_all, matches, perturb, public,
                                          read_attributes, render, sample_attributes, sample_batch, shows,
                                          to_uint8_hwc)


@pytest.fixture(scope="module")
def world500():
    return sample_batch(2024, 500)


# ---------------------------------------------------------------------------------------------------- sampling

def test_images_shape_range_dtype(world500):
    images, attrs, captions = world500
    assert images.shape == (500, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert len(attrs) == len(captions) == 500
    u = to_uint8_hwc(images[:4])
    assert u.shape == (4, 64, 64, 3) and u.dtype == torch.uint8
    assert to_uint8_hwc(images[0]).shape == (64, 64, 3)
    assert torch.equal(to_uint8_hwc(torch.full((1, 3, 2, 2), -1.0)), torch.zeros(1, 2, 2, 3, dtype=torch.uint8))
    assert torch.equal(to_uint8_hwc(torch.full((1, 3, 2, 2), 1.0)), torch.full((1, 2, 2, 3), 255, dtype=torch.uint8))


def test_every_value_occurs_and_pairs_sit_on_the_sides(world500):
    _, attrs, _ = world500
    for key in ATTRIBUTES:
        assert {a[key] for a in attrs} == set(VOCAB[key]), key
    for a in attrs:
        assert (a["position"] == PAIR_POSITION) == (a["count"] == 2)


def test_same_seed_same_world_other_seed_other_world():
    img1, at1, cap1 = sample_batch(5, 24)
    img2, at2, cap2 = sample_batch(5, 24)
    assert torch.equal(img1, img2) and cap1 == cap2 and at1 == at2
    img3, _, cap3 = sample_batch(6, 24)
    assert not torch.equal(img1, img3) and cap1 != cap3
    # A generator is used as given (and advanced): two draws from one generator differ.
    g = torch.Generator().manual_seed(5)
    first, _, _ = sample_batch(g, 24)
    second, _, _ = sample_batch(g, 24)
    assert torch.equal(first, img1) and not torch.equal(first, second)
    # render() reproduces the images from the attribute dicts alone.
    assert torch.equal(render(at1), img1)


def test_batch_for_step_is_a_function_of_seed_and_step():
    a = batch_for_step(0, 1234, 8)
    b = batch_for_step(0, 1234, 8)
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    assert not torch.equal(a[0], batch_for_step(0, 1235, 8)[0])
    assert not torch.equal(a[0], batch_for_step(1, 1234, 8)[0])
    # Resuming: step 1234 is the same whether or not earlier steps were drawn in this process.
    for step in range(3):
        batch_for_step(0, step, 8)
    assert torch.equal(batch_for_step(0, 1234, 8)[0], a[0])


def test_hand_written_attributes_render_at_nominal_place():
    attrs = [{"shape": "square", "colour": "blue", "background": "white", "size": "large", "position": "left",
              "count": 1}]
    img = render(attrs)
    # Nominal: half-side 12 around x = 16, y = 32; blue inside, white outside.
    assert img[0, :, 32, 16].tolist() == pytest.approx([0.14 * 2 - 1, 0.26 * 2 - 1, 0.90 * 2 - 1], abs=1e-5)
    assert img[0, :, 32, 40].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert read_attributes(img)[0] == public(attrs[0])


# ---------------------------------------------------------------------------------------------------- captions

def test_captions_name_only_attributes_the_image_has(world500):
    _, attrs, captions = world500
    for a, text in zip(attrs, captions):
        for key, value in attributes_of_prompt(text).items():
            assert a[key] == value, (text, key, value, public(a))


def test_caption_all_names_everything(world500):
    _, attrs, _ = world500
    for a in attrs[:100]:
        want = public(a)
        if a["count"] == 2:
            del want["position"]  # two shapes are always left and right; "two" says it
        assert attributes_of_prompt(caption_all(a)) == want, caption_all(a)


def test_captions_name_random_subsets():
    attrs = sample_attributes(3, 400)
    g = torch.Generator().manual_seed(0)
    texts = [caption(a, g) for a in attrs]
    for key in ("shape", "colour", "background", "size"):
        share = sum(key in attributes_of_prompt(t) for t in texts) / len(texts)
        assert 0.4 < share < 0.6, (key, share)
    assert "a shape" in texts or "two shapes" in texts
    assert {caption(a, g, p_name=0.0) for a in attrs} == {"a shape", "two shapes"}
    assert [caption(a, g, p_name=1.0) for a in attrs] == [caption_all(a) for a in attrs]
    # random.Random and int seeds work as the rng too, deterministically.
    assert caption(attrs[0], random.Random(1)) == caption(attrs[0], random.Random(1))
    assert caption(attrs[0], 7) == caption(attrs[0], 7)


def test_caption_phrasing():
    one = {"shape": "circle", "colour": "red", "background": "gray", "size": "small", "position": "left", "count": 1}
    two = dict(one, shape="triangle", colour="green", position=PAIR_POSITION, count=2, size="large")
    assert caption_all(one) == "one small red circle on the left, on a gray background"
    assert caption_all(two) == "two large green triangles on a gray background"


# ---------------------------------------------------------------------------------------------------- prompts

@pytest.mark.parametrize("text, want", [
    ("red", {"colour": "red"}),
    ("circle", {"shape": "circle"}),
    ("Circles", {"shape": "circle"}),
    ("a shape", {}),
    ("", {}),
    ("white background", {"background": "white"}),
    ("on a black background", {"background": "black"}),
    ("grey", {"background": "gray"}),
    ("two", {"count": 2}),
    ("two green triangles", {"count": 2, "colour": "green", "shape": "triangle"}),
    ("a small red circle on a white background", {"size": "small", "colour": "red", "shape": "circle",
                                                  "background": "white"}),
    ("a yellow shape on the left", {"colour": "yellow", "position": "left"}),
    ("a large square on a white background", {"size": "large", "shape": "square", "background": "white"}),
    ("big blue disc in the middle", {"size": "large", "colour": "blue", "shape": "circle", "position": "center"}),
    ("shapes on the left and right", {"position": PAIR_POSITION}),
    ("red background", {}),  # no background is red: names nothing
    ("red or blue", {"colour": ("red", "blue")}),
    ("one tiny triangle, centre", {"count": 1, "size": "small", "shape": "triangle", "position": "center"}),
    ("blurry, low quality", {}),
])
def test_attributes_of_prompt(text, want):
    assert attributes_of_prompt(text) == want


def test_matches_and_shows():
    read = {"shape": "circle", "colour": "red", "background": "white", "size": "small", "position": "left",
            "count": 1}
    assert matches(read, {"colour": "red", "shape": "circle"})
    assert not matches(read, {"colour": "red", "shape": "square"})
    assert matches(read, {}) and not shows(read, {})
    assert shows(read, {"colour": "red", "shape": "square"})  # any of
    assert not shows(read, attributes_of_prompt("blue square"))
    assert shows(read, attributes_of_prompt("red or blue"))
    assert matches(read, attributes_of_prompt("red or blue"))
    blank = {k: None for k in ATTRIBUTES}
    assert not matches(blank, {"colour": "red"}) and not shows(blank, {"colour": "red"})


# ---------------------------------------------------------------------------------------------------- reader

def _check_accuracy(reads, attrs, floor):
    acc = attribute_accuracy(reads, attrs)
    low = {k: v for k, v in acc.items() if v < floor}
    assert not low, acc


def test_reader_on_clean_world_images(world500):
    images, attrs, _ = world500
    _check_accuracy(read_attributes(images), attrs, 0.995)


def test_reader_on_noisy_and_blurred_images(world500):
    images, attrs, _ = world500
    _check_accuracy(read_attributes(perturb(images, noise_sigma=0.1, generator=1)), attrs, 0.995)
    _check_accuracy(read_attributes(perturb(images, blur=True)), attrs, 0.995)
    _check_accuracy(read_attributes(perturb(images, noise_sigma=0.1, blur=True, generator=2)), attrs, 0.99)


def test_reader_is_deterministic(world500):
    images = perturb(world500[0][:64], noise_sigma=0.1, generator=3)
    assert read_attributes(images) == read_attributes(images.clone())
    assert read_attributes(images[5]) == [read_attributes(images)[5]]  # [3, H, W] works too


@pytest.mark.parametrize("background", ["black", "white", "gray"])
def test_image_without_shape_reads_none(background):
    rgb = torch.tensor(W.BACKGROUND_RGB[background]).view(1, 3, 1, 1) * 2 - 1
    blank = rgb.expand(2, 3, 64, 64).clone()
    blank[1] = perturb(blank[1:], noise_sigma=0.1, generator=4)[0]
    for read in read_attributes(blank):
        assert read == {"shape": None, "colour": None, "background": background, "size": None,
                        "position": None, "count": None}


def test_reader_counts_components_and_ignores_specks():
    attrs = [{"shape": "circle", "colour": "yellow", "background": "black", "size": "small", "position": "center",
              "count": 1}]
    img = render(attrs)
    img[0, :, 5:7, 5:7] = 1.0  # a 2x2 white speck: below the minimum area
    assert read_attributes(img)[0] == public(attrs[0])
    img[0, :, 50:58, 50:58] = torch.tensor([0.95, 0.85, 0.10]).view(3, 1, 1) * 2 - 1  # a second (square) blob
    read = read_attributes(img)[0]
    assert read["count"] == 2 and read["position"] is None  # center + bottom-right: not "left and right"


def test_connected_components_8_neighbour():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 1, 1] = m[0, 2, 2] = True  # diagonal neighbours: one component
    m[0, 5, 1:7] = True
    m[0, 5:8, 1] = m[0, 5:8, 6] = True  # a U: one component
    m[0, 0, 7] = True  # an isolated pixel
    labels = W._connected_components(m)[0]
    assert labels[1, 1] == labels[2, 2] != 0
    assert len({int(v) for v in labels[m[0]]}) == 3
    assert (labels[~m[0]] == 0).all()
