"""Datasets as in-memory uint8 tensors, decoded once and cached on disk.

A dataset is named (``cifar10``, ``cifar10-jpeg``, ``imagenet-val10``, ``imagenet-sample1000``,
``fashion-mnist``) or given as ``folder:/path`` (``train/`` and ``test/`` of class folders).
Named folders are looked up under ``$PTQ_DATA`` (e.g. ``PTQ_DATA=../shared/data``).
The first use decodes every image into a ``[N, C, H, W]`` uint8 tensor saved under
``$PTQ_CACHE`` (default ``~/.cache/ptqlib``), keyed by a fingerprint of the file list; later
uses, and every trial, load that tensor and never decode an image again.

ImageNet-style data keeps the 1000-way label space (the wnid's line in
``imagenet-classes.txt``), so a 1000-class model is evaluated 1000-way, and per-class
accuracy is reported for the classes present.

Images reach a model's input size here, when they are decoded (``image_size``, the model's
``model_info(name).input_size``), never inside the model: an image whose short side is larger
than the size has it scaled to ``size / 0.875`` and is centre-cropped (the usual evaluation
transform); an image no larger has its short side scaled to the size, then centre-cropped. So the
224x224 test images of ``imagenet-val10`` reach EfficientNet-Lite1/2 scaled up to 240x240 and
260x260 whole (bilinear), and the short-side-256 images of ``sample1000`` reach them scaled to
274 and 297 and cropped. The cache is keyed by the size: each resolution is decoded once.

Calibration sets are drawn from a *pool* (:func:`load_calibration_pool`): the dataset's train
split, or for the ImageNet datasets one of the folders under ``imagenet-calib/``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("train", "test")
DATASETS = ("cifar10", "cifar10-jpeg", "imagenet-val10", "imagenet-sample1000", "fashion-mnist")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


# Images per forward pass for evaluation and calibration: as many as fit this many pixels.
# A batch whose activations overflow the CPU's caches runs 2-8x slower (EfficientNet-Lite0 over
# 500 images at 224x224 took 28 s in batches of 500, 3-6 s in batches of 2-4; ResNet-20 over
# 10 000 CIFAR images 7.0 s in batches of 500, 3.0 s in batches of 100).
# 2**17 pixels keeps 128 CIFAR images per batch, the batch every stored CIFAR trial was calibrated with.
PIXELS_PER_BATCH = 2 ** 17


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Images as the models take them: uint8 levels 0..255 become floats in [0, 1] (a new
    tensor); float images are returned as float32."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file renamed when complete: a reader never
    sees a partial file, and concurrent writers of the same content do not collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def inference_batch_size(images: torch.Tensor) -> int:
    """Images per forward pass for ``images`` ``[N, C, H, W]`` (at least 1)."""
    return max(1, PIXELS_PER_BATCH // (images.shape[-2] * images.shape[-1]))


# Readable names of the ten ImageNet classes in imagenet-val10 (the Imagenette classes).
IMAGENETTE_NAMES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                    "n03888257": "parachute"}


def class_label(name: str) -> str:
    """The label a report shows for a class: the name of an Imagenette wnid, else ``name``."""
    return IMAGENETTE_NAMES.get(name, name)


def readable_names(class_names: tuple[str, ...]) -> list[str]:
    """A readable label for every index of a label space: the 1000 ImageNet wnids (in the
    standard order) get torchvision's category names, other names :func:`class_label`."""
    if len(class_names) == 1000 and class_names[0] == "n01440764":
        from torchvision.models._meta import _IMAGENET_CATEGORIES
        return list(_IMAGENET_CATEGORIES)
    return [class_label(n) for n in class_names]


class DataError(ValueError):
    """Data that is missing or malformed; the message says where it was looked for."""


