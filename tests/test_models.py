import hashlib

import pytest
import torch

from ptqlib.models import (CheckpointError, CifarResNet, build_model, download_cifar_checkpoint,
                           read_state_dict)


@pytest.mark.parametrize("name,depth,params", [("resnet20", 3, 269_722), ("resnet32", 5, 464_154),
                                               ("resnet44", 7, 658_586), ("resnet56", 9, 853_018)])
def test_cifar_resnets_have_the_published_sizes(name, depth, params):
    assert sum(p.numel() for p in CifarResNet(depth).parameters()) == params


def test_option_a_shortcut_pads_channels_and_subsamples():
    block = CifarResNet(3).layer2[0]
    x = torch.randn(1, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (1, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2]) and not s[:, :8].any() and not s[:, 24:].any()


def test_public_checkpoint_format_loads(tiny_checkpoint):
    model = build_model("resnet20", tiny_checkpoint, num_classes=3)
    state = read_state_dict(tiny_checkpoint)
    assert torch.equal(model.net.conv1.weight, state["conv1.weight"])
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_corrupt_and_mismatched_checkpoints_are_named(tmp_path, tiny_checkpoint):
    bad = tmp_path / "broken.th"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="broken.th' is not a readable PyTorch file"):
        build_model("resnet20", bad)
    with pytest.raises(CheckpointError, match="does not fit CifarResNet"):
        build_model("resnet32", tiny_checkpoint, num_classes=3)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("resnet20", tmp_path / "missing.th")
    pickled = tmp_path / "pickle.th"
    torch.save({"state_dict": {"a": object()}}, pickled)
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):  # weights_only refuses objects
        build_model("resnet20", pickled)


def test_download_checks_the_published_sha256_prefix(tmp_path):
    fake = tmp_path / "resnet20-12fca82f.th"
    fake.write_bytes(b"not the real checkpoint")
    assert not hashlib.sha256(fake.read_bytes()).hexdigest().startswith("12fca82f")
    with pytest.raises(CheckpointError, match="wrong sha256"):
        download_cifar_checkpoint("resnet20", tmp_path)


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    model = build_model("efficientnet_lite0")
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert model.mean.flatten().tolist() == pytest.approx([127 / 255] * 3)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; choose one of resnet20"):
        build_model("vgg16")
