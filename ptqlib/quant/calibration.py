"""Grid-search calibration: set every quantizer's range from data with a range estimator.

Weights: per output channel, on the weight tensor (``config.weight_metric``, MSE by default).
Activations: one pass of the *float* model over the calibration images, every activation
quantization point feeding its observer batch by batch; then each observer turns its
histogram into a range with ``config.metric``. This is the observer flow of
``torch.ao.quantization`` and costs one FP forward pass over the calibration set.
"""
from __future__ import annotations

import torch

from ptqlib.data import inference_batch_size, to_float
from ptqlib.quant.qmodel import QuantizedModel
from ptqlib.quant.quantizer import qparams_from_range
from ptqlib.quant.range_estimators import weight_range


@torch.no_grad()
def calibrate_weights(qmodel: QuantizedModel) -> None:
    for _, layer in qmodel.quant_layers():
        q = layer.weight_quantizer
        lo, hi = weight_range(layer.weight, q.spec, qmodel.config.weight_metric)
        q.set_qparams(*qparams_from_range(lo, hi, q.spec))


@torch.no_grad()  # not inference_mode: the qparams must stay usable by autograd later
def calibrate_activations(qmodel: QuantizedModel, images: torch.Tensor, batch_size: int | None = None,
                          metric: str | None = None, search: str = "histogram") -> None:
    """``images``: ``[N, C, H, W]``, uint8 (0..255) or float in ``[0, 1]``. The observers'
    histograms depend on how the images are split into batches (a batch beyond the current
    range re-bins), so ``batch_size`` (None: ``inference_batch_size``) is part of the result.
    ``metric``: the range metric (None: the model's ``config.metric``); ``search``: what it scores
    the candidate ranges on (``ptqlib.quant.range_estimators.OBSERVERS``: the histogram, or the raw
    values)."""
    if len(images) == 0:
        raise ValueError("the calibration set is empty")
    batch_size = batch_size or inference_batch_size(images)
    act_quantizers = qmodel.act_quantizers()
    qmodel.set_quant_state(weights=False, acts=False)
    for aq in act_quantizers:
        aq.start_observing(search)  # statistics stay on the CPU whatever the device
    device = next(qmodel.parameters()).device
    try:
        for start in range(0, len(images), batch_size):
            qmodel(to_float(images[start:start + batch_size]).to(device))
    finally:
        for aq in act_quantizers:
            aq.observing = False
    for aq in act_quantizers:
        aq.set_observed_range(metric or qmodel.config.metric)


def calibrate(qmodel: QuantizedModel, images: torch.Tensor) -> QuantizedModel:
    """Calibrate weights and activations, then switch all quantization on."""
    calibrate_weights(qmodel)
    calibrate_activations(qmodel, images)
    qmodel.set_quant_state(weights=True, acts=True)
    return qmodel
