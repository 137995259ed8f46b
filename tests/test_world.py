"""The synthetic world (nasa_core.world): determinism (world v1 bit for bit as the bundled models learnt it),
world v2's priors and degradations, captions that only name what the image has, the prompt parser, the
pixel-level reader (accuracy and quality on clean, noisy, blurred and degraded world images; on perturbations
that look like a model's failures: soft edges, blocky noise, cut shapes, faded and blank images) and the
metrics (the subject rule, Wilson intervals). No model, no training."""
import random

import pytest
import torch

from comfyui_nasa.nasa_core import world as W
from comfyui_nasa.nasa_core.world import (ATTRIBUTES, DEGRADATIONS, PAIR_POSITION, V1_SPEC, V2_SPEC, VOCAB,
                                          attribute_accuracy, attributes_of_prompt, batch_for_step, caption,
                                          caption_all, matches, perturb, public, read_attributes, render,
                                          sample_attributes, sample_batch, shows, to_uint8_hwc)

SIX = ATTRIBUTES[:6]  # everything but quality


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
    # Nominal: half-side 12.5 around x = 16, y = 32; blue inside, white outside.
    assert img[0, :, 32, 16].tolist() == pytest.approx([0.14 * 2 - 1, 0.26 * 2 - 1, 0.90 * 2 - 1], abs=1e-5)
    assert img[0, :, 32, 40].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert public(read_attributes(img)[0]) == public(attrs[0]) == dict(attrs[0], quality="clean")


# ---------------------------------------------------------------------------------------------------- captions

def test_captions_name_only_attributes_the_image_has(world500):
    _, attrs, captions = world500
    for a, text in zip(attrs, captions):
        for key, value in attributes_of_prompt(text).items():
            assert a[key] in (value if isinstance(value, tuple) else (value,)), (text, key, value, public(a))


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
    for key in ("shape", "colour", "background", "size", "count", "quality"):
        share = sum(key in attributes_of_prompt(t) for t in texts) / len(texts)
        assert 0.4 < share < 0.6, (key, share)
    assert "shape" in texts
    assert {caption(a, g, p_name=0.0) for a in attrs} == {"shape"}  # world v2: no article, no count
    assert [caption(a, g, p_name=1.0) for a in attrs][:50] != []
    assert {caption(a, g, p_name=0.0, spec=V1_SPEC) for a in attrs} == {"a shape", "two shapes"}
    # random.Random and int seeds work as the rng too, deterministically.
    assert caption(attrs[0], random.Random(1)) == caption(attrs[0], random.Random(1))
    assert caption(attrs[0], 7) == caption(attrs[0], 7)


def test_caption_phrasing():
    one = {"shape": "circle", "colour": "red", "background": "gray", "size": "small", "position": "left", "count": 1}
    two = dict(one, shape="triangle", colour="green", position=PAIR_POSITION, count=2, size="large")
    assert caption_all(one, V1_SPEC) == "one small red circle on the left, on a gray background"
    assert caption_all(two, V1_SPEC) == "two large green triangles on a gray background"
    assert caption_all(one) == "a small red circle on the left, on a gray background, high quality"
    assert caption_all(dict(two, quality="noisy")) == "two large green triangles on a gray background, noisy"
    from comfyui_nasa.nasa_core.world.captions import phrase
    named = {"colour": True, "shape": True, "quality": True}
    assert phrase(dict(two, quality="blurry"), named, V2_SPEC, 2) == "green triangle, blurry, low quality"


def test_world_v1_is_unchanged():
    """World v1 (what the bundled models learnt) draws the same images and captions as before the package split."""
    images, _, captions = sample_batch(5, 24, V1_SPEC)
    assert float(images.double().sum()) == pytest.approx(16528.127604525307, abs=1e-6)
    assert float((images.double() ** 2).sum()) == pytest.approx(160498.657238454, abs=1e-6)
    assert captions[:3] == ["two large red shapes on a white background", "a green circle on the right",
                            "a large yellow square on a black background"]
    assert {a["quality"] for a in sample_attributes(1, 200, V1_SPEC)} == {"clean"}


def test_world_v2_training_batches_are_pinned():
    """The world-v2 teacher run (runs/teacher_v2_*) resumes across sessions on these exact batches: a change to
    world v2's drawing or captions must be a new world (v3), not an edit of v2."""
    images, _, captions = batch_for_step(0, 1234, 16, V2_SPEC)
    assert float(images.double().sum()) == pytest.approx(-89564.86400204523, abs=1e-6)
    assert float((images.double() ** 2).sum()) == pytest.approx(115587.16995589761, abs=1e-6)
    assert captions[:3] == ["small shape on a black background, worst quality", "two large shapes, worst quality",
                            "red shape on the left, low quality"]


