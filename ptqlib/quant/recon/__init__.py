"""Reconstruction-based PTQ: AdaRound, BRECQ and QDrop, each in two variants.

Common to all: each weight is rounded down or up (AdaRound, Nagel et al. 2020),
``w_int = floor(w/s) + h(V) + z`` with the rectified sigmoid
``h(V) = clip(sigmoid(V)(zeta - gamma) + gamma, 0, 1)``; ``V`` (Adam, lr 1e-3) minimises the
unit's output error (squared error summed over channels, averaged over images and positions)
plus ``lambda * sum(1 - |2h - 1|^beta)``, ``beta`` annealed from 20 to 2 after a warm-up (20 %)
without the regulariser. At the end every ``h`` is 0 or 1. AdaRound's units are single layers
(``layer_unit``: with what follows each up to the next layer, or on the layer's own output as
the paper and BRECQ's code); BRECQ's and QDrop's residual blocks (the first and last layers
units of their own). Batches of 32 cached inputs per iteration.

``variant="joint"`` (every trial stored before the variant existed):

- **AdaRound**: rounding only; activations quantized with their grid-search ranges.
- **BRECQ** (Li et al. 2021): rounding and activation step sizes learned together (LSQ, Adam,
  lr 4e-5, cosine decay), ranges initialised per unit on its quantized inputs (``act_init_size``
  images, the trial's metric): QDrop without the drop.
- **QDrop** (Wei et al. 2022): the same, where each activation element is quantized only with
  probability ``keep_prob`` (0.5), at the unit's input and inside it.

``variant="reference"``, as the reference code runs each method (yhhhli/BRECQ
``main_imagenet.py``, ``quant/block_recon.py``, ``quant/layer_recon.py``; wimh966/QDrop
``qdrop/solver/main_imagenet.py``, ``qdrop/solver/recon.py``, ``exp/w2a4/*/config.yaml``):

- **AdaRound**: rounding only, with activations in float while it is learned (inputs from the
  weight-quantized network); activations are then quantized with their grid-search ranges.
- **BRECQ**: two passes. First the rounding of every unit with activations in float
  (``iters``); then the activation step sizes only (``act_iters``, a quarter of ``iters``: 5000 for
  20000 as in the reference; Adam lr
  ``lr_act_stage2`` = 4e-4 with cosine decay, loss ``|out - target|^2.4`` summed over channels),
  on the float network's unit inputs and outputs (the float weights kept aside, as the
  reference's ``org_weight``: ``fp_weights="kept"``; trials stored before that setting used the
  weights rounded by the first pass, ``"current"``), with the weights hard-rounded; each unit's
  ranges first set on its quantized inputs (64 images, ``lp2.4`` search).
- **QDrop**: as the joint variant (rounding and steps together, drops at the input and inside),
  except that every activation range is initialised once, before reconstruction, on the float
  network (256 images, ``lp2.4`` search).

Lambda is 0.01 but 0.1 for MobileNetV2 in both variants, and 0.2 for MNASNet in the reference
variant (QDrop's configs). The book's conventions page (``notebooks/recon_conventions.py``)
lists the conventions and where ours still differ.

Beyond the papers, ``class_weighting="dro"`` weights each calibration image's output error by
its class, giving more weight to the classes the unit currently reconstructs worst (in the
spirit of group DRO, Sagawa et al. 2020, arXiv:1911.08731): class weights are
``K * softmax(eta * L_c / mean(L))`` over running means ``L_c`` of the per-class error, with
mean 1 so that the balance with the rounding regulariser is kept. Noise images weigh 1.

The quantized graph is cut into units with ``torch.fx``'s ``split_module``. Each unit's inputs
(from the quantized network, already reconstructed up to it) and targets (the float network's
outputs) are computed once from the calibration set and reused for all iterations: no
full-network forward per iteration. A step runs on channels-last copies of them, with the
activation fake quantization as one autograd node (:func:`ptqlib.quant.quantizer.fake_quantize_learned`)
and what is constant within a unit (``floor(w/s) + z``, broadcast scales) computed once. The
iteration count is the one knob that trades time for quality; the reference uses 20 000 per
unit.
"""
from ptqlib.quant.recon.config import (ACT_INITS, BATCH_DRAWS, CLASS_WEIGHTINGS, FIRST_LAYERS, FP_WEIGHTS,
                                       LAST_INPUTS, LAYER_UNITS, METHODS, REFERENCE_ITERS, REFERENCE_LAMBDAS,
                                       REFERENCE_ONLY, STEP_GRADS, VARIANTS, ReconConfig, default_recon)
from ptqlib.quant.recon.optimize import ClassWeights, UnitReport
from ptqlib.quant.recon.passes import check_last_input, checkpoint_seconds, reconstruct
from ptqlib.quant.recon.rounding import AdaRound, beta_at
from ptqlib.quant.recon.units import split_units

__all__ = ["ACT_INITS", "AdaRound", "BATCH_DRAWS", "CLASS_WEIGHTINGS", "ClassWeights", "FIRST_LAYERS", "FP_WEIGHTS",
           "LAST_INPUTS", "LAYER_UNITS", "METHODS", "REFERENCE_ITERS", "REFERENCE_LAMBDAS", "REFERENCE_ONLY",
           "ReconConfig", "STEP_GRADS", "UnitReport", "VARIANTS", "beta_at", "check_last_input", "checkpoint_seconds",
           "default_recon", "reconstruct", "split_units"]
