"""Quantized models: BatchNorm folding, quantized layers, activation quantizers, presets.

``quantize_model`` traces a float model with ``torch.fx`` (so any traceable CNN works: the
CIFAR ResNets, torchvision's ResNets, MobileNetV2, MNASNet, RegNetX, EfficientNet-Lite) and

1. folds every BatchNorm into the convolution before it (``w' = w * g / sqrt(v + eps)``,
   ``b' = (b - m) * g / sqrt(v + eps) + beta``, computed in float64);
2. replaces each Conv2d / Linear with a :class:`QuantConv2d` / :class:`QuantLinear` holding a
   per-output-channel weight quantizer;
3. places activation quantizers where the reference PTQ code (BRECQ, QDrop) does: at the end of
   each ``layer -> [activation]`` chain, or, when that chain feeds a residual add, after
   ``add -> [activation]``. The input image and the network's output logits are not quantized.

Presets (:class:`QuantConfig`): ``reference`` follows ``book/method.md`` (first and
last layer weights and the last layer's input at 8 bits); ``full`` puts every quantizer at the
target bits. Weight and activation quantization switch on and off for the whole model or any
module scope (a block such as ``net.layer1.0``, or one layer).
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ptqlib.quant.quantizer import MAX_BITS, MIN_BITS, FakeQuantizer, QuantSpec, qparams_from_range
from ptqlib.quant.range_estimators import METRICS, OBSERVERS, WEIGHT_METRICS, check_act_search, check_metric

PRESETS = ("reference", "full")
WEIGHT_SPEC = QuantSpec(bits=8, symmetric=False, per_channel=True, ch_axis=0)
ACT_SPEC = QuantSpec(bits=8, symmetric=False, per_channel=False)
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.SiLU)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.hardtanh, F.hardswish, F.silu)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides how a model is quantized by grid search (observer) calibration."""

    w_bits: int = 4
    a_bits: int = 4
    preset: str = "reference"
    metric: str = "mse"  # how activation ranges are chosen
    weight_metric: str = "mse"

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            if not (_is_int(bits) and MIN_BITS <= bits <= MAX_BITS):
                raise ValueError(f"{name} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        check_metric(self.metric, METRICS)
        check_metric(self.weight_metric, WEIGHT_METRICS, "weight metric")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --- quantized layers ------------------------------------------------------------------------

class _QuantWeightLayer(nn.Module):
    """Shared part of quantized Conv2d/Linear: the weight, its quantizer, and a cache of the
    fake-quantized weight used whenever no gradient is needed. During reconstruction a
    ``rounding`` module (AdaRound, see :mod:`ptqlib.quant.recon`) replaces round-to-nearest."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, w_bits: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.weight_quantizer = FakeQuantizer(WEIGHT_SPEC.with_bits(w_bits))
        self.rounding: nn.Module | None = None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def effective_weight(self) -> torch.Tensor:
        q = self.weight_quantizer
        if not q.enabled:
            return self.weight
        if self.rounding is not None:
            return self.rounding()
        if torch.is_grad_enabled():
            return q(self.weight)
        w = self.weight
        key = (w._version, w.data_ptr(), w.device, w.dtype, q.generation, q.scale.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, q(self.weight))
        return self._cache[1]


class QuantConv2d(_QuantWeightLayer):
    def __init__(self, conv: nn.Conv2d, w_bits: int) -> None:
        super().__init__(conv.weight, conv.bias, w_bits)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero-padded convolutions can be quantized, not {conv.padding_mode!r} padding")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class QuantLinear(_QuantWeightLayer):
    def __init__(self, linear: nn.Linear, w_bits: int) -> None:
        super().__init__(linear.weight, linear.bias, w_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class ActQuantizer(nn.Module):
    """An activation quantization point: observes during calibration, quantizes afterwards.

    A range search is :meth:`start_observing`, forward passes, then :meth:`set_observed_range`,
    which turns the observer's statistics into the quantizer's scale and zero point and drops
    them. ``keep_prob < 1`` (QDrop, Wei et al. 2022) keeps each element quantized only with that
    probability, and only while gradients are computed (reconstruction), never in evaluation.
    """

    def __init__(self, a_bits: int, scope: str) -> None:
        super().__init__()
        self.scope = scope  # qualified name of the module whose output this is
        self.observer: nn.Module | None = None  # between start_observing and set_observed_range
        self.quantizer = FakeQuantizer(ACT_SPEC.with_bits(a_bits))
        self.observing = False
        self.keep_prob = 1.0

    def start_observing(self, search: str = "histogram") -> None:
        """Record what passes through from now on, in a new observer of kind ``search``
        (:data:`ptqlib.quant.range_estimators.OBSERVERS`: a histogram, or the raw values)."""
        self.observer = OBSERVERS[check_act_search(search)]()
        self.observing = True

    def set_observed_range(self, metric: str) -> None:
        """Stop observing and set the quantizer's range, chosen by ``metric`` from what was
        observed; the observer is dropped (a raw-value observer holds every value it saw)."""
        self.observing = False
        q = self.quantizer
        q.set_qparams(*qparams_from_range(*self.observer.range(metric, q.spec), q.spec))
        self.observer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observer(x)
        if self.keep_prob < 1.0 and self.quantizer.enabled and torch.is_grad_enabled():
            return self.quantizer(x, keep_mask(x, self.keep_prob))
        return self.quantizer(x)


QUANT_LAYERS = (QuantConv2d, QuantLinear)


def keep_mask(like: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """QDrop's random mask for ``like``: 1.0 where ``torch.rand(like.shape) < p``, else 0.0, laid
    out like ``like``. Drawn in the logical (NCHW) order whatever the memory format, so that a seed
    gives the same mask for channels-last and contiguous tensors; compared into booleans, then
    laid out and converted in one copy. With a ``generator``, drawn on its device."""
    device = like.device if generator is None else generator.device
    keep = torch.rand(like.shape, dtype=like.dtype, device=device, generator=generator) < p
    return torch.empty_like(like).copy_(keep)  # one copy: layout and type


# --- BatchNorm folding -------------------------------------------------------------------------

@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d equal to ``bn(conv(x))`` for BatchNorm in eval mode."""
    folded = copy.deepcopy(conv)
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    gamma = bn.weight.double() if bn.affine else torch.ones_like(b)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(b)
    factor = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    folded.weight = nn.Parameter((w * factor.view(-1, 1, 1, 1)).float())
    folded.bias = nn.Parameter(((b - bn.running_mean.double()) * factor + beta).float())
    return folded


def _fold_all_bn(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules[src.target], nn.Conv2d)
                and len(src.users) == 1):
            continue
        _set_module(gm, src.target, fold_bn(modules[src.target], modules[node.target]))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()