@dataclass(frozen=True)
class Split:
    """One split held in memory: images ``[N, C, H, W]`` uint8 and labels ``[N]`` int64."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]  # name of each label index (the full label space)
    name: str

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4
        assert len(self.images) == len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def present_classes(self) -> list[int]:
        return sorted(set(self.labels.tolist()))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]

    def float_images(self, idx: torch.Tensor | slice | None = None) -> torch.Tensor:
        return to_float(self.images if idx is None else self.images[idx])


def data_root() -> Path | None:
    root = os.environ.get("PTQ_DATA")
    return Path(root).expanduser() if root else None


def cache_dir() -> Path:
    return Path(os.environ.get("PTQ_CACHE", Path.home() / ".cache" / "ptqlib")).expanduser()


def _named_folder(relative: str, dataset: str) -> Path:
    root = data_root()
    if root is None:
        raise DataError(f"dataset {dataset!r} is read from $PTQ_DATA/{relative}, but PTQ_DATA is not set "
                        "(e.g. export PTQ_DATA=../shared/data)")
    path = root / relative
    if not path.is_dir():
        raise DataError(f"dataset {dataset!r}: folder {str(path)!r} does not exist")
    return path


def imagenet_wnids() -> list[str]:
    path = _named_folder(".", "imagenet") / "imagenet-classes.txt"
    if not path.is_file():
        raise DataError(f"ImageNet class index {str(path)!r} does not exist")
    return path.read_text().split()


def load_split(dataset: str, split: str, image_size: int | None = None) -> Split:
    """The ``split`` (``train`` or ``test``) of ``dataset``, from the cache when possible."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if dataset.startswith("folder:"):
        root = Path(dataset.removeprefix("folder:")).expanduser()
        if not (root / split).is_dir():
            raise DataError(f"dataset folder {str(root / split)!r} does not exist")
        # one label space for both splits: the class folders of either
        return _image_folder(root / split, dataset, split, image_size, class_names=tuple(_folder_classes(root)))
    if dataset == "cifar10-jpeg":
        return _image_folder(_named_folder(f"cifar10-jpeg/{split}", dataset), dataset, split, 32, CIFAR10_CLASSES)
    if dataset in IMAGENET_DATASETS:  # one test split; the train split is the dataset's default pool
        if split == "train":
            return _imagenet_pool(dataset, DEFAULT_POOLS[dataset], image_size)
        folder = _named_folder("imagenet-val10", dataset)
        return _image_folder(folder, dataset, split, image_size or 224, tuple(imagenet_wnids()))
    if dataset == "cifar10":
        return _cifar10_torchvision(split)
    if dataset == "fashion-mnist":
        return _fashion_mnist(split)
    raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)} or folder:/path")


# --- calibration pools ------------------------------------------------------------------------

# The ImageNet calibration pools, folders under $PTQ_DATA: 100 train images of each of the ten
# test classes (224x224), and one image of each of the 1000 classes (short side 256).
IMAGENET_POOLS = {"nette-train": "imagenet-calib/nette-train", "sample1000": "imagenet-calib/sample1000"}
IMAGENET_DATASETS = ("imagenet-val10", "imagenet-sample1000")
DEFAULT_POOLS = {"imagenet-val10": "nette-train", "imagenet-sample1000": "sample1000"}
SAMPLE1000_TOP_UP = "nette-train"  # the pool that fills draws larger than sample1000


def _folder_classes(root: Path) -> list[str]:
    """A folder dataset's label space: the class folders of either split."""
    return sorted({p.name for s in SPLITS if (root / s).is_dir() for p in (root / s).iterdir() if p.is_dir()})


def label_space_size(dataset: str) -> int:
    """How many classes a model on ``dataset`` chooses among, without loading its images: 1000
    for the ImageNet datasets (evaluated 1000-way, whatever classes their test split holds), 10
    for CIFAR-10 and Fashion-MNIST, the class folders of either split for ``folder:/path``."""
    if dataset.startswith("folder:"):
        root = Path(dataset.removeprefix("folder:")).expanduser()
        names = _folder_classes(root)
        if not names:
            raise DataError(f"dataset folder {str(root)!r} has no class folders under {' or '.join(SPLITS)}")
        return len(names)
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)} or folder:/path")
    return 1000 if dataset in IMAGENET_DATASETS else 10


def calibration_pools(dataset: str) -> tuple[str, ...]:
    """The pool names :func:`load_calibration_pool` accepts for ``dataset``: ``train`` (the
    dataset's train split) everywhere, and the ImageNet pools for the ImageNet datasets."""
    return ("train", *IMAGENET_POOLS) if dataset in IMAGENET_DATASETS else ("train",)


def default_pool(dataset: str) -> str:
    """The pool a trial on ``dataset`` draws from when none is named: ``sample1000`` (one image
    of every ImageNet class) for ImageNet test splits of fewer classes, as the study draws from
    all of ImageNet's classes; ``train`` elsewhere (for ``imagenet-sample1000`` that is the same
    images)."""
    return "sample1000" if dataset in IMAGENET_DATASETS and dataset != "imagenet-sample1000" else "train"


