"""Fine-tuning (or training) a CIFAR ResNet on any dataset of :mod:`ptqlib.data`.

The pretrained CIFAR ResNets lose about 11 points on the JPEG re-encoded CIFAR-10 copy; a few
epochs of SGD with a one-cycle schedule (Smith & Topin 2019) on that copy's train split win
most of them back. Augmentation: random crop with 4-pixel zero padding and horizontal flip,
done on whole uint8 batches in memory.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ptqlib import __version__
from ptqlib.data import Split, load_split
from ptqlib.metrics import per_class_accuracy, predict
from ptqlib.models import CIFAR_DEPTHS, build_model


@dataclass(frozen=True)
class TrainConfig:
    model: str = "resnet20"
    dataset: str = "cifar10-jpeg"
    init: str | None = None  # checkpoint to start from; None trains from scratch
    epochs: int = 2
    peak_lr: float = 0.02
    batch_size: int = 128
    weight_decay: float = 1e-4
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in CIFAR_DEPTHS:
            raise ValueError(f"ptq train handles the CIFAR ResNets {', '.join(CIFAR_DEPTHS)}, not {self.model!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.peak_lr > 0:
            raise ValueError("epochs and batch size must be at least 1 and the learning rate positive")


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel crop and horizontal flip of a uint8 batch ``[B, C, H, W]``."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, images.shape[1], h, w + 2 * pad)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, images.shape[1], h, w)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def one_cycle_lr(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 30 % to ``peak``, then cosine decay to ``peak / 1e4``."""
    warm = max(1, int(0.3 * total))
    if step < warm:
        return peak * (0.04 + 0.96 * step / warm)
    progress = (step - warm) / max(1, total - warm)
    return peak * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig, out_path: Path, log=print) -> dict:
    """Train, evaluate per class on the test split, save ``out_path`` (state dict) and a JSON
    card beside it with the recipe and the results."""
    from ptqlib.progress import progress_bar

    torch.manual_seed(cfg.seed)
    train_split, test_split = load_split(cfg.dataset, "train"), load_split(cfg.dataset, "test")
    model = build_model(cfg.model, cfg.init, num_classes=train_split.num_classes,
                        in_channels=train_split.images.shape[1])
    start_acc = _evaluate(model, test_split) if cfg.init else None
    opt = torch.optim.SGD(model.parameters(), lr=cfg.peak_lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = len(train_split) // cfg.batch_size
    total, step, t0 = cfg.epochs * steps_per_epoch, 0, time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train_split), generator=gen)
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=5.0)
        for i in bar:
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x = augment(train_split.images[idx], gen).float().div_(255)
            loss = F.cross_entropy(model(x), train_split.labels[idx])
            for group in opt.param_groups:
                group["lr"] = one_cycle_lr(step, total, cfg.peak_lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
        log(f"epoch {epoch + 1}: test accuracy {_evaluate(model, test_split)['avg']:.2f} %")
    result = _evaluate(model, test_split)
    card = {"config": asdict(cfg), "ptqlib_version": __version__, "train_seconds": round(time.time() - t0, 1),
            "test_accuracy_before": start_acc["avg"] if start_acc else None,
            "test_accuracy": result["avg"], "per_class": result["per_class"], "torch": torch.__version__}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.net.state_dict(), out_path)
    out_path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _evaluate(model: nn.Module, split: Split) -> dict:
    preds = predict(model, split)
    per_class = per_class_accuracy(preds, split.labels, split.present_classes)
    return {"avg": 100.0 * (preds == split.labels).double().mean().item(),
            "per_class": {split.class_names[c]: round(a, 2) for c, a in per_class.items()}}
