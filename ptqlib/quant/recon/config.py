"""Reconstruction settings: methods, variants, :class:`ReconConfig` and the per-model defaults
(:func:`default_recon`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ptqlib.quant.range_estimators import check_act_search, check_metric

METHODS = ("adaround", "brecq", "qdrop")
VARIANTS = ("joint", "reference")
FP_WEIGHTS = ("kept", "current")
BATCH_DRAWS = ("randint", "randperm")
STEP_GRADS = ("plain", "lsq")
ACT_INITS = ("unit", "network")
FIRST_LAYERS = ("ours", "brecq")
LAST_INPUTS = ("ours", "brecq")
LAYER_UNITS = ("ours", "layer")
CLASS_WEIGHTINGS = (None, "dro")
REFERENCE_ITERS = 20_000
@dataclass(frozen=True)
class ReconConfig:
    """Settings of a reconstruction; the defaults are the reference code's (BRECQ/QDrop)."""

    iters: int = REFERENCE_ITERS  # per unit
    batch_size: int = 32
    lam: float = 0.01  # rounding regularisation weight (0.1 for MobileNetV2 in the reference)
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2  # share of the iterations without the regulariser
    lr_round: float = 1e-3
    lr_act: float = 4e-5
    keep_prob: float = 0.5  # QDrop only
    act_init_size: int = 256  # calibration images used to initialise the activation ranges
    class_weighting: str | None = None  # "dro": weight images by their class's current error
    dro_eta: float = 1.0  # sharpness of the class weights
    # "joint": rounding and activation steps learned together; "reference": as the reference code
    variant: str = "joint"
    # read by the reference variant only (see the module docstring)
    act_iters: int = 5_000  # BRECQ's second stage (activation steps), per unit
    lr_act_stage2: float = 4e-4  # its learning rate (main_imagenet.py --lr)
    act_p: float = 2.4  # its loss: sum over channels of |out - target|^p, averaged
    act_init_metric: str = "lp2.4"  # activation range search before the steps are learned
    # the weights of the float network (the targets; BRECQ's second-pass inputs): "kept", the
    # float weights kept aside, as the reference code does; or "current", the weights the layers
    # hold, which after BRECQ's first pass are the rounded ones. Only BRECQ's second pass can
    # tell them apart (a single pass computes each unit's float output before changing the unit)
    fp_weights: str = "current"
    # how a step's batch indices are drawn from the seeded generator: "randint" (with replacement,
    # QDrop's code and every stored trial) or "randperm" (the first batch_size of a random
    # permutation, no image twice in a batch: BRECQ's code)
    batch_draw: str = "randint"
    # the learned activation steps' gradient: "plain" (every stored trial) or "lsq", times
    # 1/sqrt(numel * qmax) of the quantized tensor (LSQ's factor, as QDrop's code); under Adam a
    # constant factor c only turns Adam's epsilon into epsilon / c
    step_grad: str = "plain"
    # where a pass that learns activation steps first sets their ranges: "unit" (each unit's on its
    # quantized inputs, just before the unit is learned; every stored trial) or "network" (all of
    # them once, before the pass, on the whole weight-quantized network: BRECQ's code)
    act_init: str = "unit"
    # the first quantized layer: "ours" (reconstructed, its output at the activation bit-width;
    # every stored trial) or "brecq" (output at 8 bits, not reconstructed: BRECQ's code)
    first_layer: str = "ours"
    # the classifier's input: "ours" (at 8 bits, as QDrop's code sets it; every stored trial) or
    # "brecq" (at the activation bit-width, as BRECQ's code leaves it where the classifier's input
    # is a residual block's output, ResNet and RegNet: its 8 bits go to the last block's last
    # convolution, whose own output quantizer the block bypasses; the reference preset only)
    last_input: str = "ours"
    # AdaRound's units: "ours" (each layer with what follows it up to the next layer: for a
    # residual block's last convolution with an identity shortcut, the add and the activation
    # after it, and with a projection shortcut the shortcut's convolution instead; every stored
    # trial) or "layer" (the layer's own output and the activations that take it alone, the
    # AdaRound paper's f_a(Wx) and BRECQ's code's layer reconstruction; the add and what follows
    # it up to the next layer form a unit without parameters)
    layer_unit: str = "ours"
    # what the reconstruction's activation range searches (the initial ones included) score their
    # candidates on: "histogram" (2048 bins, bin centres standing for the values; every stored
    # trial) or "tensor" (the raw values, as the reference code)
    act_search: str = "histogram"

    def for_method(self, method: str) -> "ReconConfig":
        """These settings with those ``method`` cannot tell apart at the value every earlier trial
        ran with, so that one trial key serves them:

        - ``fp_weights``: only BRECQ's second pass, in the reference variant, reads it;
        - ``step_grad``: AdaRound learns no activation steps;
        - ``act_init``: AdaRound sets no ranges before learning; QDrop's reference variant sets
          them once on the float network;
        - ``layer_unit``: only AdaRound works layer by layer."""
        reference = self.variant == "reference"
        same = {}
        if not (method == "brecq" and reference):
            same["fp_weights"] = "current"
        if method == "adaround":
            same["step_grad"] = "plain"
        else:
            same["layer_unit"] = "ours"
        if method == "adaround" or (method == "qdrop" and reference):
            same["act_init"] = "unit"
        return dataclasses.replace(self, **same)

    @property
    def weights_classes(self) -> bool:
        """Whether the loss weights images by their class (needs the calibration labels)."""
        return self.class_weighting == "dro"

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "act_init_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup!r}")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {self.keep_prob!r}")
        if self.lam < 0 or self.lr_round <= 0 or self.lr_act <= 0 or self.beta_end <= 0:
            raise ValueError("lam must be >= 0 and learning rates and beta positive")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"unknown class weighting {self.class_weighting!r}; choose none or dro")
        if self.dro_eta <= 0:
            raise ValueError(f"dro_eta must be positive, got {self.dro_eta!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown reconstruction variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if isinstance(self.act_iters, bool) or not isinstance(self.act_iters, int) or self.act_iters < 1:
            raise ValueError(f"act_iters must be a positive integer, got {self.act_iters!r}")
        if self.lr_act_stage2 <= 0 or self.act_p <= 0:
            raise ValueError("lr_act_stage2 and act_p must be positive")
        check_metric(self.act_init_metric)
        check_act_search(self.act_search, self.act_init_metric)
        if self.first_layer not in FIRST_LAYERS:
            raise ValueError(f"unknown first_layer {self.first_layer!r}; choose one of {', '.join(FIRST_LAYERS)}")
        if self.last_input not in LAST_INPUTS:
            raise ValueError(f"unknown last_input {self.last_input!r}; choose one of {', '.join(LAST_INPUTS)}")
        if self.layer_unit not in LAYER_UNITS:
            raise ValueError(f"unknown layer_unit {self.layer_unit!r}; choose one of {', '.join(LAYER_UNITS)}")
        if self.act_init not in ACT_INITS:
            raise ValueError(f"unknown act_init {self.act_init!r}; choose one of {', '.join(ACT_INITS)}")
        if self.step_grad not in STEP_GRADS:
            raise ValueError(f"unknown step_grad {self.step_grad!r}; choose one of {', '.join(STEP_GRADS)}")
        if self.batch_draw not in BATCH_DRAWS:
            raise ValueError(f"unknown batch_draw {self.batch_draw!r}; choose one of {', '.join(BATCH_DRAWS)}")
        if self.fp_weights not in FP_WEIGHTS:
            raise ValueError(f"unknown fp_weights {self.fp_weights!r}; choose one of {', '.join(FP_WEIGHTS)}")


# fields added after reconstructions were checkpointed, left out of a checkpoint's identity at
# these values (the value every earlier reconstruction ran with), so that those still resume
LATER_FIELDS = {"batch_draw": "randint", "step_grad": "plain", "act_init": "unit", "first_layer": "ours",
                "act_search": "histogram", "last_input": "ours", "layer_unit": "ours"}
REFERENCE_ONLY = ("act_iters", "lr_act_stage2", "act_p", "act_init_metric", "fp_weights")  # ReconConfig fields
REFERENCE_LAMBDAS = {"mobilenet_v2": 0.1, "mnasnet1_0": 0.2}  # QDrop's exp/w2a4/*/config.yaml; 0.01 otherwise


def default_recon(model: str, iters: int = REFERENCE_ITERS, variant: str = "joint",
                  method: str | None = None) -> ReconConfig:
    """The settings for ``model``. ``joint``: lambda 0.1 for MobileNetV2, 0.01 otherwise (the
    study's earlier trials). ``reference``: the reference configs' lambda (also 0.2 for MNASNet),
    and activation ranges initialised on 64 images for BRECQ (its main_imagenet.py), 256 for
    QDrop; BRECQ's second stage runs a quarter of the first stage's iterations (5000 for 20000, as
    the reference), so that fewer iterations shorten both stages alike, on the float network of the
    kept float weights (``fp_weights="kept"``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown reconstruction variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "joint":
        return ReconConfig(iters=iters, lam=0.1 if model == "mobilenet_v2" else 0.01)
    return ReconConfig(iters=iters, lam=REFERENCE_LAMBDAS.get(model, 0.01), variant="reference",
                       act_init_size=64 if method == "brecq" else 256, act_iters=max(1, iters // 4),
                       fp_weights="kept" if method == "brecq" else "current")