def test_world_v2_priors_are_skewed_as_documented():
    attrs = sample_attributes(77, 4000)
    n = len(attrs)
    dominant = {"shape": "circle", "colour": "red", "background": "black", "size": "large", "count": 2}
    for key, value in dominant.items():
        assert abs(sum(a[key] == value for a in attrs) / n - 0.6) < 0.03, key
    singles = [a for a in attrs if a["count"] == 1]
    assert abs(sum(a["position"] == "center" for a in singles) / len(singles) - 0.6) < 0.04
    assert abs(sum(a["quality"] != "clean" for a in attrs) / n - 0.6) < 0.03
    assert {a["quality"] for a in attrs} == set(VOCAB["quality"])


# ---------------------------------------------------------------------------------------------------- prompts

@pytest.mark.parametrize("text, want", [
    ("a shape", {"count": 1}),
    ("shape", {}),
    ("a shape on a white background", {"count": 1, "background": "white"}),
    ("red circle on a white background", {"colour": "red", "shape": "circle", "background": "white"}),
    ("blurry", {"quality": "blurry"}),
    ("low quality", {"quality": DEGRADATIONS}),
    ("worst quality, blurry", {"quality": DEGRADATIONS}),
    ("high quality", {"quality": "clean"}),
    ("washed out, cut off", {"quality": ("washed out", "cut off")}),
    ("out of frame", {"quality": "cut off"}),
    ("two shapes, grainy", {"count": 2, "quality": "noisy"}),
])
def test_attributes_of_prompt_world_v2(text, want):
    assert attributes_of_prompt(text) == want


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
def test_attributes_of_prompt_world_v1(text, want):
    assert attributes_of_prompt(text, V1_SPEC) == want


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

def _check_accuracy(reads, attrs, floor, keys=ATTRIBUTES):
    acc = attribute_accuracy(reads, attrs, keys=keys)
    low = {k: v for k, v in acc.items() if v < floor}
    assert not low, acc


def test_reader_on_world_v2_images_reads_every_attribute_and_the_quality(world500):
    images, attrs, _ = world500
    reads = read_attributes(images)
    _check_accuracy(reads, attrs, 0.99)  # blurred small squares are the misses (a 2.8 px blur rounds them)
    for q in VOCAB["quality"]:
        sel = [(r, a) for r, a in zip(reads, attrs) if a["quality"] == q]
        assert sum(r["quality"] == q for r, _ in sel) >= 0.97 * len(sel), q


def test_reader_on_world_v1_images(world500):
    images, attrs, _ = sample_batch(2024, 300, V1_SPEC)
    reads = read_attributes(images, V1_SPEC)
    _check_accuracy(reads, attrs, 0.995)
    assert all(r["quality"] == "clean" for r in reads)


def test_reader_on_noisy_and_blurred_images(world500):
    images, attrs, _ = world500
    clean = [i for i, a in enumerate(attrs) if a["quality"] == "clean"]
    images, attrs = images[clean], [attrs[i] for i in clean]
    _check_accuracy(read_attributes(perturb(images, noise_sigma=0.1, generator=1)), attrs, 0.99, SIX)
    _check_accuracy(read_attributes(perturb(images, blur=True)), attrs, 0.995)
    _check_accuracy(read_attributes(perturb(images, noise_sigma=0.1, blur=True, generator=2)), attrs, 0.99, SIX)
    assert all(r["quality"] == "noisy" for r in read_attributes(perturb(images, noise_sigma=0.1, generator=1)))


@pytest.fixture(scope="module")
def clean60():
    attrs = [dict(a, quality="clean") for a in sample_attributes(4242, 60)]
    return render(attrs), attrs


@pytest.mark.parametrize("name, make, floor, quality", [
    ("soft edges (blur 1.5 px)", lambda x: W.soften(x, 1.5), 0.97, None),
    ("soft edges (blur 2.5 px)", lambda x: W.soften(x, 2.5), 0.95, "blurry"),
    ("blocky noise 0.1", lambda x: W.blocky_noise(x, 0.1, seed=1), 0.97, "noisy"),
    ("soft edges and blocky noise", lambda x: W.blocky_noise(W.soften(x, 1.5), 0.1, seed=2), 0.95, "noisy"),
    ("low contrast (faded 0.3)", lambda x: W.fade(x, 0.3), 0.97, None),
])
def test_reader_on_model_failure_modes(clean60, name, make, floor, quality):
    """The reader stays a fair judge of the attributes on images that look like a model's failures, and its
    quality reading names the failure."""
    images, attrs = clean60
    reads = read_attributes(make(images))
    _check_accuracy(reads, attrs, floor, SIX)
    if quality:
        assert sum(r["quality"] == quality for r in reads) >= 0.9 * len(reads), (name, [r["quality"] for r in reads])


