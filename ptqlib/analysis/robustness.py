"""Robustness of quantized models to corrupted inputs, per class.

Corrupted copies of the test split are made here at fixed seeds, in the spirit of CIFAR-10-C
(Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", arXiv:1903.12261), with five corruptions at three severities:

==============  =====================================================  ===================
corruption      operation on pixels in [0, 1]                          severity 1 / 2 / 3
==============  =====================================================  ===================
gaussian_noise  ``x + N(0, sigma^2)``, clipped                         sigma .04 / .06 / .08
gaussian_blur   Gaussian kernel of std ``sigma`` px, reflect padding   sigma .5 / 1 / 1.5
jpeg            JPEG re-encoding (Pillow)                              quality 40 / 20 / 10
contrast        ``(x - m) * c + m``, ``m`` the image's mean            c .5 / .3 / .2
brightness      ``x + delta``, clipped                                 delta .1 / .2 / .3
==============  =====================================================  ===================

The FP model and quantized models from the study's trials (same configuration and seeds as
in the results store) are evaluated on every corrupted copy.
"""
from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from ptqlib.analysis.aggregate import AVERAGE
from ptqlib.data import Split, to_float
from ptqlib.metrics import per_class_accuracy, predict
from ptqlib.study.settings import TrialConfig
from ptqlib.study.trial import TrialContext

SEVERITIES = {
    "gaussian_noise": (0.04, 0.06, 0.08),
    "gaussian_blur": (0.5, 1.0, 1.5),
    "jpeg": (40, 20, 10),
    "contrast": (0.5, 0.3, 0.2),
    "brightness": (0.1, 0.2, 0.3),
}
CORRUPTIONS = tuple(SEVERITIES)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def _noise(images: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    x = to_float(images)
    return _to_uint8(x + sigma * torch.randn(x.shape, generator=gen))


def _blur(images: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    return _to_uint8(TF.gaussian_blur(to_float(images), [size, size], [sigma, sigma]))


def _jpeg(images: torch.Tensor, quality: int, gen: torch.Generator) -> torch.Tensor:
    out = torch.empty_like(images)
    for i, img in enumerate(images):
        buffer = io.BytesIO()
        pixels = img.permute(1, 2, 0).numpy()
        Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer))
        out[i] = torch.from_numpy(decoded.reshape(*decoded.shape[:2], -1).copy()).permute(2, 0, 1)
    return out


def _contrast(images: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    x = to_float(images)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _to_uint8((x - mean) * c + mean)


def _brightness(images: torch.Tensor, delta: float, gen: torch.Generator) -> torch.Tensor:
    return _to_uint8(to_float(images) + delta)


OPERATIONS: dict[str, Callable] = {"gaussian_noise": _noise, "gaussian_blur": _blur, "jpeg": _jpeg,
                                   "contrast": _contrast, "brightness": _brightness}


def corrupt(split: Split, corruption: str, severity: int, seed: int = 0) -> Split:
    """A corrupted copy of ``split`` (same labels); the same arguments give the same pixels."""
    if corruption not in SEVERITIES:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity!r}")
    gen = torch.Generator().manual_seed(seed * 1000 + zlib.crc32(corruption.encode()) % 1000 + severity)
    images = OPERATIONS[corruption](split.images, SEVERITIES[corruption][severity - 1], gen)
    assert images.shape == split.images.shape and images.dtype == torch.uint8
    return replace(split, images=images, name=f"{split.name}-{corruption}{severity}")


def robustness_frame(ctx: TrialContext, configs: list[TrialConfig], corruptions: tuple[str, ...] = CORRUPTIONS,
                     progress: bool = True) -> pd.DataFrame:
    """Per-class accuracy of the FP model (``seed`` -1) and of each quantized trial, on the
    clean test split (``corruption`` "none", severity 0) and on every corrupted copy."""
    from ptqlib.progress import progress_bar

    from ptqlib.study.calibset import build_calibration_set

    models = [("fp", -1, ctx.model)]
    for cfg in configs:
        calib = build_calibration_set(ctx.pool, cfg.calib, cfg.seed)
        models.append(("quantized", cfg.seed, ctx.quantize(cfg, calib.images, calib.labels)))
    splits = [("none", 0, ctx.test)] + [(c, s, None) for c in corruptions for s in (1, 2, 3)]
    rows = []
    for corruption, severity, split in progress_bar(splits, desc="corruptions", disable=not progress):
        split = split or corrupt(ctx.test, corruption, severity)
        for kind, seed, model in models:
            preds = predict(model, split)
            for name, acc in ctx.named(per_class_accuracy(preds, split.labels, ctx.classes)).items():
                rows.append({"model": kind, "seed": seed, "corruption": corruption, "severity": severity,
                             "class": name, "acc": acc})
    return pd.DataFrame(rows)


def quantization_change(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = classes + Average, columns = ``"corruption severity"``: the mean over quantized
    trials of (quantized - FP) accuracy on the same inputs, and its std over trials."""
    frame = frame.assign(column=[f"{c} {s}" if s else "clean" for c, s in zip(frame["corruption"], frame["severity"])])
    avg = frame.groupby(["model", "seed", "column"], as_index=False)["acc"].mean().assign(**{"class": AVERAGE})
    frame = pd.concat([frame, avg], ignore_index=True)
    fp = frame[frame["model"] == "fp"].set_index(["column", "class"])["acc"]
    quant = frame[frame["model"] == "quantized"].copy()
    quant["change"] = quant["acc"].to_numpy() - fp.loc[list(zip(quant["column"], quant["class"]))].to_numpy()
    columns = list(dict.fromkeys(frame["column"]))
    rows = [c for c in dict.fromkeys(frame["class"]) if c != AVERAGE] + [AVERAGE]
    g = quant.groupby(["class", "column"])["change"]
    return (g.mean().unstack()[columns].loc[rows], g.std().unstack()[columns].loc[rows])
