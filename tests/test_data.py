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


def _imagenet_tree(root, sample_sizes=((40, 56), (56, 40), (48, 48), (40, 40), (64, 48))):
    """A 1000-wnid label space, a test folder of 24x24 images, a ``sample1000`` pool of one
    non-square image for each of a few classes and a ``nette-train`` pool of two classes (3 and
    2 images)."""
    wnids = [f"n{i:08d}" for i in range(1000)]
    (root / "imagenet-classes.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)

    def save(folder, name, w, h):
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)

    for k, c in enumerate((7, 990)):
        for i in range(2):
            save(root / "imagenet-val10" / wnids[c], f"val_{i}.png", 24, 24)
        for i in range(3 - k):
            save(root / "imagenet-calib" / "nette-train" / wnids[c], f"{wnids[c]}_{i}.png", 24, 24)
    for c, (w, h) in zip((0, 5, 7, 500, 999), sample_sizes):
        save(root / "imagenet-calib" / "sample1000" / wnids[c], f"{wnids[c]}_x.png", w, h)
    return wnids


def test_calibration_pools_of_imagenet_and_their_resolution(tmp_path, monkeypatch):
    _imagenet_tree(tmp_path)
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    assert data.calibration_pools("imagenet-val10") == ("train", "nette-train", "sample1000")
    assert data.calibration_pools("cifar10-jpeg") == ("train",)
    sample = data.load_calibration_pool("imagenet-val10", "sample1000", 32)
    assert sample.num_classes == 1000 and sample.present_classes == [0, 5, 7, 500, 999]
    assert sample.images.shape == (5, 3, 32, 32)  # non-square images: short side scaled, centre-cropped
    img = Image.open(tmp_path / "imagenet-calib" / "sample1000" / "n00000000" / "n00000000_x.png").convert("RGB")
    expected = np.asarray(data._resize_center_crop(img, 32))
    assert torch.equal(sample.images[0], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    # the 24x24 images are scaled up to a larger input, whole
    nette = data.load_calibration_pool("imagenet-val10", "nette-train", 40)
    assert nette.images.shape == (5, 3, 40, 40) and nette.present_classes == [7, 990]
    assert load_split("imagenet-val10", "test", 40).images.shape == (4, 3, 40, 40)
    # 'train' is the dataset's train split, bit for bit (the fingerprint stored trials carry)
    for dataset, pool in (("imagenet-val10", "nette-train"), ("imagenet-sample1000", "sample1000")):
        train = load_split(dataset, "train", 32)
        assert data.load_calibration_pool(dataset, "train", 32).fingerprint() == train.fingerprint()
        assert data.load_calibration_pool(dataset, pool, 32).fingerprint() == train.fingerprint()


def test_sample1000_draws_beyond_the_pool_are_topped_up_evenly_from_nette_train(tmp_path, monkeypatch):
    _imagenet_tree(tmp_path)
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    sample = data.load_calibration_pool("imagenet-val10", "sample1000", 32)
    assert data.load_calibration_pool("imagenet-val10", "sample1000", 32, size=5).fingerprint() == sample.fingerprint()
    nette = data.load_calibration_pool("imagenet-val10", "nette-train", 32)  # labels 7, 7, 7, 990, 990
    topped = data.load_calibration_pool("imagenet-val10", "sample1000", 32, size=9)
    assert len(topped) == 9 and torch.equal(topped.images[:5], sample.images)
    # the first image of each class, then the second of each, ...
    assert topped.labels[5:].tolist() == [7, 990, 7, 990]
    assert torch.equal(topped.images[5:], nette.images[[0, 3, 1, 4]])
    assert data.load_calibration_pool("imagenet-sample1000", "train", 32, size=9).fingerprint() == topped.fingerprint()
    assert len(data.load_calibration_pool("imagenet-val10", "sample1000", 32, size=10)) == 10
    with pytest.raises(DataError, match="choose at most 10"):
        data.load_calibration_pool("imagenet-val10", "sample1000", 32, size=11)
    # the other pools do not depend on the size; the draw refuses sizes beyond them
    assert len(data.load_calibration_pool("imagenet-val10", "nette-train", 32, size=50)) == 5


def test_unknown_calibration_pool_is_named(tmp_path, monkeypatch):
    _imagenet_tree(tmp_path)
    monkeypatch.setenv("PTQ_DATA", str(tmp_path))
    with pytest.raises(DataError, match="unknown calibration pool 'sample100' for 'imagenet-val10'; choose one of "
                                        "train, nette-train, sample1000"):
        data.load_calibration_pool("imagenet-val10", "sample100")
    with pytest.raises(DataError, match="choose one of train$"):
        data.load_calibration_pool("cifar10-jpeg", "sample1000")
    with pytest.raises(DataError, match="positive integer"):
        data.load_calibration_pool("imagenet-val10", "sample1000", size=0)


def test_train_pool_of_other_datasets_is_their_train_split(tiny_data):
    pool = data.load_calibration_pool(f"folder:{tiny_data}", "train")
    assert pool.fingerprint() == load_split(f"folder:{tiny_data}", "train").fingerprint()


def test_label_space_size_is_the_models_output_count_and_refuses_an_unknown_dataset():
    from ptqlib.data import label_space_size

    assert label_space_size("imagenet-val10") == label_space_size("imagenet-sample1000") == 1000
    assert label_space_size("cifar10-jpeg") == label_space_size("fashion-mnist") == 10
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'; choose one of .* or folder:/path"):
        label_space_size("cifar100")


def test_label_space_size_of_a_folder_dataset_is_its_class_folders(tmp_path):
    from ptqlib.data import DataError, label_space_size

    for split, classes in {"train": ["a", "b"], "test": ["b", "c"]}.items():
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
    assert label_space_size(f"folder:{tmp_path}") == 3
    with pytest.raises(DataError, match="has no class folders"):
        label_space_size(f"folder:{tmp_path / 'missing'}")
