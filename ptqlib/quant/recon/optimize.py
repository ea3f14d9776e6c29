"""One unit's reconstruction: what a pass learns (stages), the loss, class weights, and the
optimisation loop."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from ptqlib.quant.qmodel import QUANT_LAYERS, ActQuantizer, keep_mask
from ptqlib.quant.quantizer import flat_view
from ptqlib.quant.recon.config import ReconConfig
from ptqlib.quant.recon.rounding import AdaRound, beta_at
from ptqlib.quant.recon.units import Const, to_channels_last, in_order, num_images, run_unit, take


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
    resumed: bool = False  # restored from a checkpoint: reconstructed by an earlier, stopped run

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
    outs = run_unit(unit, inputs)
    return sum(_output_error(o, t).item() for o, t in zip(outs, targets))


@torch.no_grad()
def _init_act_ranges(unit: nn.Module, act_quantizers: list[ActQuantizer], q_in: list, size: int,
                     metric: str, search: str) -> None:
    """Set the unit's activation ranges on its quantized inputs, in execution order, each with
    everything before it quantized (the reference initialises each block this way)."""
    sample = [t if isinstance(t, Const) else t[:size] for t in q_in]
    for aq in act_quantizers:
        aq.start_observing(search)
        aq.quantizer.enabled = False
        try:
            run_unit(unit, sample)
        finally:
            aq.observing, aq.quantizer.enabled = False, True
        aq.set_observed_range(metric)


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


def stages_for(method: str, cfg: ReconConfig) -> list[_Stage]:
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


def reconstruct_unit(name: str, unit: nn.Module, q_in: list, fp_in: list, targets: list[torch.Tensor], *,
                      method: str, cfg: ReconConfig, stage: _Stage, metric: str, gen: torch.Generator,
                      progress: bool, labels: torch.Tensor | None) -> UnitReport:
    """Learn one unit's rounding and/or activation steps as ``stage`` says; ``q_in`` and ``fp_in``:
    its inputs from the quantized and the float network, ``targets`` the float network's outputs."""
    layers = [m for m in unit.modules() if isinstance(m, QUANT_LAYERS) and m.weight_quantizer.enabled]
    act_quantizers = in_order(unit, [m for m in unit.modules()
                                      if isinstance(m, ActQuantizer) and m.quantizer.enabled])
    if stage.init_acts:
        _init_act_ranges(unit, act_quantizers, q_in, cfg.act_init_size, stage.init_metric or metric, cfg.act_search)
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
                aq.quantizer.grad_scaling = cfg.step_grad == "lsq"
        for aq in act_quantizers:
            aq.keep_prob = keep
        class_weights = ClassWeights(labels, cfg.dro_eta) if cfg.weights_classes else None
        if roundings or act_scales:  # else nothing to learn (e.g. BRECQ's second stage on the classifier)
            _optimize(unit, Learned(roundings, act_scales, keep, class_weights), UnitData(opt_in, fp_in, targets),
                      cfg, stage, gen, desc=f"{method} {stage.name}{name}", progress=progress)
    finally:
        for layer, r in zip(layers, roundings):
            r.hard = True
            with torch.no_grad():
                layer.weight.copy_(r())  # on the grid: re-quantizing is exact
            layer.rounding = None
        for aq in act_quantizers:
            aq.quantizer.freeze_scale()
            aq.quantizer.grad_scaling = False
            aq.keep_prob = 1.0
        for p in frozen:
            p.requires_grad_(True)
    seconds = time.perf_counter() - t0
    return UnitReport(stage.name + name, len(layers), grid_loss, _unit_error(unit, opt_in, targets),
                      stage.iters if roundings or act_scales else 0, seconds)


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


def _batch_error(out: list[torch.Tensor], targets: list[torch.Tensor], idx: torch.Tensor, p: float) -> torch.Tensor:
    """The step's reconstruction error of a batch: the unit's outputs against the targets of the
    images ``idx``, :func:`_step_error` for p = 2, else :func:`_output_error` with ``p``."""
    if p != 2.0:
        return sum(_output_error(o, t[idx], p) for o, t in zip(out, targets))
    return sum(_step_error(o, t[idx]) for o, t in zip(out, targets))


@dataclass(frozen=True)
class Learned:
    """What the optimisation of one unit learns, and how."""

    roundings: list[AdaRound]  # the layers' rounding (empty: weights stay as they are)
    act_scales: list[nn.Parameter]  # the activation step sizes (empty: ranges stay)
    keep: float  # QDrop's keep probability: each activation quantized only with it (1: always)
    class_weights: ClassWeights | None  # "dro" class weighting of the output error, or none


@dataclass(frozen=True)
class UnitData:
    """A unit's cached tensors, one list entry per unit input or output."""

    inputs: list  # what the unit is optimised on
    fp_inputs: list  # the float network's inputs, which QDrop mixes in
    targets: list[torch.Tensor]  # the float network's outputs


# How a step runs: "auto" (a CUDA graph on a GPU when no class weights are learned, else eager),
# "eager", or "static" (the graph's step on fixed buffers, run eagerly: what tests check on a CPU)
STEP_MODE = "auto"


