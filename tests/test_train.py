import json

import pytest
import torch
import torch.nn.functional as F

from ptqlib.models import build_model
from ptqlib.train import TrainConfig, augment, one_cycle_lr, train


def test_augment_is_a_padded_crop_or_its_mirror():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0), pad=2)
    padded = F.pad(images, (2, 2, 2, 2))
    for img, pad_img in zip(out, padded):
        crops = [pad_img[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(img, c) or torch.equal(img, c.flip(2)) for c in crops)
    assert not torch.equal(out, images)


def test_one_cycle_schedule_peaks_then_decays():
    lrs = [one_cycle_lr(s, 100, 0.02) for s in range(100)]
    assert max(lrs) == pytest.approx(0.02, rel=0.05) and lrs.index(max(lrs)) in range(28, 32)
    assert lrs[0] < 0.002 and lrs[-1] < 0.0005


def test_train_writes_a_loadable_checkpoint_and_its_card(tmp_path, tiny_data, tiny_checkpoint):
    out = tmp_path / "w" / "resnet20.pt"
    card = train(TrainConfig("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint), epochs=1, batch_size=8),
                 out, log=lambda m: None)
    assert set(card["per_class"]) == {"ant", "bee", "cat"}
    assert json.loads(out.with_suffix(".json").read_text())["config"]["epochs"] == 1
    model = build_model("resnet20", out, num_classes=3)
    assert not torch.equal(model.net.conv1.weight, build_model("resnet20", tiny_checkpoint, num_classes=3).net.conv1.weight)


def test_train_config_refuses_non_cifar_models():
    with pytest.raises(ValueError, match="CIFAR ResNets"):
        TrainConfig(model="resnet50")
