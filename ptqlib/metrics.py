"""Evaluation: predictions over a whole split, per-class accuracy, and the expected calibration
error (Guo et al. 2017, "On calibration of modern neural networks", arXiv:1706.04599)."""
from __future__ import annotations

import torch
from torch import nn

from ptqlib.data import Split, inference_batch_size


@torch.inference_mode()
def predict_with_confidence(model: nn.Module, split: Split, batch_size: int | None = None,
                            desc: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 predicted label ``[N]`` int64 and its softmax probability ``[N]`` float32, for
    every image of ``split`` (``batch_size`` None: ``inference_batch_size``; ``desc``: a
    progress bar's name, none without)."""
    model.eval()
    batch_size = batch_size or inference_batch_size(split.images)
    device = next(model.parameters()).device
    preds, confidence = [], []
    starts = range(0, len(split), batch_size)
    if desc is not None:
        from ptqlib.progress import progress_bar
        starts = progress_bar(starts, desc=desc, unit="batch", leave=False, mininterval=1.0)
    for start in starts:
        x = split.images[start:start + batch_size].to(device).float().div_(255)
        top = model(x).float().softmax(1).max(1)
        preds.append(top.indices.cpu())
        confidence.append(top.values.cpu())
    return torch.cat(preds), torch.cat(confidence)


def predict(model: nn.Module, split: Split, batch_size: int | None = None) -> torch.Tensor:
    """Top-1 predicted label of every image of ``split``, ``[N]`` int64."""
    return predict_with_confidence(model, split, batch_size)[0]


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> dict[int, float]:
    """Accuracy (in %) of each label in ``classes``."""
    correct = (preds == labels)
    out = {}
    for c in classes:
        mask = labels == c
        assert mask.any(), f"class {c} has no test images"
        out[c] = 100.0 * correct[mask].double().mean().item()
    return out


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (preds == labels).double().mean().item()


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE in %: the |accuracy - confidence| gap of equal-width confidence bins, weighted by the
    share of images in each bin (top-label confidence)."""
    assert confidence.shape == correct.shape and confidence.ndim == 1
    conf = confidence.double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf, edges[1:-1])  # bin i holds (edges[i], edges[i+1]]; 0 goes to bin 0
    ece = 0.0
    for i in range(bins):
        members = which == i
        if members.any():
            gap = (correct[members].double().mean() - conf[members].mean()).abs()
            ece += members.double().mean().item() * gap.item()
    return 100.0 * ece
