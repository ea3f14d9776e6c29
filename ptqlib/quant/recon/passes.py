"""Reconstruction of a whole model: passes over its units in order, each unit on the inputs of
the network quantized up to it."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import operator
from pathlib import Path

import torch
import torch.fx as fx

from ptqlib.data import save_atomic, to_float
from ptqlib.quant.calibration import calibrate_activations
from ptqlib.quant.qmodel import (QUANT_LAYERS, ActQuantizer, QuantizedModel, is_activation, is_add, load_quant_state,
                                 quant_state)
from ptqlib.quant.range_estimators import check_act_search
from ptqlib.quant.recon.config import LATER_FIELDS, METHODS, ReconConfig
from ptqlib.quant.recon.optimize import UnitReport, reconstruct_unit, stages_for
from ptqlib.quant.recon.units import Const, run_unit, split_units


def reconstruct(qmodel: QuantizedModel, images: torch.Tensor, method: str, cfg: ReconConfig, seed: int = 0,
                progress: bool = True, labels: torch.Tensor | None = None,
                checkpoint: str | Path | None = None, keep_checkpoint: bool = False) -> list[UnitReport]:
    """Reconstruct a calibrated quantized model unit by unit on ``images`` (uint8 or float);
    ``labels`` (``[N]``, -1 for noise images) are needed by ``class_weighting="dro"``. One report
    per unit and pass (BRECQ's reference variant makes two passes; the second's units are named
    ``acts ...``).

    With ``checkpoint`` (a file path), the state after every reconstructed unit is saved there: the
    model's weights and quantizer parameters, the random generators and the reports so far. A
    reconstruction started again with the same model, images, settings and seed resumes after the
    last saved unit and ends where an uninterrupted one would have; the file is deleted when the
    reconstruction completes, unless ``keep_checkpoint``: then it holds the finished state, which a
    call started again restores without reconstructing any unit, until the caller deletes it (a
    trial keeps it until its result is stored)."""
    if method not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}; choose one of {', '.join(METHODS)}")
    if any(stage.init_acts and stage.init_metric is None for stage in stages_for(method, cfg)):
        check_act_search(cfg.act_search, qmodel.config.metric)  # those range searches use the model's metric
    check_last_input(qmodel, cfg)
    if cfg.weights_classes and (labels is None or len(labels) != len(images)):
        raise ValueError("class-weighted reconstruction needs the class label of every calibration image")
    torch.manual_seed(seed)  # QDrop's element-wise drops inside units use the global generator
    gen = torch.Generator().manual_seed(seed)
    split = split_units(qmodel, ("layer" if cfg.layer_unit == "ours" else "own") if method == "adaround" else "block")
    device = next(qmodel.parameters()).device
    data = to_float(images).to(device)
    if cfg.variant == "reference" and method == "qdrop":
        # QDrop's main_imagenet.py: every activation range from the float network on 256 images at once
        calibrate_activations(qmodel, data[:cfg.act_init_size], metric=cfg.act_init_metric, search=cfg.act_search)
    fixed = (_first_layer_as_brecq(qmodel, data[:cfg.act_init_size], cfg.act_init_metric, cfg.act_search),) \
        if cfg.first_layer == "brecq" else ()
    if cfg.last_input == "brecq":
        # the range search of the method's other initial ranges: QDrop's reference variant searches
        # on the float network with its own metric; the others search with the model's metric
        qdrop_reference = cfg.variant == "reference" and method == "qdrop"
        _last_input_as_brecq(qmodel, data[:cfg.act_init_size],
                             cfg.act_init_metric if qdrop_reference else qmodel.config.metric, cfg.act_search,
                             float_acts=qdrop_reference)
    # the float network's weights, kept aside before any unit changes them (see ReconConfig.fp_weights)
    kept = {id(layer): layer.weight.detach().clone() for _, layer in qmodel.quant_layers()} \
        if cfg.fp_weights == "kept" else None
    saver = _Checkpoint(checkpoint, method, cfg, seed, images, device) if checkpoint is not None else None
    resume = saver.restore(gen) if saver is not None and saver.exists() else None
    reports = [] if resume is None else resume.reports
    try:
        for i, stage in enumerate(stages_for(method, cfg)):
            if resume is not None and i < resume.stage:
                continue  # a finished pass: its effect is in the state restored below
            if resume is not None and i == resume.stage:
                load_quant_state(qmodel, resume.start)
                done, finished = set(resume.done), _unit_loader(qmodel, resume.state)
            else:
                done, finished = set(), None
                if stage.init_acts and cfg.act_init == "network":
                    init_network_ranges(qmodel, data[:cfg.act_init_size], stage.init_metric or qmodel.config.metric,
                                         cfg.act_search)
            if stage.init_acts and cfg.act_init == "network":
                stage = dataclasses.replace(stage, init_acts=False)  # set once, above, not per unit
            start = quant_state(qmodel) if saver is not None else None

            def save(name: str, new: list[UnitReport], i: int = i, done: set = done, start=start) -> None:
                done.add(name)
                saver.save(_Resume(i, start, quant_state(qmodel), sorted(done), reports + new), gen)

            reports = reports + _reconstruct_pass(qmodel, split, data, method, cfg, stage, gen, progress, labels,
                                                  skip=done, on_skip=finished, kept=kept, fixed=fixed,
                                                  after_unit=None if saver is None else save)
    finally:
        qmodel.set_quant_state(weights=True, acts=True)
    if saver is not None and not keep_checkpoint:
        saver.remove()
    return reports


@torch.no_grad()
def _set_range(qmodel: QuantizedModel, aq: ActQuantizer, images: torch.Tensor, metric: str, search: str) -> None:
    """``aq``'s range searched with ``metric`` (on ``search``, the histogram or the raw values) on its
    input in one forward pass of ``images`` through ``qmodel`` as it is switched now."""
    aq.start_observing(search)
    try:
        qmodel(images)
    finally:
        aq.observing = False
    aq.set_observed_range(metric)


def init_network_ranges(qmodel: QuantizedModel, images: torch.Tensor, metric: str, search: str = "histogram") -> None:
    """Every activation range set as BRECQ's code sets them before its second pass: on the whole
    network, weights quantized, in execution order, each quantizer on its input with the ones
    before it already quantized (the reference does it on the first call of one forward pass;
    here one forward pass per quantizer, the same values)."""
    qmodel.set_quant_state(weights=True, acts=False)
    for aq in qmodel.act_quantizers():
        _set_range(qmodel, aq, images, metric, search)
        aq.quantizer.enabled = True


def _first_layer_as_brecq(qmodel: QuantizedModel, images: torch.Tensor, metric: str,
                         search: str = "histogram") -> torch.nn.Module:
    """The first layer as BRECQ's code treats it (``set_first_last_layer_to_8bit``,
    ``ignore_reconstruction``): its output quantized at 8 bits, the range searched with ``metric``
    on ``images`` (the first quantizer's input depends on no other quantizer), and the layer
    itself left out of reconstruction. Returns that layer."""
    _, first = qmodel.quant_layers()[0]
    aq = qmodel.act_quantizers()[0]  # in execution order: the first layer's output
    aq.quantizer.set_bits(8)
    qmodel.set_quant_state(weights=True, acts=False)
    _set_range(qmodel, aq, images, metric, search)
    qmodel.set_quant_state(weights=True, acts=True)
    return first


def check_last_input(qmodel: QuantizedModel, cfg: ReconConfig) -> None:
    """Raise unless ``cfg.last_input`` applies to ``qmodel``. ``"brecq"`` needs the reference
    preset (whose classifier input is at 8 bits; BRECQ's code leaves it at the activation
    bit-width) and a classifier input that is a residual block's output (a residual add, maybe
    followed by an activation: ResNet, RegNet), the only place where BRECQ's 8 bits land on a
    quantizer its blocks bypass. Elsewhere its code gives that input 8 bits, as ``"ours"`` does."""
    if cfg.last_input != "brecq":
        return
    if qmodel.config.preset != "reference":
        raise ValueError(f"last_input='brecq' applies to the reference preset (classifier input at 8 bits), "
                         f"not preset {qmodel.config.preset!r}, whose classifier input is already at "
                         f"{qmodel.config.a_bits} bits; use last_input='ours'")
    node = _last_quantizer_input(qmodel)
    if node is None or not is_add(node):
        found = "has no activation quantizer" if node is None else f"quantizes the output of {node.name}"
        raise ValueError(f"last_input='brecq' applies where the classifier's input is a residual block's output "
                         f"(ResNet, RegNet): this model {found}, not a residual add; use last_input='ours'")


def _last_quantizer_input(qmodel: QuantizedModel) -> fx.Node | None:
    """The node the last activation quantizer quantizes, looking through an activation function
    (ReLU after a residual add), or None without activation quantizers."""
    gm = qmodel.graph_module
    mods = dict(gm.named_modules())
    quantizers = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(mods[n.target], ActQuantizer)]
    if not quantizers:
        return None
    node = quantizers[-1].args[0]
    while is_activation(node, mods):
        node = node.args[0]
    return node


def _last_input_as_brecq(qmodel: QuantizedModel, images: torch.Tensor, metric: str, search: str,
                         float_acts: bool) -> None:
    """The classifier's input as BRECQ's code leaves it where that input is a residual block's
    output (:func:`check_last_input`): at the activation bit-width. Its
    ``set_first_last_layer_to_8bit`` gives 8 bits to the output quantizer of the last block's
    last convolution, which the block bypasses (``disable_act_quant``): the block's own output
    quantizer, the classifier's input, keeps ``n_bits_a``. That quantizer's range is searched
    again at this width with ``metric`` on ``images``, through the network as the method sets its
    other ranges: with activations in float (``float_acts``; QDrop's reference variant, which
    sets every range on the float network) or quantized. A pass that later sets ranges before
    learning the steps (BRECQ's second pass, joint passes) sets this one again with the others."""
    aq = qmodel.act_quantizers()[-1]  # in execution order: the last, the classifier's input
    aq.quantizer.set_bits(qmodel.config.a_bits)
    qmodel.set_quant_state(weights=not float_acts, acts=not float_acts)
    aq.quantizer.enabled = False  # observed, not applied, until its range is set
    _set_range(qmodel, aq, images, metric, search)
    qmodel.set_quant_state(weights=True, acts=True)


@dataclasses.dataclass
class _Resume:
    """Where a reconstruction stopped: in pass ``stage``, which began in state ``start``, after
    the units ``done`` of that pass, in state ``state``."""

    stage: int
    start: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    done: list[str]
    reports: list[UnitReport]


def _unit_loader(qmodel: QuantizedModel, state: dict[str, torch.Tensor]):
    """``load(unit)``: set the weights and quantizers of ``unit``'s modules from ``state``."""
    names = {id(m): name for name, m in qmodel.named_modules()}

    def load(unit: torch.nn.Module) -> None:
        prefixes = tuple(names[id(m)] + "." for m in unit.modules() if id(m) in names and names[id(m)])
        current = quant_state(qmodel)
        load_quant_state(qmodel, current | {k: v for k, v in state.items() if k.startswith(prefixes)})

    return load


class _Checkpoint:
    """The file of a reconstruction's progress (see :func:`reconstruct`), tied to its method,
    settings, seed and images: a file left by another reconstruction is refused, not resumed."""

    def __init__(self, path: str | Path, method: str, cfg: ReconConfig, seed: int, images: torch.Tensor,
                 device: torch.device) -> None:
        self.path, self.device = Path(path), device
        digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        recon = {k: v for k, v in dataclasses.asdict(cfg).items() if LATER_FIELDS.get(k, object()) != v}
        self.ident = json.dumps({"method": method, "recon": recon, "seed": seed,
                                 "images": digest}, sort_keys=True)

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, resume: _Resume, gen: torch.Generator) -> None:
        save_atomic({"ident": self.ident, "stage": resume.stage, "start": resume.start, "state": resume.state,
                     "done": resume.done, "reports": [dataclasses.asdict(r) for r in resume.reports],
                     "gen": gen.get_state(), "rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
                    self.path)

    def restore(self, gen: torch.Generator) -> _Resume:
        """The saved progress; sets the random generators to where they were."""
        saved = torch.load(self.path, weights_only=True)
        if saved["ident"] != self.ident:
            raise ValueError(f"checkpoint {self.path} belongs to another reconstruction "
                             f"({saved['ident']}); remove it to start afresh")
        gen.set_state(saved["gen"])
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        return _Resume(saved["stage"], saved["start"], saved["state"], list(saved["done"]),
                       [UnitReport(**{**r, "resumed": True}) for r in saved["reports"]])

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def checkpoint_seconds(path: str | Path) -> float:
    """The seconds the units saved in the checkpoint ``path`` took when they were reconstructed
    (0 where there is no file): the part of a stopped reconstruction that resuming it does not
    run again."""
    path = Path(path)
    if not path.exists():
        return 0.0
    return float(sum(r["seconds"] for r in torch.load(path, weights_only=True)["reports"]))


def _reconstruct_pass(qmodel, split, data, method, cfg, stage, gen, progress, labels, skip=frozenset(),
                      on_skip=None, kept=None, after_unit=None, fixed=()) -> list[UnitReport]:
    """One pass over the units in order: each unit's inputs come from the network quantized up to
    it (already reconstructed in this pass), its targets from the float network. Units named in
    ``skip`` were reconstructed before a resumption: once their float outputs are computed,
    ``on_skip(unit)`` sets them to their reconstructed state. ``after_unit(name, reports)`` is
    called after each unit this call reconstructs, with the reports of the pass so far. ``kept``
    (by layer id): the float weights the float network runs with instead of the layers' own.
    A unit holding a layer of ``fixed`` is not reconstructed."""
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
            with _weights(unit, kept):
                fp_out = run_unit(unit, fp_in)
            qmodel.set_quant_state(weights=True, acts=stage.acts_on)
            learns = (node.target not in skip and any(isinstance(m, QUANT_LAYERS) for m in unit.modules())
                      and not any(m is f for m in unit.modules() for f in fixed))
            if node.target in skip and on_skip is not None:
                on_skip(unit)
            if learns:
                with torch.enable_grad():
                    reports.append(reconstruct_unit(node.target, unit, q_in, fp_in, fp_out, method=method, cfg=cfg,
                                                     stage=stage, metric=qmodel.config.metric, gen=gen,
                                                     progress=progress, labels=labels))
            q_env[node], fp_env[node] = run_unit(unit, q_in), fp_out
            if learns and after_unit is not None:
                after_unit(node.target, reports)
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


@contextlib.contextmanager
def _weights(unit: torch.nn.Module, kept: dict[int, torch.Tensor] | None):
    """``unit``'s layers with the ``kept`` weights (by layer id) for the duration; none: as they are."""
    layers = [m for m in unit.modules() if isinstance(m, QUANT_LAYERS)] if kept is not None else []
    own = [layer.weight.detach().clone() for layer in layers]
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(kept[id(layer)])
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, w in zip(layers, own):
                layer.weight.copy_(w)
