import pytest
import torch

from ptqlib.study.calibset import CalibSpec, build_calibration_set
from ptqlib.data import Split

CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.fixture(scope="module")
def pool():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(600)
    images = torch.randint(0, 256, (6000, 3, 8, 8), generator=gen, dtype=torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)  # lets the test find an image's pool label
    return Split(images, labels, CLASSES, "pool")


def test_same_seed_same_images_other_seed_others(pool):
    a = build_calibration_set(pool, CalibSpec(64), 1)
    assert torch.equal(a.images, build_calibration_set(pool, CalibSpec(64), 1).images)
    assert not torch.equal(a.images, build_calibration_set(pool, CalibSpec(64), 2).images)
    assert sum(a.class_counts.values()) == 64 and a.noise_images == 0


def test_draw_is_without_replacement(pool):
    s = build_calibration_set(pool, CalibSpec(6000), 0)
    assert len({tuple(img.flatten().tolist()) for img in s.images}) == 6000
    assert set(s.class_counts.values()) == {600}


def test_biased_set_has_the_asked_class_near_p(pool):
    s = build_calibration_set(pool, CalibSpec(1000, bias_class="c3", bias_p=0.5), 0)
    share = s.class_counts["c3"] / 1000
    assert abs(share - 0.5) < 0.05  # binomial sd 0.016
    others = [n for c, n in s.class_counts.items() if c != "c3"]
    assert all(abs(n - 500 / 9) < 25 for n in others)
    labels_from_images = s.images[:, 0, 0, 0].long()
    assert (labels_from_images == 3).sum().item() == s.class_counts["c3"]


def test_noise_images_are_counted_and_replace_real_ones(pool):
    s = build_calibration_set(pool, CalibSpec(200, noise=0.1), 0)
    assert s.noise_images == 20 and sum(s.class_counts.values()) == 180
    g = build_calibration_set(pool, CalibSpec(200, noise=0.5, noise_kind="gaussian"), 0)
    assert g.noise_images == 100
    assert 100 < g.images.float().mean() < 156


@pytest.mark.parametrize("spec,message", [
    (dict(size=6001), "calibration size 6001 is larger than the calibration pool (6000 images); choose 1 to 6000"),
    (dict(size=10, bias_class="zebra"), "bias class 'zebra' is not in the calibration pool; choose one of c0"),
    (dict(size=700, bias_class="c1", bias_p=1.0), "class 'c1' has 600 pool images but the draw needs 700"),
])
def test_impossible_requests_are_clear_errors(pool, spec, message):
    with pytest.raises(ValueError) as err:
        build_calibration_set(pool, CalibSpec(**spec), 0)
    assert message in str(err.value)


@pytest.mark.parametrize("kwargs,message", [(dict(noise=1.5), "noise must be a fraction in [0, 1], got 1.5"),
                                            (dict(bias_class="c1", bias_p=-0.1), "bias probability must be in [0, 1]"),
                                            (dict(noise=0.1, noise_kind="salt"), "unknown noise kind 'salt'"),
                                            (dict(size=32, noise=0.01), "noise 0.01 of 32 calibration images is less than one image")])
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError) as err:
        CalibSpec(**kwargs)
    assert message in str(err.value)


def test_fields_that_cannot_matter_are_normalised():
    assert CalibSpec(bias_p=0.9) == CalibSpec(bias_p=0.5) and CalibSpec().bias_p is None
    assert CalibSpec(noise_kind="gaussian") == CalibSpec() and CalibSpec().noise_kind is None
    assert CalibSpec(32, noise=0.05).noise_images == 2  # 1.6 rounds half up


def test_stratified_sets_are_class_balanced(pool):
    s = build_calibration_set(pool, CalibSpec(25, sampling="stratified"), 0)
    counts = sorted(s.class_counts.values())
    assert counts == [2] * 5 + [3] * 5  # 25 = 10 * 2 + 5 extra images on randomly chosen classes
    assert torch.equal(s.labels, s.images[:, 0, 0, 0].long())  # each image's label is its pool label
    assert len({tuple(img.flatten().tolist()) for img in s.images}) == 25
    again = build_calibration_set(pool, CalibSpec(25, sampling="stratified"), 0)
    assert torch.equal(s.images, again.images)
    assert build_calibration_set(pool, CalibSpec(20, sampling="stratified"), 3).class_counts == \
        {c: 2 for c in CLASSES}


def test_labels_mark_noise_images(pool):
    s = build_calibration_set(pool, CalibSpec(40, noise=0.25), 0)
    assert (s.labels == -1).sum().item() == 10 == s.noise_images
    real = s.labels >= 0
    assert torch.equal(s.labels[real], s.images[real][:, 0, 0, 0].long())


def test_stratified_sampling_refuses_bias_and_unknown_samplings():
    with pytest.raises(ValueError, match="cannot be biased towards 'c1'"):
        CalibSpec(64, bias_class="c1", sampling="stratified")
    with pytest.raises(ValueError, match="unknown sampling 'balanced'; choose one of random, stratified"):
        CalibSpec(64, sampling="balanced")