def _step_mode(device: torch.device, class_weights: ClassWeights | None) -> str:
    if STEP_MODE != "auto":
        return STEP_MODE
    if device.type == "cuda" and class_weights is None and os.environ.get("PTQ_CUDA_GRAPHS", "1") != "0":
        return "graph"
    return "eager"


def _optimize(unit: nn.Module, learned: Learned, data: UnitData, cfg: ReconConfig, stage: _Stage,
              gen: torch.Generator, *, desc: str = "", progress: bool = False) -> None:
    """Learn ``learned`` for ``stage.iters`` iterations on random batches of ``data``."""
    from ptqlib.progress import progress_bar

    device = next(t for t in data.inputs if not isinstance(t, Const)).device
    mode = _step_mode(device, learned.class_weights)
    steps = (_EagerSteps(unit, learned, data, cfg, stage, gen) if mode == "eager" else
             _StaticSteps(unit, learned, data, cfg, stage, gen, graph=mode == "graph"))
    bar = progress_bar(range(stage.iters), desc=desc, leave=False, disable=not progress, mininterval=2.0)
    for step in bar:
        rec = steps(step)
        if progress and step % 200 == 0:  # reading the loss waits for the step (a GPU sync)
            bar.set_postfix(rec=f"{rec.item():.4g}", refresh=False)  # shown at the bar's next refresh


def batch_indices(n: int, size: int, how: str, gen: torch.Generator) -> torch.Tensor:
    """One step's ``size`` image indices out of ``n``: ``randint`` (with replacement) or
    ``randperm`` (the first ``size`` of a random permutation: no image twice, as BRECQ's code)."""
    if how == "randperm":
        return torch.randperm(n, generator=gen)[:size]
    return torch.randint(n, (size,), generator=gen)


class _EagerSteps:
    """The optimisation step as plain PyTorch code, one call per iteration."""

    def __init__(self, unit: nn.Module, learned: Learned, data: UnitData, cfg: ReconConfig, stage: _Stage,
                 gen: torch.Generator) -> None:
        self.unit, self.learned, self.cfg, self.stage, self.gen = unit, learned, cfg, stage, gen
        self.q_in, self.fp_in, self.targets = ([to_channels_last(t) for t in ts]
                                               for ts in (data.inputs, data.fp_inputs, data.targets))
        self.n = num_images(self.q_in)
        self.opt = torch.optim.Adam([r.logits for r in learned.roundings], lr=cfg.lr_round) if learned.roundings else None
        self.opt_act = torch.optim.Adam(learned.act_scales, lr=stage.lr_act) if learned.act_scales else None
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_act, T_max=stage.iters, eta_min=0)
                      if self.opt_act else None)

    def __call__(self, step: int) -> torch.Tensor:
        roundings, keep, class_weights = self.learned.roundings, self.learned.keep, self.learned.class_weights
        idx = batch_indices(self.n, self.cfg.batch_size, self.cfg.batch_draw, self.gen)
        x = take(self.q_in, idx)
        if keep < 1.0:  # QDrop: the unit's input is quantized only with probability keep_prob
            x = [q if isinstance(f, Const) else torch.lerp(f[idx], q, keep_mask(q, keep, self.gen))
                 for q, f in zip(x, self.fp_in)]
        out = self.unit(*x)
        if class_weights is None or self.stage.p != 2.0:  # class weights weigh squared errors only
            rec = _batch_error(out, self.targets, idx, self.stage.p)
        else:
            errors = sum(_image_errors(o, t[idx]) for o, t in zip(out, self.targets))  # [B]
            class_weights.update(idx, errors.detach())
            rec = (class_weights.batch_weights(idx).to(errors.device) * errors).mean()
        beta, reg_on = beta_at(step, self.cfg)
        loss = rec + self.cfg.lam * sum(r.regularizer(beta) for r in roundings) if reg_on and roundings else rec
        for o in (self.opt, self.opt_act):
            if o is not None:
                o.zero_grad(set_to_none=True)
        loss.backward()
        if self.opt is not None:
            self.opt.step()
        if self.opt_act is not None:
            self.opt_act.step()
            self.sched.step()
        return rec