def _set_module(root: nn.Module, qualified_name: str, module: nn.Module) -> None:
    parent_name, _, name = qualified_name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, name, module)


# --- placing activation quantizers -------------------------------------------------------------

def is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_", "clamp")


def is_add(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in ADD_FUNCTIONS
    return node.op == "call_method" and node.target in ("add", "add_")


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _chain_end(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """Follow ``node -> activation*``, and ``-> add -> activation*`` if that comes next."""
    def through_activations(n: fx.Node) -> fx.Node:
        while (u := _only_user(n)) is not None and is_activation(u, modules):
            n = u
        return n

    end = through_activations(node)
    if (u := _only_user(end)) is not None and is_add(u):
        end = through_activations(u)
    return end


def _scope(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] if isinstance(v, tuple) else v for v in stack.values()]
    return f"{paths[-1]}.{node.name}" if paths else node.name


def _insert_act_quantizers(gm: fx.GraphModule, a_bits: int) -> None:
    modules = dict(gm.named_modules())
    ends: list[fx.Node] = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], QUANT_LAYERS):
            end = _chain_end(node, modules)
            feeds_output = any(u.op == "output" for u in end.users)
            if end not in ends and not feeds_output:
                ends.append(end)
    for i, end in enumerate(ends):
        name = f"act_quant_{i}"
        gm.add_submodule(name, ActQuantizer(a_bits, _scope(end)))
        with gm.graph.inserting_after(end):
            q = gm.graph.call_module(name, (end,))
        q.meta["nn_module_stack"] = dict(end.meta.get("nn_module_stack") or {})  # it belongs where `end` does
        end.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)
    gm.graph.lint()
    gm.recompile()


# --- the quantized model ------------------------------------------------------------------------

