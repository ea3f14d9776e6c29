"""Shared fixtures: everything here is made locally, no ../shared data and no network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ptqlib.models import CifarResNet


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PTQ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("PTQ_DATA", raising=False)
    monkeypatch.delenv("PTQ_DEVICE", raising=False)
    torch.manual_seed(0)


# The suite's models are small: one thread is as fast and does not fight a busy machine.
torch.set_num_threads(1)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def write_image_folder(root, classes=("ant", "bee", "cat"), per_class=(12, 8), size=32, seed=0, suffix=".png"):
    """``root/train`` and ``root/test`` of class folders with random images; images of a class
    share a colour bias so that a model can learn something."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                img[..., k % 3] = np.clip(img[..., k % 3].astype(int) + 80, 0, 255)
                Image.fromarray(img).save(root / split / name / f"{i:04d}{suffix}")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A ResNet-20 for the 3 classes of ``tiny_data``, saved like the public checkpoints."""
    model = randomize_bn(CifarResNet(3, num_classes=3))
    path = tmp_path_factory.mktemp("ckpt") / "resnet20-tiny.th"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "best_prec1": 0.0}, path)
    return path
