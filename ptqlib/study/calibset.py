"""Seeded calibration sets: random draws with optional noise images and class bias.

The study's factors (``book/method.md``):

- **size**: ``size`` images drawn without replacement from a labelled pool (the train split);
- **noise**: a fraction of the drawn images replaced by generated noise images of the same
  shape (uniform random pixels, or Gaussian around mid-grey);
- **bias**: one class drawn with probability ``bias_p``, the others uniformly.

Besides the study's random draws, ``sampling="stratified"`` draws class-balanced sets (every
class of the pool gets ``size // classes`` images, the remainder goes to randomly chosen
classes): a candidate remedy for the worst class, not part of the original protocol.

The same :class:`CalibSpec` and seed give the same images, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ptqlib.data import Split

NOISE_KINDS = ("uniform", "gaussian")
SAMPLINGS = ("random", "stratified")
DEFAULT_BIAS_P = 0.5


@dataclass(frozen=True)
class CalibSpec:
    """How a calibration set is drawn. Fields that cannot matter are normalised to ``None``
    (``bias_p`` without a bias class, ``noise_kind`` without noise), so that equal draws have
    equal specs and equal hashes."""

    size: int = 256
    noise: float = 0.0  # fraction of images replaced by noise
    noise_kind: str | None = "uniform"
    bias_class: str | None = None  # class name drawn with probability bias_p
    bias_p: float | None = DEFAULT_BIAS_P
    sampling: str = "random"  # or "stratified": class-balanced
    pool: str = "train"  # the images drawn from: the dataset's train split, or another pool (ptqlib.data)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"calibration size must be a positive integer, got {self.size!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be a fraction in [0, 1], got {self.noise!r}")
        if self.noise > 0 and self.noise_images == 0:
            raise ValueError(f"noise {self.noise} of {self.size} calibration images is less than one image; "
                             f"use at least {1 / (2 * self.size):.4g}")
        if self.noise == 0:
            object.__setattr__(self, "noise_kind", None)
        elif self.noise_kind is None:
            object.__setattr__(self, "noise_kind", NOISE_KINDS[0])
        elif self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {self.noise_kind!r}; choose one of {', '.join(NOISE_KINDS)}")
        if self.bias_class is None:
            object.__setattr__(self, "bias_p", None)
        elif self.bias_p is None:
            object.__setattr__(self, "bias_p", DEFAULT_BIAS_P)
        elif not 0.0 <= self.bias_p <= 1.0:
            raise ValueError(f"bias probability must be in [0, 1], got {self.bias_p!r}")
        if not isinstance(self.pool, str) or not self.pool:
            raise ValueError(f"calibration pool must be a pool name, got {self.pool!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {', '.join(SAMPLINGS)}")
        if self.sampling == "stratified" and self.bias_class is not None:
            raise ValueError("stratified sampling draws every class equally; it cannot be biased towards "
                             f"{self.bias_class!r}")

    @property
    def noise_images(self) -> int:
        """Noise images in the set: ``noise * size`` rounded half up."""
        return int(self.noise * self.size + 0.5)


@dataclass(frozen=True)
class CalibSet:
    images: torch.Tensor  # [size, C, H, W] uint8
    labels: torch.Tensor  # [size] class of each image, -1 for noise images
    class_counts: dict[str, int]  # drawn real images per class
    noise_images: int


def draw_indices(pool: Split, spec: CalibSpec, gen: torch.Generator) -> torch.Tensor:
    """Pool indices of the drawn images (all distinct)."""
    if spec.size > len(pool):
        raise ValueError(f"calibration size {spec.size} is larger than the calibration pool "
                         f"({len(pool)} images); choose 1 to {len(pool)}")
    if spec.sampling == "stratified":
        return _draw_by_class(pool, _stratified_counts(pool, spec.size, gen), gen)
    if spec.bias_class is None:
        return torch.randperm(len(pool), generator=gen)[:spec.size]
    classes = pool.present_classes
    names = [pool.class_names[c] for c in classes]
    if spec.bias_class not in names:
        raise ValueError(f"bias class {spec.bias_class!r} is not in the calibration pool; "
                         f"choose one of {', '.join(names)}")
    target = classes[names.index(spec.bias_class)]
    others = [c for c in classes if c != target]
    # per drawn image: the bias class with probability p, else one of the others uniformly
    pick_target = torch.rand(spec.size, generator=gen) < spec.bias_p
    other_pick = torch.randint(max(len(others), 1), (spec.size,), generator=gen)
    other_classes = torch.tensor(others or [target])[other_pick]
    chosen = torch.where(pick_target, torch.tensor(target), other_classes)
    return _draw_by_class(pool, torch.bincount(chosen, minlength=pool.num_classes), gen)


def _stratified_counts(pool: Split, size: int, gen: torch.Generator) -> torch.Tensor:
    """``[num_classes]`` images per class: ``size // K`` for each of the pool's ``K`` classes, one
    more for ``size % K`` classes chosen at random."""
    classes = torch.tensor(pool.present_classes)
    counts = torch.zeros(pool.num_classes, dtype=torch.long)
    counts[classes] = size // len(classes)
    counts[classes[torch.randperm(len(classes), generator=gen)[:size % len(classes)]]] += 1
    return counts


def _draw_by_class(pool: Split, counts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``counts[c]`` distinct pool images of each class ``c``, in random order."""
    picked = []
    for c in pool.present_classes:
        members = torch.nonzero(pool.labels == c).flatten()
        n = int(counts[c])
        if n > len(members):
            raise ValueError(f"class {pool.class_names[c]!r} has {len(members)} pool images but the draw "
                             f"needs {n}; lower the size or the bias probability")
        picked.append(members[torch.randperm(len(members), generator=gen)[:n]])
    return torch.cat(picked)[torch.randperm(int(counts.sum()), generator=gen)]


def noise_images(n: int, shape: tuple[int, ...], kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    return (torch.randn((n, *shape), generator=gen) * 64 + 128).round().clamp(0, 255).to(torch.uint8)


def build_calibration_set(pool: Split, spec: CalibSpec, seed: int) -> CalibSet:
    gen = torch.Generator().manual_seed(seed)
    idx = draw_indices(pool, spec, gen)
    images = pool.images[idx].clone()
    n_noise = spec.noise_images
    keep = torch.ones(spec.size, dtype=torch.bool)
    if n_noise:
        where = torch.randperm(spec.size, generator=gen)[:n_noise]
        images[where] = noise_images(n_noise, tuple(images.shape[1:]), spec.noise_kind, gen)
        keep[where] = False
    labels = torch.where(keep, pool.labels[idx], -1)
    counts = torch.bincount(labels[keep], minlength=pool.num_classes)
    class_counts = {pool.class_names[c]: int(counts[c]) for c in pool.present_classes}
    return CalibSet(images, labels, class_counts, n_noise)
