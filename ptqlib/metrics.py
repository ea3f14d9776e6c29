"""Evaluation: predictions over a whole split and per-class accuracy."""
from __future__ import annotations

import torch
from torch import nn

from .data import Split

EVAL_BATCH = 500


@torch.inference_mode()
def predict(model: nn.Module, split: Split, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Top-1 predicted label of every image of ``split``, ``[N]`` int64."""
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for start in range(0, len(split), batch_size):
        x = split.images[start:start + batch_size].to(device).float().div_(255)
        preds.append(model(x).argmax(1).cpu())
    return torch.cat(preds)


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