class _StaticSteps:
    """The same step (without class weights) on fixed buffers, so that a GPU can capture it once
    as a CUDA graph and replay it: per iteration only the buffers change (the batch's indices,
    ``beta``, the regulariser's weight, the activation learning rate), written by device-side
    copies and fills that do not wait for the GPU. The batch indices are drawn up front from the
    same generator, which gives the eager step's sequence. What differs from the eager step:
    QDrop's masks at the unit's input are drawn on the unit's device from its default generator
    (as its drops inside the unit always are), not from the reconstruction's CPU generator; the
    regulariser is added with weight 0 during the warm-up instead of left out; ``beta`` and the
    learning rate are tensors; and on a GPU Adam runs its ``capturable`` form. Without QDrop the
    result is the eager step's (a test checks it on the CPU); a graph replays QDrop's drops with
    new random numbers each time (PyTorch's graph-safe generator).

    With ``graph=False`` the step runs eagerly on the buffers; with ``graph=True`` the first
    iterations run eagerly on a side stream (as PyTorch's whole-network capture asks), the next
    is captured and every later one replayed. If the capture fails the steps go on eagerly."""

    WARMUP = 3

    def __init__(self, unit: nn.Module, learned: Learned, data: UnitData, cfg: ReconConfig, stage: _Stage,
                 gen: torch.Generator, graph: bool = False) -> None:
        assert learned.class_weights is None, "class weights are updated on the CPU: eager steps only"
        self.unit, self.learned, self.cfg, self.stage = unit, learned, cfg, stage
        self.q_in, self.fp_in, self.targets = ([to_channels_last(t) for t in ts]
                                               for ts in (data.inputs, data.fp_inputs, data.targets))
        device = next(t for t in self.q_in if not isinstance(t, Const)).device
        n = num_images(self.q_in)
        if cfg.batch_draw == "randint":  # one draw: the same sequence as the eager steps' draws
            self.all_idx = torch.randint(n, (stage.iters, cfg.batch_size), generator=gen).to(device)
        else:
            self.all_idx = torch.stack([batch_indices(n, cfg.batch_size, cfg.batch_draw, gen)
                                        for _ in range(stage.iters)]).to(device)
        self.idx = torch.zeros(self.all_idx.shape[1], dtype=torch.long, device=device)  # randperm: min(n, batch)
        self.beta = torch.tensor(cfg.beta_start, device=device)
        self.reg_weight = torch.tensor(0.0, device=device)
        self.opt = (torch.optim.Adam([r.logits for r in learned.roundings], lr=cfg.lr_round, capturable=graph)
                    if learned.roundings else None)
        self.opt_act, self.lrs = None, None
        if learned.act_scales:
            self.lr = torch.tensor(stage.lr_act, device=device)
            self.opt_act = torch.optim.Adam(learned.act_scales, lr=self.lr, capturable=graph)
            self.lrs = _cosine_lrs(stage.lr_act, stage.iters)
        self.graph = torch.cuda.CUDAGraph() if graph else None
        self.captured = False
        self.rec: torch.Tensor | None = None

    def _fill(self, step: int) -> None:
        """Write iteration ``step``'s batch and schedules into the buffers."""
        self.idx.copy_(self.all_idx[step])
        beta, reg_on = beta_at(step, self.cfg)
        self.beta.fill_(beta)
        self.reg_weight.fill_(self.cfg.lam if reg_on else 0.0)
        if self.lrs is not None:
            self.lr.fill_(self.lrs[step])

    def _step(self) -> torch.Tensor:
        loss, rec = self._loss()
        loss.backward()
        for o in (self.opt, self.opt_act):
            if o is not None:
                o.step()
        return rec

    def _loss(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's loss and its reconstruction part, from the buffers."""
        x = take(self.q_in, self.idx)
        keep = self.learned.keep
        if keep < 1.0:  # QDrop: the unit's input is quantized only with probability keep_prob
            x = [q if isinstance(f, Const) else torch.lerp(f[self.idx], q, keep_mask(q, keep))
                 for q, f in zip(x, self.fp_in)]
        rec = _batch_error(self.unit(*x), self.targets, self.idx, self.stage.p)
        roundings = self.learned.roundings
        loss = rec + self.reg_weight * sum(r.regularizer(self.beta) for r in roundings) if roundings else rec
        return loss, rec

    def _zero_grad(self) -> None:
        for o in (self.opt, self.opt_act):
            if o is not None:
                o.zero_grad(set_to_none=True)

    def __call__(self, step: int) -> torch.Tensor:
        self._fill(step)
        if self.graph is None:
            self._zero_grad()
            self.rec = self._step()
        elif step < self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._zero_grad()
                self.rec = self._step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            if not self.captured:
                self._capture()
            if self.graph is not None:
                self.graph.replay()
        return self.rec

    def _capture(self) -> None:
        """Record one step (the buffers already hold this iteration's values); a failed capture
        leaves the remaining steps eager."""
        import warnings

        self.captured = True
        self._zero_grad()
        try:
            with torch.cuda.graph(self.graph):
                self.rec = self._step()
        except Exception as err:  # an operation that cannot be captured: keep going without the graph
            warnings.warn(f"CUDA graph capture failed ({err}); the reconstruction steps run eagerly", stacklevel=2)
            self.graph = None
            torch.cuda.synchronize()
            self._zero_grad()
            self.rec = self._step()


def _cosine_lrs(lr: float, iters: int) -> list[float]:
    """The learning rate of every iteration under ``CosineAnnealingLR(T_max=iters, eta_min=0)``,
    computed by the scheduler itself so that the values equal the eager step's."""
    import warnings

    param = nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([param], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters, eta_min=0)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the scheduler without optimising
        for _ in range(iters):
            lrs.append(opt.param_groups[0]["lr"])
            sched.step()
    return lrs
