import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from ptqlib import data
from ptqlib.data import DataError, load_split

from .conftest import write_image_folder


def test_image_folder_is_decoded_once_then_read_from_cache(tiny_data, monkeypatch):
    split = load_split(f"folder:{tiny_data}", "test")
    assert split.images.shape == (24, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.class_names == ("ant", "bee", "cat") and split.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    first = np.asarray(Image.open(tiny_data / "test" / "ant" / "0000.png"))
    assert torch.equal(split.images[0], torch.from_numpy(first.copy()).permute(2, 0, 1))
    monkeypatch.setattr(data, "_decode", lambda *a: pytest.fail("decoded an image again"))
    again = load_split(f"folder:{tiny_data}", "test")
    assert torch.equal(again.images, split.images) and again.fingerprint() == split.fingerprint()


def test_named_datasets_need_ptq_data_and_say_where_they_looked(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="PTQ_DATA is not set"):
        load_split("cifar10-jpeg", "test")
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    with pytest.raises(DataError, match=f"folder '{tmp_path}/cifar10-jpeg/test' does not exist"):
        load_split("cifar10-jpeg", "test")
    with pytest.raises(DataError, match="unknown dataset 'cifar100'"):
        load_split("cifar100", "test")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_split("cifar10-jpeg", "val")


def test_cifar10_jpeg_layout_uses_torchvision_label_order(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "cifar10-jpeg", classes=("truck", "airplane"), per_class=(1, 2), suffix=".jpg")
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    split = load_split("cifar10-jpeg", "test")
    assert split.num_classes == 10 and split.present_classes == [0, 9]


def test_imagenet_folders_keep_the_1000_way_label_space(tmp_path, monkeypatch):
    wnids = [f"n{i:08d}" for i in range(1000)]
    (tmp_path / "imagenet-classes.txt").write_text("\n".join(wnids) + "\n")
    write_image_folder(tmp_path / "imagenet-val10-src", classes=(wnids[7], wnids[990]), per_class=(1, 2), size=40)
    (tmp_path / "imagenet-val10-src" / "test").rename(tmp_path / "imagenet-val10")
    calib = tmp_path / "imagenet-calib" / "nette-train"
    calib.parent.mkdir()
    (tmp_path / "imagenet-val10-src" / "train").rename(calib)
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    test = load_split("imagenet-val10", "test", 32)
    assert test.num_classes == 1000 and test.present_classes == [7, 990]
    assert test.images.shape[-2:] == (32, 32)  # resized and centre-cropped to the model's input
    assert load_split("imagenet-val10", "train", 32).present_classes == [7, 990]


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 3, 9, 3, 1]))
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    split = load_split("fashion-mnist", "test")
    assert split.images.shape == (5, 1, 28, 28)
    assert torch.equal(split.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert split.labels.tolist() == [0, 3, 9, 3, 1] and split.class_names[9] == "boot"


def test_folder_splits_share_one_label_space(tmp_path):
    write_image_folder(tmp_path, classes=("ant", "bee", "cat"), per_class=(2, 1))
    for f in (tmp_path / "test" / "ant").iterdir():
        f.unlink()
    (tmp_path / "test" / "ant").rmdir()  # the test split lacks a class
    test = load_split(f"folder:{tmp_path}", "test")
    assert test.class_names == ("ant", "bee", "cat") and test.present_classes == [1, 2]


def test_unreadable_image_is_named(tmp_path):
    write_image_folder(tmp_path, classes=("ant",), per_class=(1, 1))
    (tmp_path / "test" / "ant" / "0000.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="0000.png' cannot be read"):
        load_split(f"folder:{tmp_path}", "test")


def test_batch_size_follows_the_image_size():
    # stored CIFAR trials were calibrated in batches of 128; the histograms depend on it
    assert data.inference_batch_size(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)) == 128
    assert data.inference_batch_size(torch.zeros(1, 3, 224, 224, dtype=torch.uint8)) == 2
    assert data.inference_batch_size(torch.zeros(1, 1, 4096, 4096, dtype=torch.uint8)) == 1


def test_imagenette_wnids_get_torchvisions_names():
    from torchvision.models._meta import _IMAGENET_CATEGORIES
    # each wnid's line in imagenet-classes.txt (0-based), the standard ImageNet class order
    index = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
             "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701}
    assert {w: data.class_label(w) for w in index} == {w: _IMAGENET_CATEGORIES[i] for w, i in index.items()}
    assert data.class_label("cat") == "cat"
    wnids = tuple(["n01440764", *(f"n{i:08d}" for i in range(1, 1000))])  # a 1000-way ImageNet label space
    names = data.readable_names(wnids)
    assert len(names) == 1000 and [names[i] for i in index.values()] == [data.class_label(w) for w in index]
    assert data.readable_names(("cat", "n03888257")) == ["cat", "parachute"]
