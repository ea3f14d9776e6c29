"""Evaluation engines: how a calibrated quantized model is evaluated on a test set.

A trial's ``engine`` (part of its key; every trial stored before the setting is ``fake``):

- ``fake``: fake quantization in float32, the model as calibrated (every number of the study);
- ``int8``: the same model on oneDNN's int8 kernels, on exactly its grid
  (:mod:`ptqlib.quant.integer`, which says where the two can differ);
- ``fake-reordered``: fake quantization again, on channels-last tensors in batches of
  :data:`REORDERED_BATCH` (:class:`Reordered`): the same arithmetic summed in another float32
  order, a yardstick of how far predictions move on float32 rounding alone;
- ``fake-float64``: fake quantization in float64 on the weights' grid values (:class:`Float64`):
  exact arithmetic within float64 rounding, which both float32 fake quantization and the int8
  kernels approximate.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ptqlib.quant.integer import INTEGER_MODELS, NoIntegerPath, to_integer
from ptqlib.quant.qmodel import QUANT_LAYERS

ENGINES = ("fake", "int8", "fake-reordered", "fake-float64")
REORDERED_BATCH = 7


def check_engine(engine: str, model: str | None = None) -> str:
    """``engine`` if it is known and, for ``int8``, if ``model`` has an integer path."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "int8" and model is not None and model not in INTEGER_MODELS:
        raise NoIntegerPath(f"engine 'int8' has no integer path for model {model!r}; "
                            f"it runs {', '.join(INTEGER_MODELS)} (use engine 'fake')")
    return engine


class Reordered(nn.Module):
    """``model`` evaluated on channels-last inputs (its convolutions then sum in another order),
    meant for batches of :data:`REORDERED_BATCH` (other kernels, other blocking): the values of
    fake quantization up to float32 rounding, which is all that the int8 engine changes too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)


class Float64(nn.Module):
    """A copy of a fake-quantized ``model`` evaluated in float64: the weights are its quantized
    float32 values (learned rounding included; the weight quantizers then off, so that no level
    is recomputed in another precision), and every activation is rounded as ``round(y / s)`` on
    a float64 ``y``. Convolutions, residual sums and requantizations are then exact up to float64
    rounding (about 1e-16 of a value against float32's 6e-8), which neither float32 fake
    quantization (rounded partial sums) nor the int8 kernels (float32 requantization) are: which
    of the two predicts more often what exact arithmetic predicts says whose rounding their
    disagreement is. Several times slower than float32 (no fast float64 kernels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        exact = copy.deepcopy(model)
        with torch.no_grad():
            for layer in exact.modules():
                if isinstance(layer, QUANT_LAYERS) and layer.weight_quantizer.enabled:
                    layer.weight.copy_(layer.effective_weight())  # the grid values, in float32
                    layer.rounding, layer.weight_quantizer.enabled = None, False
        self.model = exact.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.double())


def evaluated(engine: str, qmodel: nn.Module) -> tuple[nn.Module, int | None]:
    """The module that evaluates ``qmodel`` under ``engine`` and its batch size (None: the
    default); ``int8`` converts the model (on the CPU)."""
    check_engine(engine)
    if engine == "int8":
        return to_integer(qmodel.cpu()), None
    if engine == "fake-reordered":
        return Reordered(qmodel), REORDERED_BATCH
    if engine == "fake-float64":
        return Float64(qmodel), None
    return qmodel, None