class QuantizedModel(nn.Module):
    """A traced, BN-folded copy of a float model with weight and activation quantizers."""

    def __init__(self, graph_module: fx.GraphModule, config: QuantConfig) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)

    def quant_layers(self) -> list[tuple[str, _QuantWeightLayer]]:
        """Quantized Conv/Linear layers in execution order."""
        mods = dict(self.graph_module.named_modules())
        return [(n.target, mods[n.target]) for n in self.graph_module.graph.nodes
                if n.op == "call_module" and isinstance(mods[n.target], QUANT_LAYERS)]

    def act_quantizers(self) -> list[ActQuantizer]:
        """Activation quantizers in execution order."""
        mods = dict(self.graph_module.named_modules())
        return [mods[n.target] for n in self.graph_module.graph.nodes
                if n.op == "call_module" and isinstance(mods[n.target], ActQuantizer)]

    def set_quant_state(self, weights: bool | None = None, acts: bool | None = None, scope: str = "") -> None:
        """Switch weight and/or activation quantization for every layer whose qualified name
        starts with ``scope`` (``""``: the whole model; ``"net.layer1.0"``: one block)."""
        matched = 0
        if weights is not None:
            for name, layer in self.quant_layers():
                if _in_scope(name, scope):
                    layer.weight_quantizer.enabled = weights
                    matched += 1
        if acts is not None:
            for aq in self.act_quantizers():
                if _in_scope(aq.scope, scope):
                    aq.quantizer.enabled = acts
                    matched += 1
        if scope and matched == 0:
            raise ValueError(f"no quantized layer in scope {scope!r}")


_STATE_ENTRIES = ("weight", "bias", "scale", "zero_point")  # what calibration and reconstruction set


def quant_state(qmodel: QuantizedModel) -> dict[str, torch.Tensor]:
    """What calibration and reconstruction set in ``qmodel``, on the CPU: every quantized layer's
    weight and bias and every quantizer's scale and zero point, by qualified name (observers'
    histograms left out). With the same model and :class:`QuantConfig`, :func:`load_quant_state`
    makes another quantized copy compute the same, e.g. one reconstructed on another machine."""
    return {name: t.detach().cpu().clone() for name, t in qmodel.state_dict().items()
            if name.rsplit(".", 1)[-1] in _STATE_ENTRIES}


@torch.no_grad()
def load_quant_state(qmodel: QuantizedModel, state: dict[str, torch.Tensor]) -> None:
    """Set ``qmodel`` to ``state`` (from :func:`quant_state` of a model quantized alike); its
    quantizers count as calibrated, their on/off switches stay as they are."""
    own = {name: t for name, t in qmodel.state_dict().items() if name.rsplit(".", 1)[-1] in _STATE_ENTRIES}
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"quantized state does not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    modules = dict(qmodel.named_modules())
    for name, module in modules.items():
        if isinstance(module, FakeQuantizer):
            module.set_qparams(state[f"{name}.scale"], state[f"{name}.zero_point"])
    for name, t in qmodel.named_parameters():
        if name in state:
            t.copy_(state[name])
    for name, t in qmodel.named_buffers():
        if name in state and not isinstance(modules[name.rsplit(".", 1)[0]], FakeQuantizer):
            t.copy_(state[name])


def _in_scope(name: str, scope: str) -> bool:
    return not scope or name == scope or name.startswith(scope + ".")


def quantize_model(model: nn.Module, config: QuantConfig) -> QuantizedModel:
    """A quantized copy of ``model`` (left untouched), on the model's device; quantizers start
    disabled and uncalibrated: run :func:`ptqlib.quant.calibration.calibrate` next."""
    device = next(model.parameters()).device
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    _fold_all_bn(gm)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.Conv2d):
                _set_module(gm, node.target, QuantConv2d(mod, config.w_bits))
            elif isinstance(mod, nn.Linear):
                _set_module(gm, node.target, QuantLinear(mod, config.w_bits))
    gm.recompile()
    _insert_act_quantizers(gm, config.a_bits)
    qmodel = QuantizedModel(gm, config).eval()
    if config.preset == "reference":
        layers = qmodel.quant_layers()
        layers[0][1].weight_quantizer.set_bits(8)
        layers[-1][1].weight_quantizer.set_bits(8)
        act_quantizers = qmodel.act_quantizers()
        if act_quantizers:
            act_quantizers[-1].quantizer.set_bits(8)  # the last layer's input
    return qmodel.to(device)  # the new quantizers' buffers start on the CPU