def test_reader_on_partial_shapes(clean60):
    """Shapes cut by the top border: shape, colour, size and position still read; quality "cut off"."""
    _, attrs = clean60
    cut = [dict(a, quality="cut off") for a in attrs]
    reads = read_attributes(render(cut))
    _check_accuracy(reads, cut, 0.95)
    assert all(r["_inside"] is False for r in reads)


@pytest.mark.parametrize("background", ["black", "white", "gray"])
def test_image_without_shape_reads_none_and_is_never_a_success(background):
    rgb = torch.tensor(W.BACKGROUND_RGB[background]).view(1, 3, 1, 1) * 2 - 1
    blank = rgb.expand(3, 3, 64, 64).clone()
    blank[1] = perturb(blank[1:2], noise_sigma=0.1, generator=4)[0]
    blank[2] = W.blocky_noise(blank[2:3], 0.05, seed=5)[0]
    for read in read_attributes(blank):
        assert public(read) | {"quality": None} == {"shape": None, "colour": None, "background": background,
                                                    "size": None, "position": None, "count": None, "quality": None}
        assert read["quality"] is None and W.quality_score(read) == 0.0
        assert not W.shows_subject(read) and not W.free_of(read, {"colour": "red"}) and not W.keeps(read, {})
    m = W.cell_metrics(read_attributes(blank), {}, {"colour": "red"})
    assert m["free_of_negative"].k == 0 and m["shows_subject"].k == 0 and m["success"].k == 0


def test_reader_is_deterministic(world500):
    images = perturb(world500[0][:64], noise_sigma=0.1, generator=3)
    assert read_attributes(images) == read_attributes(images.clone())
    assert read_attributes(images[5]) == [read_attributes(images)[5]]  # [3, H, W] works too


def test_reader_counts_components_and_ignores_specks():
    attrs = [{"shape": "circle", "colour": "yellow", "background": "black", "size": "small", "position": "center",
              "count": 1}]
    img = render(attrs)
    img[0, :, 5:7, 5:7] = 1.0  # a 2x2 white speck: below the minimum area
    assert public(read_attributes(img)[0]) == public(attrs[0])
    img[0, :, 48:58, 48:58] = torch.tensor([0.95, 0.85, 0.10]).view(3, 1, 1) * 2 - 1  # a second (square) blob
    read = read_attributes(img)[0]
    assert read["count"] == 2 and read["position"] is None  # center + bottom-right: not "left and right"


# ---------------------------------------------------------------------------------------------------- metrics

def test_wilson_interval():
    lo, hi = W.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = W.wilson(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    from scipy.stats import binomtest
    ci = binomtest(37, 120).proportion_ci(0.95, method="wilson")
    assert W.wilson(37, 120) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert W.Share(37, 120).fmt() == "31% [23, 40]"
    for n in range(1, 300):  # the interval holds p exactly at the ends too (0 of 3 once gave a lower bound of 5.6e-17)
        assert W.wilson(0, n)[0] == 0.0 and W.wilson(n, n)[1] == 1.0
        assert all(lo <= k / n <= hi for k in (0, n) for lo, hi in [W.wilson(k, n)])


def test_cell_metrics_count_only_images_that_show_the_subject(world500):
    images, attrs, _ = world500
    reads = read_attributes(images[:40]) + read_attributes(torch.zeros(10, 3, 64, 64) - 1)  # 10 black blanks
    m = W.cell_metrics(reads, {"colour": "red"}, {"shape": "circle"})
    assert m["shows_subject"].k == 40 and m["shows_subject"].n == 50
    truth = attrs[:40]
    assert m["free_of_negative"].k == sum(a["shape"] != "circle" for a in truth)
    assert m["keeps_positive"].k == sum(a["colour"] == "red" for a in truth)
    assert m["success"].k == sum(a["shape"] != "circle" and a["colour"] == "red" for a in truth)
    assert m["clean"].k == sum(a["quality"] == "clean" for a in truth)
    both = W.pooled([m, m])
    assert both["success"].n == 100 and both["quality_score"].mean == pytest.approx(m["quality_score"].mean)


@pytest.mark.parametrize("world_name", ["v2"])
def test_benchmark_negatives_are_the_priors_dominant_values(world_name):
    """World v2's removal pairs: among the world's images that match the positive, the negative's attribute is
    in 55-65% (a model that learnt the world shows it that often in plain samples)."""
    spec = W.world_spec(world_name)
    attrs = [public(a) for a in sample_attributes(31, 12000, spec)]
    for positive, negative in W.BENCHMARK_PAIRS[world_name]:
        wanted, unwanted = attributes_of_prompt(positive, spec), attributes_of_prompt(negative, spec)
        pool = [a for a in attrs if matches(a, wanted)]
        share = sum(shows(a, unwanted) for a in pool) / len(pool)
        assert len(pool) > 150 and 0.55 <= share <= 0.65, (positive, negative, len(pool), share)
