"""Corruptions against hand-computed pixels, and the robustness evaluation on local data."""
import json
import subprocess
import sys

import pytest
import torch

from ptqlib.data import Split
from ptqlib.analysis.robustness import CORRUPTIONS, corrupt


def split(n=6, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    return Split(images, torch.arange(n) % 3, ("a", "b", "c"), "toy")


def test_contrast_and_brightness_by_hand():
    s = Split(torch.tensor([[[[0, 100], [200, 250]]]], dtype=torch.uint8).expand(1, 3, 2, 2).contiguous(),
              torch.tensor([0]), ("a",), "toy")
    mean = (0 + 100 + 200 + 250) / 4 / 255
    expected = [round(((v / 255 - mean) * 0.5 + mean) * 255) for v in (0, 100, 200, 250)]
    assert corrupt(s, "contrast", 1).images[0, 0].flatten().tolist() == expected
    assert corrupt(s, "brightness", 3).images[0, 0].flatten().tolist() == [round(0.3 * 255), 177, 255, 255]


def test_every_corruption_is_deterministic_keeps_labels_and_grows_with_severity():
    s = split()
    for name in CORRUPTIONS:
        errors = []
        for severity in (1, 2, 3):
            c = corrupt(s, name, severity)
            assert torch.equal(c.images, corrupt(s, name, severity).images), name
            assert torch.equal(c.labels, s.labels) and c.images.dtype == torch.uint8
            errors.append((c.images.float() - s.images.float()).pow(2).mean().item())
        assert 0 < errors[0] < errors[1] < errors[2], (name, errors)


def test_blur_of_a_constant_image_is_the_image():
    s = Split(torch.full((2, 3, 16, 16), 77, dtype=torch.uint8), torch.tensor([0, 1]), ("a", "b"), "toy")
    assert torch.equal(corrupt(s, "gaussian_blur", 3).images, s.images)  # reflect padding, kernel sums to 1


def test_bad_corruptions_are_refused():
    with pytest.raises(ValueError, match="unknown corruption 'fog'; choose one of gaussian_noise"):
        corrupt(split(), "fog", 1)
    with pytest.raises(ValueError, match="severity must be 1, 2 or 3, got 4"):
        corrupt(split(), "jpeg", 4)


def test_robustness_command_matches_a_direct_evaluation(tmp_path, tiny_data, tiny_checkpoint):
    from ptqlib.metrics import per_class_accuracy, predict
    from ptqlib.study.trial import TrialContext

    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "ptqlib.app.cli", "robustness", "--data", f"folder:{tiny_data}", "--weights",
           str(tiny_checkpoint), "--calib-size", "8", "--trials", "2", "--corruptions", "jpeg", "contrast",
           "--out", str(out), "--threads", "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["model"], r["seed"]) for r in rows} == {("fp", -1), ("quantized", 0), ("quantized", 1)}
    assert {(r["corruption"], r["severity"]) for r in rows} == {("none", 0)} | {
        (c, s) for c in ("jpeg", "contrast") for s in (1, 2, 3)}
    ctx = TrialContext("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint))
    preds = predict(ctx.model, corrupt(ctx.test, "contrast", 2))
    expected = ctx.named(per_class_accuracy(preds, ctx.test.labels, ctx.classes))
    got = {r["class"]: r["acc"] for r in rows if r["model"] == "fp" and r["corruption"] == "contrast"
           and r["severity"] == 2}
    assert got == pytest.approx(expected)
    clean_fp = {r["class"]: r["acc"] for r in rows if r["model"] == "fp" and r["corruption"] == "none"}
    assert clean_fp == pytest.approx(ctx.fp_per_class)
    bad = subprocess.run(cmd[:-4] + ["--corruptions", "fog", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown corruption 'fog'" in bad.stderr


def test_quantization_change_by_hand():
    import pandas as pd

    from ptqlib.analysis.robustness import quantization_change

    rows = []
    for corruption, severity, fp, q0, q1 in (("none", 0, (90, 80), (85, 70), (87, 74)),
                                             ("jpeg", 1, (80, 60), (70, 40), (74, 50))):
        for model, seed, accs in (("fp", -1, fp), ("quantized", 0, q0), ("quantized", 1, q1)):
            rows += [{"model": model, "seed": seed, "corruption": corruption, "severity": severity, "class": c,
                      "acc": a} for c, a in zip("ab", accs)]
    mean, std = quantization_change(pd.DataFrame(rows))
    assert list(mean.columns) == ["clean", "jpeg 1"] and list(mean.index) == ["a", "b", "Average"]
    assert mean.loc["a", "clean"] == -4 and mean.loc["b", "jpeg 1"] == -15
    assert mean.loc["Average", "jpeg 1"] == pytest.approx(((70 + 40) / 2 + (74 + 50) / 2) / 2 - 70)
    assert std.loc["b", "clean"] == pytest.approx(pd.Series([-10, -6]).std())