def pool_images(dataset: str, pool: str | None = None) -> str:
    """The image folder a pool name draws from: ``pool`` (None: :func:`default_pool`), with
    ``train`` of an ImageNet dataset resolved to that dataset's own pool (``nette-train`` for
    ``imagenet-val10``, ``sample1000`` for ``imagenet-sample1000``)."""
    pool = pool or default_pool(dataset)
    return DEFAULT_POOLS.get(dataset, pool) if pool == "train" else pool


def load_calibration_pool(dataset: str, pool: str = "train", image_size: int | None = None,
                          size: int | None = None) -> Split:
    """The images calibration sets for ``dataset`` are drawn from, at ``image_size``.

    ``pool`` is one of :func:`calibration_pools`:

    - ``train``: the dataset's train split, exactly ``load_split(dataset, "train", image_size)``
      (for ``imagenet-val10`` the ``nette-train`` folder, for ``imagenet-sample1000`` the
      ``sample1000`` one);
    - ``nette-train``: 1000 ImageNet train images, 100 of each of the ten classes of the test
      split (``imagenet-calib/nette-train``);
    - ``sample1000``: one ImageNet image of each of the 1000 classes
      (``imagenet-calib/sample1000``).

    Images are scaled and centre-cropped to ``image_size`` (default 224) as every split is
    (see the module's docstring), so a pool and the test split reach the model at one size.

    ``size`` is the number of images the draw will take. It changes only ``sample1000``: a
    draw larger than 1000 takes all its 1000 images and ``size - 1000`` images of
    ``nette-train``, spread evenly over its ten classes (the first image of each class in file
    order, then the second, ...); beyond 2000 images the pools are exhausted. Why this rule:

    - the extra images are real ImageNet train images, decoded like the rest, so the draw's
      activation statistics stay those of natural images; repeating or augmenting sample1000
      images would put duplicates into the set, which no other pool has;
    - ``nette-train`` is the only other ImageNet pool; its classes are the ten test classes,
      so the top-up tilts the set towards them by ``(size - 1000) / size`` (2.3 % of a
      1024-image draw), spread evenly so that no one test class is favoured;
    - the top-up is fixed by ``size`` alone, not drawn with the trial's seed: a pool is data,
      and draws of 1000 or more from it differ between seeds only in their order (as a draw of
      all 1000 ``nette-train`` images does).

    Draws of at most 1000 images get sample1000 alone (``size`` None: also sample1000 alone).
    The pool's every class has one image (two or more only for the ten topped-up classes), so
    class-biased and stratified draws of more than one image a class do not fit it.
    """
    pools = calibration_pools(dataset)
    if pool not in pools:
        raise DataError(f"unknown calibration pool {pool!r} for {dataset!r}; choose one of {', '.join(pools)}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise DataError(f"calibration size must be a positive integer, got {size!r}")
    if pool == "train" and dataset not in DEFAULT_POOLS:
        return load_split(dataset, "train", image_size)
    pool = pool_images(dataset, pool)
    split = _imagenet_pool(dataset, pool, image_size)
    if pool != "sample1000" or size is None or size <= len(split):
        return split
    extra = size - len(split)
    top_up = _imagenet_pool(dataset, SAMPLE1000_TOP_UP, image_size)
    if extra > len(top_up):
        raise DataError(f"a draw of {size} images needs more than the {len(split)} images of sample1000 and the "
                        f"{len(top_up)} of {SAMPLE1000_TOP_UP}; choose at most {len(split) + len(top_up)}")
    idx = _round_robin(top_up.labels)[:extra]
    return Split(torch.cat([split.images, top_up.images[idx]]), torch.cat([split.labels, top_up.labels[idx]]),
                 split.class_names, f"{dataset}/sample1000+{SAMPLE1000_TOP_UP}[{extra}]")


def _imagenet_pool(dataset: str, pool: str, image_size: int | None) -> Split:
    # the same arguments as load_split's, so that the train split and its pool share a cache entry
    split = "train" if DEFAULT_POOLS[dataset] == pool else pool
    folder = _named_folder(IMAGENET_POOLS[pool], dataset)
    return _image_folder(folder, dataset, split, image_size or 224, tuple(imagenet_wnids()))


def _round_robin(labels: torch.Tensor) -> torch.Tensor:
    """Indices of ``labels`` ordered by rank within their class, then by class: the first image
    of every class, then the second of every class that has one, ..."""
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        rank[members] = torch.arange(len(members))
    order = sorted(range(len(labels)), key=lambda i: (int(rank[i]), int(labels[i]), i))
    return torch.tensor(order, dtype=torch.int64)


# --- image folders ---------------------------------------------------------------------------

def _list_images(folder: Path) -> list[tuple[str, Path]]:
    items = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                items.append((class_dir.name, f))
    if not items:
        raise DataError(f"folder {str(folder)!r} holds no class folders with images")
    return items


def _image_folder(folder: Path, dataset: str, split: str, image_size: int | None,
                  class_names: tuple[str, ...] | None) -> Split:
    items = _list_images(folder)
    found = sorted({c for c, _ in items})
    names = class_names or tuple(found)
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DataError(f"{str(folder)!r}: class folders {unknown[:5]} are not classes of {dataset!r}")
    stats = [(c, f.name, f.stat().st_size, f.stat().st_mtime_ns) for c, f in items]
    key = hashlib.sha256(repr((str(folder.resolve()), image_size, names, stats)).encode()).hexdigest()[:16]
    cached = cache_dir() / "data" / f"{dataset.replace('/', '_').replace(':', '_')}-{split}-{key}.pt"
    if cached.exists():
        blob = torch.load(cached, weights_only=True)
        return Split(blob["images"], blob["labels"], names, f"{dataset}/{split}")
    index = {c: i for i, c in enumerate(names)}
    decoded = [_decode(f, image_size) for _, f in _progress(items, f"decoding {dataset}/{split}")]
    shapes = {tuple(t.shape) for t in decoded}
    if len(shapes) > 1:
        raise DataError(f"images in {str(folder)!r} differ in size ({sorted(shapes)[:3]}); give an image size")
    images = torch.stack(decoded)
    labels = torch.tensor([index[c] for c, _ in items], dtype=torch.int64)
    save_atomic({"images": images, "labels": labels}, cached)
    return Split(images, labels, names, f"{dataset}/{split}")


def _decode(path: Path, image_size: int | None) -> torch.Tensor:
    try:
        img = Image.open(path)
    except OSError as exc:
        raise DataError(f"image {str(path)!r} cannot be read ({exc})") from None
    with img:
        img = img.convert("RGB")
        if image_size is not None and img.size != (image_size, image_size):
            img = _resize_center_crop(img, image_size)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The usual evaluation transform: short side to ``size / 0.875``, then a centre crop."""
    short = round(size / 0.875) if min(img.size) > size else size
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _progress(items, desc):
    from ptqlib.progress import progress_bar
    return progress_bar(items, desc=desc, unit="img", leave=False, mininterval=1.0)


# --- torchvision CIFAR-10 and Fashion-MNIST ---------------------------------------------------

def _cifar10_torchvision(split: str) -> Split:
    root = (data_root() or cache_dir()) / "cifar10"
    import torchvision
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
    except Exception as exc:
        raise DataError(f"CIFAR-10 not found under {str(root)!r} and could not be downloaded ({exc})") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor(ds.targets, dtype=torch.int64), CIFAR10_CLASSES, f"cifar10/{split}")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_dirs() -> list[Path]:
    dirs = [data_root() / "fashion-mnist"] if data_root() else []
    return dirs + sorted(Path("/usr/share").glob("*fashion*mnist*"))


def _fashion_mnist(split: str) -> Split:
    prefix = "train" if split == "train" else "t10k"
    for folder in fashion_mnist_dirs():
        found = sorted(folder.rglob(f"{prefix}-images-idx3-ubyte*"))
        labels = sorted(folder.rglob(f"{prefix}-labels-idx1-ubyte*"))
        if found and labels:
            images = torch.from_numpy(_read_idx(found[0]).copy()).unsqueeze(1)
            return Split(images, torch.from_numpy(_read_idx(labels[0]).astype(np.int64)),
                         FASHION_CLASSES, f"fashion-mnist/{split}")
    looked = ", ".join(str(d) for d in fashion_mnist_dirs()) or "$PTQ_DATA/fashion-mnist"
    raise DataError(f"Fashion-MNIST not found (looked in {looked}); "
                    "install it with apt-get install dataset-fashion-mnist")
