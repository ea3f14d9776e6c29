"""Units: the quantized graph cut into layers or residual blocks with ``torch.fx``, and
running a unit on cached inputs."""
from __future__ import annotations

import inspect
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.split_module import split_module

from ptqlib.models import UNIT_BLOCKS
from ptqlib.quant.qmodel import QUANT_LAYERS, ActQuantizer, QuantizedModel


def _block_of(node: fx.Node) -> str | None:
    for path, kind in (node.meta.get("nn_module_stack") or {}).values():
        if isinstance(kind, type) and issubclass(kind, UNIT_BLOCKS):
            return path
    return None


GRANULARITIES = ("layer", "own", "block")


def split_units(qmodel: QuantizedModel, granularity: str) -> fx.GraphModule:
    """Cut the quantized graph into units: ``layer`` (each Conv/Linear with what follows it up
    to the next one), ``own`` (each Conv/Linear with the nodes that take its output alone, one
    after another: its activation and their quantizer; a node with another input, such as a
    shortcut or a residual add, starts a unit without parameters that runs up to the next layer)
    or ``block`` (each residual block; layers outside blocks alone). A unit ends where its block
    ends: what lies between blocks and layers (pooling, flattening) forms a unit without
    parameters, so that every block is reconstructed on its own output."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown unit granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    gm = qmodel.graph_module
    modules = dict(gm.named_modules())
    partition, current, last_key, unit_block, tail = {}, 0, None, None, None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        block = _block_of(node)
        is_layer = node.op == "call_module" and isinstance(modules[node.target], QUANT_LAYERS)
        key = node.target if is_layer else None
        if granularity == "block":
            key = block or key
        elif granularity == "own" and not is_layer and tail is not None:
            if node.all_input_nodes == [tail]:
                tail = node  # the chain of the layer's own output goes on
            else:
                key, tail = f"after {last_key}", None  # the layer's unit ends before this node
        if is_layer:
            tail = node
        if key is None and unit_block is not None and block != unit_block:
            key = f"after {unit_block}"  # left the block: a parameter-free unit
        if key is not None and key != last_key:
            if last_key is not None:
                current += 1
            last_key, unit_block = key, block
        partition[node] = current
    if "tuple_return" in inspect.signature(split_module).parameters:  # PyTorch 2.11 lacks it
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


class Const:
    """A unit input that is not per image (e.g. a normalisation buffer): never sliced."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


def take(inputs: list, idx) -> list[torch.Tensor]:
    return [t.value if isinstance(t, Const) else t[idx] for t in inputs]


def num_images(inputs: list) -> int:
    return next(len(t) for t in inputs if not isinstance(t, Const))


@torch.no_grad()
def run_unit(unit: nn.Module, inputs: list, batch: int = 128) -> list[torch.Tensor]:
    outs = [unit(*take(inputs, slice(i, i + batch))) for i in range(0, num_images(inputs), batch)]
    return [torch.cat(parts) for parts in zip(*outs)]


def in_order(unit: nn.Module, act_quantizers: list[ActQuantizer]) -> list[ActQuantizer]:
    """The unit's activation quantizers in execution order."""
    order = {id(unit.get_submodule(n.target)): i for i, n in enumerate(unit.graph.nodes) if n.op == "call_module"}
    return sorted(act_quantizers, key=lambda aq: order.get(id(aq), 0))


def to_channels_last(t):
    """4-D cached activations in channels-last memory order, where the CPU's convolutions run
    about twice as fast for the narrow early layers; other inputs as they are."""
    if isinstance(t, torch.Tensor) and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t
