"""Reconstruction-based PTQ: AdaRound, BRECQ and QDrop, each in two variants.

Common to all: each weight is rounded down or up (AdaRound, Nagel et al. 2020),
``w_int = floor(w/s) + h(V) + z`` with the rectified sigmoid
``h(V) = clip(sigmoid(V)(zeta - gamma) + gamma, 0, 1)``; ``V`` (Adam, lr 1e-3) minimises the
unit's output error (squared error summed over channels, averaged over images and positions)
plus ``lambda * sum(1 - |2h - 1|^beta)``, ``beta`` annealed from 20 to 2 after a warm-up (20 %)
without the regulariser. At the end every ``h`` is 0 or 1. AdaRound's units are single layers;
BRECQ's and QDrop's residual blocks (the first and last layers units of their own). Batches of
32 cached inputs per iteration.

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
  on the float network's unit inputs and outputs, with the weights hard-rounded; each unit's
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
from __future__ import annotations

import inspect
import math
import operator
import time
from dataclasses import dataclass

import torch
import torch.fx as fx
import torchvision
from torch import nn
from torch.fx.passes.split_module import split_module

from ptqlib.quant.calibration import calibrate_activations
from ptqlib.models import BasicBlock, MBConv
from ptqlib.quant.qmodel import QUANT_LAYERS, ActQuantizer, QuantizedModel, keep_mask
from ptqlib.quant.quantizer import FakeQuantizer, _broadcast, flat_view, qparams_from_range
from ptqlib.quant.range_estimators import HistogramObserver, check_metric

METHODS = ("adaround", "brecq", "qdrop")
VARIANTS = ("joint", "reference")
CLASS_WEIGHTINGS = (None, "dro")
ZETA, GAMMA = 1.1, -0.1
REFERENCE_ITERS = 20_000
BLOCK_TYPES = (BasicBlock, MBConv, torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck,
               torchvision.models.mobilenetv2.InvertedResidual, torchvision.models.mnasnet._InvertedResidual,
               torchvision.models.regnet.ResBottleneckBlock)


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


class AdaRound(nn.Module):
    """Learned rounding of one weight tensor under a fixed per-channel quantizer.

    What stays constant while ``V`` is learned is computed once: ``floor(w/s) + z``, the
    broadcast scale and zero point. The module therefore belongs to the weight and quantizer
    it was made with."""

    def __init__(self, weight: torch.Tensor, quantizer: FakeQuantizer) -> None:
        super().__init__()
        spec = quantizer.spec
        scale = _broadcast(quantizer.scale, weight, 0).detach()
        zp = _broadcast(quantizer.zero_point, weight, 0).to(weight.dtype)
        scaled = weight.detach() * (1.0 / scale)
        floor = torch.floor(scaled)
        rest = scaled - floor  # in [0, 1): round-to-nearest is h = (rest >= 0.5)
        self.logits = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(V) = rest
        self.register_buffer("base", floor + zp)  # floor(w/s) + z: an integer, exact in float
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zp)
        self.qmin, self.qmax = spec.qmin, spec.qmax
        self.hard = False

    def h(self) -> torch.Tensor:
        if self.hard:
            return (self.logits >= 0).to(self.logits.dtype)
        return torch.clamp(torch.sigmoid(self.logits) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def forward(self) -> torch.Tensor:
        """The fake-quantized weight ``(clamp(floor(w/s) + h(V) + z, qmin, qmax) - z) * s``."""
        w_int = torch.clamp(self.base + self.h(), self.qmin, self.qmax)
        return (w_int - self.zero_point) * self.scale


REFERENCE_ONLY = ("act_iters", "lr_act_stage2", "act_p", "act_init_metric")  # ReconConfig fields
REFERENCE_LAMBDAS = {"mobilenet_v2": 0.1, "mnasnet1_0": 0.2}  # QDrop's exp/w2a4/*/config.yaml; 0.01 otherwise


def default_recon(model: str, iters: int = REFERENCE_ITERS, variant: str = "joint",
                  method: str | None = None) -> ReconConfig:
    """The settings for ``model``. ``joint``: lambda 0.1 for MobileNetV2, 0.01 otherwise (the
    study's earlier trials). ``reference``: the reference configs' lambda (also 0.2 for MNASNet),
    and activation ranges initialised on 64 images for BRECQ (its main_imagenet.py), 256 for
    QDrop; BRECQ's second stage runs a quarter of the first stage's iterations (5000 for 20000, as
    the reference), so that fewer iterations shorten both stages alike."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown reconstruction variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "joint":
        return ReconConfig(iters=iters, lam=0.1 if model == "mobilenet_v2" else 0.01)
    return ReconConfig(iters=iters, lam=REFERENCE_LAMBDAS.get(model, 0.01), variant="reference",
                       act_init_size=64 if method == "brecq" else 256, act_iters=max(1, iters // 4))


def beta_at(step: int, cfg: ReconConfig) -> tuple[float, bool]:
    """The annealed ``beta`` and whether the regulariser is on (after the warm-up)."""
    start = int(cfg.warmup * cfg.iters)
    if step < start:
        return cfg.beta_start, False
    progress = (step - start) / max(1, cfg.iters - start)
    return cfg.beta_end + (cfg.beta_start - cfg.beta_end) * max(0.0, 1 - progress), True


# --- cutting the network into units ----------------------------------------------------------

def _block_of(node: fx.Node) -> str | None:
    for path, kind in (node.meta.get("nn_module_stack") or {}).values():
        if isinstance(kind, type) and issubclass(kind, BLOCK_TYPES):
            return path
    return None


def split_units(qmodel: QuantizedModel, granularity: str) -> fx.GraphModule:
    """Cut the quantized graph into units: ``layer`` (each Conv/Linear with what follows it up
    to the next one) or ``block`` (each residual block; layers outside blocks alone). A unit
    ends where its block ends: what lies between blocks and layers (pooling, flattening) forms
    a unit without parameters, so that every block is reconstructed on its own output."""
    gm = qmodel.graph_module
    modules = dict(gm.named_modules())
    partition, current, last_key, unit_block = {}, 0, None, None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        block = _block_of(node)
        is_layer = node.op == "call_module" and isinstance(modules[node.target], QUANT_LAYERS)
        key = node.target if is_layer else None
        if granularity == "block":
            key = block or key
        if key is None and unit_block is not None and block != unit_block:
            key = f"after {unit_block}"  # left the block: a parameter-free unit
        if key is not None and key != last_key:
            if last_key is not None:
                current += 1
            last_key, unit_block = key, block
        partition[node] = current
    if "tuple_return" in inspect.signature(split_module).parameters:  # not in PyTorch 2.11 (seen on a GPU machine)
        return split_module(gm, gm, lambda n: partition[n], keep_original_order=True, tuple_return=True)
    return _tuple_outputs(split_module(gm, gm, lambda n: partition[n], keep_original_order=True))


def _tuple_outputs(split: fx.GraphModule) -> fx.GraphModule:
    """What ``tuple_return=True`` does on PyTorch that lacks it: every unit returns a tuple,
    read through ``getitem`` in the parent graph, also when it has a single output."""
    for node in list(split.graph.nodes):
        if node.op != "call_module" or any(u.target is operator.getitem for u in node.users):
            continue
        unit = split.get_submodule(node.target)
        out = next(n for n in unit.graph.nodes if n.op == "output")
        out.args = ((out.args[0],),)
        unit.recompile()
        with split.graph.inserting_after(node):
            item = split.graph.call_function(operator.getitem, (node, 0))
        node.replace_all_uses_with(item, delete_user_cb=lambda user: user is not item)
    split.recompile()
    return split


# --- running units on cached data --------------------------------------------------------------

class Const:
    """A unit input that is not per image (e.g. a normalisation buffer): never sliced."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


def _take(inputs: list, idx) -> list[torch.Tensor]:
    return [t.value if isinstance(t, Const) else t[idx] for t in inputs]


def _num_images(inputs: list) -> int:
    return next(len(t) for t in inputs if not isinstance(t, Const))


@torch.no_grad()
def _run(unit: nn.Module, inputs: list, batch: int = 128) -> list[torch.Tensor]:
    outs = [unit(*_take(inputs, slice(i, i + batch))) for i in range(0, _num_images(inputs), batch)]
    return [torch.cat(parts) for parts in zip(*outs)]


@dataclass(frozen=True)
class UnitReport:
    """One unit's reconstruction: its output error on the calibration set (see
    :func:`_output_error`) with round-to-nearest before, and after."""

    name: str
    layers: int
    grid_loss: float
    recon_loss: float
    iters: int
    seconds: float

    @property
    def iters_per_s(self) -> float:
        return self.iters / self.seconds if self.seconds else math.inf


def _output_error(out: torch.Tensor, target: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The reference's reconstruction loss (``lp_loss``): ``|out - target|^p`` summed over
    channels, averaged over images and positions (its scale sets the balance with the rounding
    regulariser); p = 2 for the rounding, 2.4 for BRECQ's activation stage."""
    diff = out - target
    return (diff.pow(2) if p == 2.0 else diff.abs().pow(p)).sum(1).mean()


def _image_errors(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]``: :func:`_output_error` of each image (their mean is the batch's error)."""
    return (out - target).pow(2).sum(1).reshape(len(out), -1).mean(1)


class ClassWeights:
    """Running per-class output error of a unit and the class weights it implies (DRO)."""

    def __init__(self, labels: torch.Tensor, eta: float, momentum: float = 0.9) -> None:
        self.labels = labels  # [N] class of each calibration image, -1 for noise images
        self.classes = labels[labels >= 0].unique()
        self.eta, self.momentum = eta, momentum
        self.error = torch.full((max(int(labels.max()) + 1, 1),), float("nan"))  # [num_labels]

    def update(self, idx: torch.Tensor, errors: torch.Tensor) -> None:
        labels, errors = self.labels[idx], errors.cpu()  # the running errors live on the CPU
        for c in labels[labels >= 0].unique():
            batch_mean = errors[labels == c].mean().item()
            old = self.error[c]
            self.error[c] = batch_mean if torch.isnan(old) else self.momentum * old + (1 - self.momentum) * batch_mean

    def weights(self) -> torch.Tensor:
        """``[num_labels]`` weights with mean 1 over the classes seen so far (1 for the others)."""
        w = torch.ones_like(self.error)
        seen = self.classes[~torch.isnan(self.error[self.classes])]
        if len(seen):
            err = self.error[seen]
            w[seen] = len(seen) * torch.softmax(self.eta * err / err.mean().clamp_min(1e-12), 0)
        return w

    def batch_weights(self, idx: torch.Tensor) -> torch.Tensor:
        labels = self.labels[idx]
        return torch.where(labels >= 0, self.weights()[labels.clamp_min(0)], torch.ones(len(idx)))


@torch.no_grad()
def _unit_error(unit: nn.Module, inputs: list, targets: list[torch.Tensor]) -> float:
    outs = _run(unit, inputs)
    return sum(_output_error(o, t).item() for o, t in zip(outs, targets))


@torch.no_grad()
def _init_act_ranges(unit: nn.Module, act_quantizers: list[ActQuantizer], q_in: list, size: int,
                     metric: str) -> None:
    """Set the unit's activation ranges on its quantized inputs, in execution order, each with
    everything before it quantized (the reference initialises each block this way)."""
    sample = [t if isinstance(t, Const) else t[:size] for t in q_in]
    for aq in act_quantizers:
        aq.observer = HistogramObserver()
        aq.observing, aq.quantizer.enabled = True, False
        try:
            _run(unit, sample)
        finally:
            aq.observing, aq.quantizer.enabled = False, True
        q = aq.quantizer
        lo, hi = aq.observer.range(metric, q.spec)
        q.set_qparams(*qparams_from_range(lo, hi, q.spec))


@dataclass(frozen=True)
class _Stage:
    """What one pass over the units learns, and on what."""

    rounding: bool  # learn the weights' rounding
    act_steps: bool  # learn the activation step sizes
    acts_on: bool  # activations quantized (else float) while the pass runs
    init_acts: bool  # set each unit's activation ranges on its quantized inputs first
    fp_inputs: bool  # optimise on the float network's unit inputs (else the quantized network's)
    iters: int
    lr_act: float
    p: float  # reconstruction loss: sum over channels of |out - target|^p, averaged
    init_metric: str | None = None  # None: the trial's metric
    name: str = ""


def _stages(method: str, cfg: ReconConfig) -> list[_Stage]:
    learn_acts = method != "adaround"
    if cfg.variant == "joint":
        return [_Stage(True, learn_acts, True, learn_acts, False, cfg.iters, cfg.lr_act, 2.0)]
    if method == "qdrop":  # ranges initialised once on the float network (see reconstruct)
        return [_Stage(True, True, True, False, False, cfg.iters, cfg.lr_act, 2.0)]
    weights = _Stage(True, False, False, False, False, cfg.iters, cfg.lr_act, 2.0)
    if method == "adaround":
        return [weights]
    return [weights, _Stage(False, True, True, True, True, cfg.act_iters, cfg.lr_act_stage2, cfg.act_p,
                            cfg.act_init_metric, name="acts ")]


def _reconstruct_unit(name: str, unit: nn.Module, q_in: list, fp_in: list, targets: list[torch.Tensor],
                      method: str, cfg: ReconConfig, stage: _Stage, metric: str, gen: torch.Generator,
                      progress: bool, labels: torch.Tensor | None) -> UnitReport:
    layers = [m for m in unit.modules() if isinstance(m, QUANT_LAYERS) and m.weight_quantizer.enabled]
    act_quantizers = _in_order(unit, [m for m in unit.modules()
                                      if isinstance(m, ActQuantizer) and m.quantizer.enabled])
    if stage.init_acts:
        _init_act_ranges(unit, act_quantizers, q_in, cfg.act_init_size, stage.init_metric or metric)
    opt_in = fp_in if stage.fp_inputs else q_in
    grid_loss = _unit_error(unit, opt_in, targets)
    frozen = [p for layer in layers for p in layer.parameters(recurse=False) if p.requires_grad]
    for p in frozen:  # only the rounding and the activation steps are learned
        p.requires_grad_(False)
    roundings, act_scales = [], []
    keep = cfg.keep_prob if method == "qdrop" else 1.0
    t0 = time.perf_counter()
    try:
        if stage.rounding:
            for layer in layers:
                layer.rounding = AdaRound(layer.weight, layer.weight_quantizer)
                roundings.append(layer.rounding)
        if stage.act_steps:
            act_scales = [aq.quantizer.learn_scale() for aq in act_quantizers]
        for aq in act_quantizers:
            aq.keep_prob = keep
        class_weights = ClassWeights(labels, cfg.dro_eta) if cfg.class_weighting == "dro" else None
        if roundings or act_scales:  # else nothing to learn (e.g. BRECQ's second stage on the classifier)
            _optimize(unit, roundings, act_scales, opt_in, fp_in, targets, keep, cfg, stage, gen, class_weights,
                      desc=f"{method} {stage.name}{name}", progress=progress)
    finally:
        for layer, r in zip(layers, roundings):
            r.hard = True
            with torch.no_grad():
                layer.weight.copy_(r())  # on the grid: re-quantizing is exact
            layer.rounding = None
        for aq in act_quantizers:
            aq.quantizer.freeze_scale()
            aq.keep_prob = 1.0
        for p in frozen:
            p.requires_grad_(True)
    seconds = time.perf_counter() - t0
    return UnitReport(stage.name + name, len(layers), grid_loss, _unit_error(unit, opt_in, targets),
                      stage.iters if roundings or act_scales else 0, seconds)


def _channels_last(t):
    """4-D cached activations in channels-last memory order, where the CPU's convolutions run
    about twice as fast for the narrow early layers; other inputs as they are."""
    if isinstance(t, torch.Tensor) and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


class _SquaredError(torch.autograd.Function):
    """``sum((out - target)^2) / n`` with one saved difference: two passes forward, one back,
    and the gradient in the memory format of ``out``."""

    @staticmethod
    def forward(ctx, out, target, n):  # type: ignore[override]
        diff = out - target
        ctx.save_for_backward(diff)
        ctx.n = n
        flat = flat_view(diff)
        return torch.dot(flat, flat) / n

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (diff,) = ctx.saved_tensors
        return diff * (grad * (2.0 / ctx.n)), None, None


def _step_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`_output_error` (squared error summed over channels, averaged over images and
    positions) for the optimisation step, as one autograd node."""
    if target.stride() != out.stride():
        target = torch.empty_like(out).copy_(target)
    return _SquaredError.apply(out, target, out.numel() // out.shape[1])


def _optimize(unit, roundings, act_scales, q_in, fp_in, targets, keep, cfg, stage, gen, class_weights, desc,
              progress) -> None:
    """``q_in``: the inputs optimised on; ``fp_in``: the float inputs QDrop mixes in."""
    from tqdm.auto import tqdm

    q_in, fp_in, targets = ([_channels_last(t) for t in ts] for ts in (q_in, fp_in, targets))
    opt = torch.optim.Adam([r.logits for r in roundings], lr=cfg.lr_round, foreach=True) if roundings else None
    opt_act = torch.optim.Adam(act_scales, lr=stage.lr_act, foreach=True) if act_scales else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_act, T_max=stage.iters, eta_min=0) if opt_act else None
    n = _num_images(q_in)
    bar = tqdm(range(stage.iters), desc=desc, leave=False, disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        x = _take(q_in, idx)
        if keep < 1.0:  # QDrop: the unit's input is quantized only with probability keep_prob
            x = [q if isinstance(f, Const) else torch.lerp(f[idx], q, keep_mask(q, keep, gen))
                 for q, f in zip(x, fp_in)]
        out = unit(*x)
        if stage.p != 2.0:
            rec = sum(_output_error(o, t[idx], stage.p) for o, t in zip(out, targets))
        elif class_weights is None:
            rec = sum(_step_error(o, t[idx]) for o, t in zip(out, targets))
        else:
            errors = sum(_image_errors(o, t[idx]) for o, t in zip(out, targets))  # [B]
            class_weights.update(idx, errors.detach())
            rec = (class_weights.batch_weights(idx).to(errors.device) * errors).mean()
        beta, reg_on = beta_at(step, cfg)
        loss = rec + cfg.lam * sum(r.regularizer(beta) for r in roundings) if reg_on and roundings else rec
        for o in (opt, opt_act):
            if o is not None:
                o.zero_grad(set_to_none=True)
        loss.backward()
        if opt is not None:
            opt.step()
        if opt_act is not None:
            opt_act.step()
            sched.step()
        if progress and step % 200 == 0:  # reading the loss waits for the step (a GPU sync)
            bar.set_postfix(rec=f"{rec.item():.4g}")


def _in_order(unit: nn.Module, act_quantizers: list[ActQuantizer]) -> list[ActQuantizer]:
    """The unit's activation quantizers in execution order."""
    order = {id(unit.get_submodule(n.target)): i for i, n in enumerate(unit.graph.nodes) if n.op == "call_module"}
    return sorted(act_quantizers, key=lambda aq: order.get(id(aq), 0))


def reconstruct(qmodel: QuantizedModel, images: torch.Tensor, method: str, cfg: ReconConfig, seed: int = 0,
                progress: bool = True, labels: torch.Tensor | None = None) -> list[UnitReport]:
    """Reconstruct a calibrated quantized model unit by unit on ``images`` (uint8 or float);
    ``labels`` (``[N]``, -1 for noise images) are needed by ``class_weighting="dro"``. One report
    per unit and pass (BRECQ's reference variant makes two passes; the second's units are named
    ``acts ...``)."""
    if method not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}; choose one of {', '.join(METHODS)}")
    if cfg.class_weighting == "dro" and (labels is None or len(labels) != len(images)):
        raise ValueError("class-weighted reconstruction needs the class label of every calibration image")
    torch.manual_seed(seed)  # QDrop's element-wise drops inside units use the global generator
    gen = torch.Generator().manual_seed(seed)
    split = split_units(qmodel, "layer" if method == "adaround" else "block")
    device = next(qmodel.parameters()).device
    data = (images.float().div(255) if images.dtype == torch.uint8 else images.float()).to(device)
    if cfg.variant == "reference" and method == "qdrop":
        # QDrop's main_imagenet.py: every activation range from the float network on 256 images at once
        calibrate_activations(qmodel, data[:cfg.act_init_size], metric=cfg.act_init_metric)
    reports = []
    try:
        for stage in _stages(method, cfg):
            reports += _reconstruct_pass(qmodel, split, data, method, cfg, stage, gen, progress, labels)
    finally:
        qmodel.set_quant_state(weights=True, acts=True)
    return reports


def _reconstruct_pass(qmodel, split, data, method, cfg, stage, gen, progress, labels) -> list[UnitReport]:
    """One pass over the units in order: each unit's inputs come from the network quantized up to
    it (already reconstructed in this pass), its targets from the float network."""
    remaining = {node: len(node.users) for node in split.graph.nodes}
    q_env: dict[fx.Node, object] = {}
    fp_env: dict[fx.Node, object] = {}
    reports = []
    for node in split.graph.nodes:
        if node.op == "placeholder":
            q_env[node] = fp_env[node] = data
        elif node.op == "get_attr":
            q_env[node] = fp_env[node] = Const(getattr(split, node.target))
        elif node.op == "call_function" and node.target is operator.getitem:
            q_env[node] = q_env[node.args[0]][node.args[1]]
            fp_env[node] = fp_env[node.args[0]][node.args[1]]
        elif node.op == "call_module":
            unit = split.get_submodule(node.target)
            q_in, fp_in = [q_env[a] for a in node.args], [fp_env[a] for a in node.args]
            qmodel.set_quant_state(weights=False, acts=False)
            fp_out = _run(unit, fp_in)
            qmodel.set_quant_state(weights=True, acts=stage.acts_on)
            if any(isinstance(m, QUANT_LAYERS) for m in unit.modules()):
                with torch.enable_grad():
                    reports.append(_reconstruct_unit(node.target, unit, q_in, fp_in, fp_out, method, cfg, stage,
                                                     qmodel.config.metric, gen, progress, labels))
            q_env[node], fp_env[node] = _run(unit, q_in), fp_out
        elif node.op == "output":
            break
        else:
            raise RuntimeError(f"unexpected node {node.op} {node.target} between units")
        for arg in node.all_input_nodes:  # free cached activations nobody needs any more
            remaining[arg] -= 1
            if remaining[arg] == 0:
                q_env.pop(arg, None)
                fp_env.pop(arg, None)
    return reports
