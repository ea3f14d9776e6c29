"""Reconstruction of a whole model: passes over its units in order, each unit on the inputs of
the network quantized up to it."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ptqlib.data import to_float
from ptqlib.quant.calibration import calibrate_activations
from ptqlib.quant.qmodel import QUANT_LAYERS, QuantizedModel
from ptqlib.quant.recon.config import METHODS, ReconConfig
from ptqlib.quant.recon.optimize import UnitReport, reconstruct_unit, stages_for
from ptqlib.quant.recon.units import Const, run_unit, split_units


def reconstruct(qmodel: QuantizedModel, images: torch.Tensor, method: str, cfg: ReconConfig, seed: int = 0,
                progress: bool = True, labels: torch.Tensor | None = None) -> list[UnitReport]:
    """Reconstruct a calibrated quantized model unit by unit on ``images`` (uint8 or float);
    ``labels`` (``[N]``, -1 for noise images) are needed by ``class_weighting="dro"``. One report
    per unit and pass (BRECQ's reference variant makes two passes; the second's units are named
    ``acts ...``)."""
    if method not in METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}; choose one of {', '.join(METHODS)}")
    if cfg.weights_classes and (labels is None or len(labels) != len(images)):
        raise ValueError("class-weighted reconstruction needs the class label of every calibration image")
    torch.manual_seed(seed)  # QDrop's element-wise drops inside units use the global generator
    gen = torch.Generator().manual_seed(seed)
    split = split_units(qmodel, "layer" if method == "adaround" else "block")
    device = next(qmodel.parameters()).device
    data = to_float(images).to(device)
    if cfg.variant == "reference" and method == "qdrop":
        # QDrop's main_imagenet.py: every activation range from the float network on 256 images at once
        calibrate_activations(qmodel, data[:cfg.act_init_size], metric=cfg.act_init_metric)
    reports = []
    try:
        for stage in stages_for(method, cfg):
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
            fp_out = run_unit(unit, fp_in)
            qmodel.set_quant_state(weights=True, acts=stage.acts_on)
            if any(isinstance(m, QUANT_LAYERS) for m in unit.modules()):
                with torch.enable_grad():
                    reports.append(reconstruct_unit(node.target, unit, q_in, fp_in, fp_out, method=method, cfg=cfg,
                                                     stage=stage, metric=qmodel.config.metric, gen=gen,
                                                     progress=progress, labels=labels))
            q_env[node], fp_env[node] = run_unit(unit, q_in), fp_out
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
