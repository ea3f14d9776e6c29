"""Grid-search calibration: set every quantizer's range from data with a range estimator.

Weights: per output channel, on the weight tensor (``config.weight_metric``, MSE by default).
Activations: one pass of the *float* model over the calibration images, every activation
quantization point feeding its observer batch by batch; then each observer turns its
histogram into a range with ``config.metric``. This is the observer flow of
``torch.ao.quantization`` and costs one FP forward pass over the calibration set (a search on
the raw values instead of histograms: one pass per group of quantizers whose values fit a memory
budget, after a one-image pass that reads their sizes).
"""
from __future__ import annotations

import torch

from ptqlib.data import inference_batch_size, to_float
from ptqlib.quant.qmodel import QuantizedModel
from ptqlib.quant.quantizer import qparams_from_range
from ptqlib.quant.range_estimators import weight_range


def _steps(items, desc: str | None, unit: str):
    """``items``, behind a progress bar named ``desc`` (none when ``desc`` is None)."""
    if desc is None:
        return items
    from ptqlib.progress import progress_bar
    return progress_bar(items, desc=desc, unit=unit, leave=False, mininterval=1.0)


@torch.no_grad()
def calibrate_weights(qmodel: QuantizedModel, desc: str | None = None) -> None:
    """Every layer's weight range, per output channel (``desc``: a progress bar's name)."""
    for _, layer in _steps(qmodel.quant_layers(), desc, "layer"):
        q = layer.weight_quantizer
        lo, hi = weight_range(layer.weight, q.spec, qmodel.config.weight_metric)
        q.set_qparams(*qparams_from_range(lo, hi, q.spec))


@torch.no_grad()  # not inference_mode: the qparams must stay usable by autograd later
def calibrate_activations(qmodel: QuantizedModel, images: torch.Tensor, batch_size: int | None = None,
                          metric: str | None = None, search: str = "histogram", desc: str | None = None) -> None:
    """``images``: ``[N, C, H, W]``, uint8 (0..255) or float in ``[0, 1]``. The observers'
    histograms depend on how the images are split into batches (a batch beyond the current
    range re-bins), so ``batch_size`` (None: ``inference_batch_size``) is part of the result.
    ``metric``: the range metric (None: the model's ``config.metric``); ``search``: what it scores
    the candidate ranges on (``ptqlib.quant.range_estimators.OBSERVERS``: the histogram, or the raw
    values); ``desc``: a progress bar's name (none without)."""
    if len(images) == 0:
        raise ValueError("the calibration set is empty")
    batch_size = batch_size or inference_batch_size(images)
    act_quantizers = qmodel.act_quantizers()
    qmodel.set_quant_state(weights=False, acts=False)
    device = next(qmodel.parameters()).device
    training = qmodel.training
    qmodel.eval()  # the passes below must leave the model as they found it (batch norm statistics)
    try:
        # the float model's activations (in eval mode) do not depend on which quantizers observe them,
        # so a raw-value search observes its quantizers a group at a time, one pass per group
        groups = [act_quantizers] if search == "histogram" else _within_budget(qmodel, act_quantizers, images, device)
        for k, group in enumerate(groups):
            part = f" {k + 1} of {len(groups)}" if len(groups) > 1 else ""
            for aq in group:
                aq.start_observing(search)  # statistics stay on the CPU whatever the device
            try:
                for start in _steps(range(0, len(images), batch_size), desc and f"{desc}{part}: observing", "batch"):
                    qmodel(to_float(images[start:start + batch_size]).to(device))
            finally:
                for aq in group:
                    aq.observing = False
            for aq in _steps(group, desc and f"{desc}{part}: searching", "range"):
                aq.set_observed_range(metric or qmodel.config.metric)
    finally:
        qmodel.train(training)


# float32 values a raw-value search holds during one pass (1 GiB); scoring one quantizer's candidates
# then needs a few times that quantizer's own values more (a float64 copy and temporaries)
TENSOR_VALUES_BUDGET = 2**28


def _within_budget(qmodel: QuantizedModel, act_quantizers: list, images: torch.Tensor, device,
                   budget: int | None = None) -> list[list]:
    """``act_quantizers`` in consecutive groups whose raw values over ``images`` (their sizes
    read from one image) stay within ``budget`` (None: ``TENSOR_VALUES_BUDGET``); a quantizer
    larger than the budget alone makes a group."""
    budget = TENSOR_VALUES_BUDGET if budget is None else budget
    sizes: dict[int, int] = {}  # values per image (a quantizer called twice in a pass counts twice)
    hooks = [aq.register_forward_pre_hook(lambda m, args: sizes.__setitem__(id(m), sizes.get(id(m), 0) + args[0].numel()))
             for aq in act_quantizers]
    try:
        qmodel(to_float(images[:1]).to(device))
    finally:
        for hook in hooks:
            hook.remove()
    groups, held = [[]], 0
    for aq in act_quantizers:
        size = sizes.get(id(aq), 0) * len(images)
        if groups[-1] and held + size > budget:
            groups.append([])
            held = 0
        groups[-1].append(aq)
        held += size
    return groups


def calibrate(qmodel: QuantizedModel, images: torch.Tensor) -> QuantizedModel:
    """Calibrate weights and activations, then switch all quantization on."""
    calibrate_weights(qmodel)
    calibrate_activations(qmodel, images)
    qmodel.set_quant_state(weights=True, acts=True)
    return qmodel
