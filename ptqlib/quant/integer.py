"""Integer evaluation: a calibrated :class:`~ptqlib.quant.qmodel.QuantizedModel` run on real int8
kernels, on exactly its quantization grid.

Backend. The convolutions run on oneDNN's int8 primitives through PyTorch's
``torch.ops.onednn.qconv_prepack`` / ``torch.ops.onednn.qconv2d_pointwise`` operators (the
kernels behind the x86 backend of PyTorch 2 export quantization; AVX-512 VNNI, or AMX-int8 on
a CPU that has it). They take plain ``uint8`` activations and ``int8`` weights together with *our*
scales and zero points, and fuse the requantization, a ReLU or a clip, and a residual
addition (oneDNN's ``sum`` post-op) into the convolution. The alternatives were weighed:
``torch.ao``'s eager/FX convert flows are deprecated and choose their own observers and
fusions (matching our grid would mean overriding them everywhere), and ``torchao``'s x86 path
(PT2E with ``X86InductorQuantizer``) reaches these same oneDNN operators, but only through
``torch.compile``, whose compilation costs far more than a whole grid trial. Building the model
directly from the operators keeps every scale and zero point ours and costs milliseconds.
FBGEMM (``torch.ops.quantized.conv2d``, the other engine of PyTorch's x86 backend) does take a
weight zero point per output channel, so 8-bit asymmetric weights would fit one kernel; measured
against exact integer arithmetic, its ordinary convolutions agree exactly on full-range uint8
activations, but its depthwise kernels add pairs of ``uint8 x int8`` products in saturating
16-bit lanes and go wrong once activations exceed 127 (tens of levels off on a few to 25 % of
the outputs: ``results/bench/fbgemm-zero-points.py``), and it fuses no residual sum. It also needs the ``quint8`` tensor types that PyTorch has deprecated.

What runs where:

- Every ``QuantConv2d`` whose input is a quantized activation and whose output, possibly
  through ReLU / ReLU6 / Hardtanh, and possibly through a residual ``add`` of another quantized
  activation followed by an optional ReLU, ends in an activation quantizer, becomes one oneDNN
  int8 convolution: input ``uint8`` with the input quantizer's scale and zero point, weight
  ``int8`` per output channel, float bias (the folded BatchNorm), output requantized with the
  output quantizer's scale and zero point. The residual operand enters through the ``sum``
  post-op with its own scale and zero point, so the sum is rounded once, as in fake
  quantization (a separate quantized ``add`` would round the convolution's output first).
- The activation's bit-width: a ``b``-bit activation stays in ``[0, 2**b - 1]`` by an integer
  ``clamp_`` of the ``uint8`` output (exact: clamping commutes with the monotone rounding).
  ReLU6 and Hardtanh are oneDNN's clip post-op before the requantization.
- Weights: our per-channel asymmetric integers ``q - z`` (``q`` in ``[0, 2**b - 1]``) are held
  as symmetric ``int8`` with zero point 0 and our scale: the same real values. oneDNN's int8
  convolutions take no weight zero point, and ``q - z`` fits ``int8`` for ``b <= 7``. 8-bit
  weights span ``-255..255`` around their zero point; a layer whose levels do not fit ``int8``
  is split into ``int8`` parts that sum to them (``q - z = clamp(q - z, -128, 127) + rest``, two
  parts, three for a level of ±255). Each part runs as a oneDNN convolution with float32 output
  (its exact int32 accumulator times ``s_x * s_w``, the bias with the first part), the later
  parts added onto the first by oneDNN's ``sum`` post-op; the residual operand, if any, is added
  in float and the result requantized with the fake quantizer's own arithmetic. That is float32
  rounding of the same kind as the fused requantization's (a part's scaled accumulator is
  rounded once more before the sum), at the cost of one more convolution per extra part and a
  few float elementwise passes, for those layers only.
- CPUs without VNNI: there oneDNN's int8 convolutions (AVX2) add pairs of ``uint8 x int8``
  products in saturating 16-bit lanes, exact only while ``2 * (2**a - 1) * max|q - z|`` stays
  within 32,767 (measured on a randomly initialised ResNet-20 at W8A8: outputs up to 13 levels
  off; at W8A7, W7A7 and W4A4 one level at most, as on a VNNI CPU). Such a CPU refuses a layer past that bound
  (:func:`pairs_saturate`), and a trial its bit-widths before any work (:func:`check_widths`):
  weights of at most 6 bits run with any activation width, 8-bit weights with activations of at
  most 7 bits.
- The option-A shortcut (stride-2 slicing, zero channels) runs on the ``uint8`` tensor; the
  padded channels hold the zero point, which is the real value 0.
- Everything our fake-quantized model computes in float stays in float, with the same values:
  the input normalisation and the first convolution (the image is not quantized), and after
  the last activation quantizer the average pooling and the classifier (logits are not
  quantized). Their quantized inputs are dequantized exactly, ``(q - z) * s``.
- Any other layer falls back to float on dequantized inputs (again the fake-quant values).

Where integer and fake quantization can differ (see :func:`agreement`): only in the rounding
of a requantization. Fake quantization computes ``round(y * (1/s)) + z`` from a float32
convolution (rounded partial sums, in the order of its algorithm); oneDNN accumulates
``(q_x - z_x) * (q_w - z_w)`` exactly in int32, then scales by ``s_x * s_w / s_out`` and adds the
bias in its own float order. A value within a float32 rounding error of a boundary between two
levels (a tie ``k + 0.5``; both round half to even) can land one level apart: given the same
input levels, 1 to 10 output elements in 10^6 (ResNet-20 and EfficientNet-Lite0 layers, at 4 to
8 bits). Nothing else differs: grids, clamps, the residual sums (rounded once) and the float
parts are identical. How often a moved level changes a prediction depends on the network: on
ResNet-20 W4A4 none of the 10,000 CIFAR-10 test images changes; EfficientNet-Lite0 amplifies such
moves layer by layer (a level of a depthwise convolution's input, times a large BN-folded weight,
moves several levels of its output), and at W6A6 16 of its 500 imagenet-val10 images change. The
simulation has float noise of the same size: the same fake-quantized Lite0 run on channels-last
tensors in batches of 7 disagrees with itself on 23 of the 500. Which of the two is nearer the
exact result is measured against the model in float64
(:class:`ptqlib.quant.evaluation.Float64`), per cell and seed, on the book's integer page. A value
that repeats (a channel over a saturated, uniform region) repeats its near-tie too: in a
QDrop-reconstructed ResNet-20 one channel's output sits at 4.5000004 levels on many pixels; fake
quantization rounds it up, as exact arithmetic does, oneDNN's float32 requantization (1 ulp off)
down, and 1.5 % of the predictions change (results/bench/README.md).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ptqlib.metrics import per_class_accuracy
from ptqlib.models import CIFAR_DEPTHS, ShortcutA
from ptqlib.quant.qmodel import QUANT_LAYERS, ActQuantizer, QuantConv2d, QuantizedModel, is_add

# models whose every quantized layer between the first and the last activation quantizer has
# an integer path (verified by tests and by the agreement measured on the test sets)
INTEGER_MODELS = (*CIFAR_DEPTHS, "efficientnet_lite0")
INT16_MAX = 2**15 - 1


class NoIntegerPath(ValueError):
    """A model, layer or bit-width the int8 engine cannot run on exactly our grid."""


@dataclass(frozen=True)
class _QParams:
    scale: float
    zero_point: int
    qmax: int  # the bit-width's largest level (qmin is 0: activations are unsigned)


# --- recognising the fusable chains ---------------------------------------------------------

def _activation_kind(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, list[float]] | None:
    """oneDNN's name and scalars for an activation node, or None if it has no fused form."""
    if node.op == "call_module":
        m = modules[node.target]
        if type(m) is nn.ReLU:
            return "relu", []
        if type(m) is nn.ReLU6:
            return "hardtanh", [0.0, 6.0]
        if type(m) is nn.Hardtanh:
            return "hardtanh", [float(m.min_val), float(m.max_val)]
        return None
    if node.op == "call_function" and node.target in (F.relu, torch.relu) and not node.kwargs.get("inplace"):
        return ("relu", []) if len(node.args) == 1 else None
    if node.op == "call_function" and node.target is F.relu6 and len(node.args) == 1:
        return "hardtanh", [0.0, 6.0]
    if node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1:
        return "relu", []
    return None


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


@dataclass
class _Chain:
    conv: fx.Node
    unary: tuple[str, list[float]] | None  # between the convolution and the add (or the quantizer)
    add: fx.Node | None
    other: fx.Node | None  # the add's other operand
    post_relu: bool  # a ReLU after the add
    end: fx.Node  # the activation quantizer


def _chain(conv: fx.Node, modules: dict[str, nn.Module]) -> _Chain | None:
    """``conv -> [activation] -> [add(other) -> [relu]] -> act quantizer``, every intermediate
    node used once, or None."""
    n, unary, add, other, post_relu = conv, None, None, None, False
    u = _only_user(n)
    if u is not None and (kind := _activation_kind(u, modules)) is not None:
        n, unary, u = u, kind, _only_user(u)
    if u is not None and unary is None and is_add(u) and len(u.args) == 2 and not u.kwargs:
        other = u.args[1] if u.args[0] is n else u.args[0]
        if not isinstance(other, fx.Node) or other is n:
            return None
        n, add, u = u, u, _only_user(u)
        if u is not None and (kind := _activation_kind(u, modules)) is not None:
            if kind[0] != "relu":  # oneDNN fuses only a ReLU after the sum
                return None
            n, post_relu, u = u, True, _only_user(u)
    if u is None or u.op != "call_module" or not isinstance(modules[u.target], ActQuantizer):
        return None
    return _Chain(conv, unary, add, other, post_relu, u)


# --- the integer model ----------------------------------------------------------------------

class IntegerModel(nn.Module):
    """A calibrated quantized model on int8 kernels; built by :func:`to_integer`.

    ``forward`` takes what the quantized model takes and returns float logits. The float
    parts share their modules with the quantized model it was built from, whose integer weights
    were copied: changing that model afterwards needs a new :func:`to_integer`.
    """

    def __init__(self, graph_module: fx.GraphModule, steps: list, output: object, output_dequantizers: dict,
                 integer_layers: int, float_layers: list[str]) -> None:
        super().__init__()
        self.graph_module = graph_module  # the float parts' modules (and a parameter for the device)
        self._steps = steps
        self._output = output
        self._output_dequantizers = output_dequantizers
        self.integer_layers = integer_layers
        self.float_layers = float_layers  # quantized layers that run in float (the first and last)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[fx.Node, object] = {}
        for node, fn, inputs, free in self._steps:
            env[node] = fn(*[env[i] for i in inputs]) if node.op != "placeholder" else x
            for dead in free:  # values used for the last time: drop them early
                del env[dead]
        deq = self._output_dequantizers
        return fx.node.map_arg(self._output, lambda n: deq[n](env[n]) if n in deq else env[n])

    def extra_repr(self) -> str:
        return f"{self.integer_layers} int8 layers, float: {', '.join(self.float_layers) or 'none'}"


def _quantize_fn(qp: _QParams, activation: tuple[str, list[float]] | None = None, inplace: bool = False):
    """Float -> ``uint8`` with the fake quantizer's arithmetic (``x * (1/s)``, half to even);
    ``inplace``: the float input is overwritten on the way.

    ``activation`` (ReLU or a clip) applied before the quantization is folded into its clamp:
    rounding is monotone, so ``quantize(clamp(x, a, b)) = clamp(quantize(x), quantize(a),
    quantize(b))`` exactly."""
    inv = 1.0 / torch.tensor(qp.scale, dtype=torch.float32)
    lo, hi = 0, qp.qmax
    if activation is not None:
        bounds = activation[1] if activation[0] == "hardtanh" else [0.0, None]
        def level(v: float) -> int:  # the quantized level of v, by the same float32 arithmetic
            return int(torch.round(torch.tensor(v, dtype=torch.float32) * inv).item()) + qp.zero_point
        lo = min(max(lo, level(bounds[0])), qp.qmax)
        hi = hi if bounds[1] is None else max(min(hi, level(bounds[1])), lo)

    def quantize(x: torch.Tensor) -> torch.Tensor:
        q = (x.mul_(inv) if inplace else torch.mul(x, inv)).round_()
        if qp.zero_point:
            q.add_(qp.zero_point)
        q = q.clamp_(lo, hi).to(torch.uint8)
        return q.contiguous(memory_format=torch.channels_last) if q.dim() == 4 else q
    return quantize


def _dequantize_fn(qp: _QParams):
    scale = torch.tensor(qp.scale, dtype=torch.float32)

    def dequantize(q: torch.Tensor) -> torch.Tensor:
        return (q.float() - qp.zero_point).mul_(scale)  # exactly (q - z) * s, as fake quantization
    return dequantize


def _integer_weight(layer: QuantConv2d, name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The layer's fake-quantized weight as integers ``q - z`` and their float scales; the
    integers as ``int8`` parts that sum to them: one part when they fit ``int8``, else two or
    three (8-bit weights span ``-255..255``; each part is clamped to ``-128..127``)."""
    q = layer.weight_quantizer
    with torch.no_grad():
        w_hat = layer.effective_weight().detach().float().cpu()  # learned rounding included
        scale = q.scale.detach().float().cpu()
        v = torch.round(w_hat / scale.view(-1, 1, 1, 1))
        if not torch.equal(v * scale.view(-1, 1, 1, 1), w_hat):
            raise NoIntegerPath(f"layer {name}: its weights are not on its quantization grid")
    if v.abs().max().item() > 255:
        raise NoIntegerPath(f"layer {name}: weight levels beyond -255..255 (more than 8 bits)")
    parts, rest = [], v
    while not parts or rest.any():
        part = rest.clamp(-128, 127)
        parts.append(part.to(torch.int8))
        rest = rest - part
    return parts, scale


def pairs_saturate() -> bool:
    """Whether this CPU's oneDNN int8 convolutions add pairs of ``uint8 x int8`` products in
    saturating 16-bit lanes: without VNNI (AVX-512 VNNI, AVX-VNNI or AMX) its AVX2 kernels do
    (``vpmaddubsw``). Where PyTorch cannot tell, and on CPUs other than x86 (not measured), assume
    they do."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    found = capabilities() if capabilities is not None else {}
    return not any(found.get(name) for name in ("avx512_vnni", "avx_vnni", "amx_int8"))


def check_widths(w_bits: int, a_bits: int) -> None:
    """Refuse, before any work, bit-widths at which a layer's pairs of products can pass 16 bits
    on this CPU (:func:`pairs_saturate`; weight levels ``q - z`` reach ``2**w_bits - 1``, held in
    ``int8`` parts of at most 128)."""
    _check_pairs(2**a_bits - 1, min(2**w_bits - 1, 128),
                 f"engine 'int8' with {w_bits}-bit weights and {a_bits}-bit inputs to its convolutions")


def _check_pairs(qmax: int, largest: int, subject: str) -> None:
    """Refuse inputs up to ``qmax`` times weight levels up to ``largest`` where their pairs of
    products could saturate 16 bits on this CPU."""
    if pairs_saturate() and 2 * qmax * largest > INT16_MAX:
        raise NoIntegerPath(
            f"{subject} on this CPU (no VNNI): oneDNN adds pairs of uint8 x int8 products in saturating 16-bit "
            f"lanes, and inputs up to {qmax} times weight levels up to {largest} reach 2 x {qmax} x {largest} = "
            f"{2 * qmax * largest} > {INT16_MAX}; it stays exact with activations of at most 7 bits or weights of "
            f"at most 6 bits (or use engine 'fake', or a CPU with VNNI)")


def _conv_fn(layer: QuantConv2d, name: str, chain: _Chain, qin: _QParams, qout: _QParams,
             qother: _QParams | None, other_dies: bool):
    parts, w_scale = _integer_weight(layer, name)
    _check_pairs(qin.qmax, max(int(p.abs().max()) for p in parts), f"layer {name}")
    if isinstance(layer.padding, str):
        raise NoIntegerPath(f"layer {name}: padding {layer.padding!r} has no integer path (give it as numbers)")
    stride, padding, dilation = list(layer.stride), list(layer.padding), list(layer.dilation)
    groups = layer.groups
    w_zp = torch.zeros(len(w_scale), dtype=torch.int64)
    bias = None if layer.bias is None else layer.bias.detach().float().cpu().clone()
    if len(parts) > 1:
        return _split_conv_fn(parts, w_scale, bias, stride, padding, dilation, groups, chain, qin, qout, qother)
    packed = torch.ops.onednn.qconv_prepack(parts[0], w_scale, qin.scale, qin.zero_point, stride, padding, dilation,
                                            groups, None)
    clamp = qout.qmax < 255
    if chain.add is None:
        attr, scalars = chain.unary if chain.unary is not None else ("none", [])

        def conv(x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.onednn.qconv2d_pointwise(x, qin.scale, qin.zero_point, packed, w_scale, w_zp, bias, stride,
                                                   padding, dilation, groups, qout.scale, qout.zero_point, None,
                                                   attr, scalars, "")
            return y.clamp_(max=qout.qmax) if clamp else y
        return conv

    unary = "relu" if chain.post_relu else None

    def conv_add(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        # the sum post-op writes into its operand: a copy unless nobody reads it afterwards
        acc = other.contiguous(memory_format=torch.channels_last) if other_dies else \
            other.clone(memory_format=torch.channels_last)
        y = torch.ops.onednn.qconv2d_pointwise.binary(x, qin.scale, qin.zero_point, packed, w_scale, w_zp, acc,
                                                      bias, stride, padding, dilation, groups, qout.scale,
                                                      qout.zero_point, None, qother.scale, qother.zero_point,
                                                      "sum", 1.0, unary, [], "")
        return y.clamp_(max=qout.qmax) if clamp else y
    return conv_add


def _split_conv_fn(parts: list[torch.Tensor], w_scale: torch.Tensor, bias: torch.Tensor | None, stride: list,
                   padding: list, dilation: list, groups: int, chain: _Chain, qin: _QParams, qout: _QParams,
                   qother: _QParams | None):
    """A convolution whose integer weights need more than ``int8``: one oneDNN convolution per
    ``int8`` part, in float32 out (``acc * s_x * s_w``, the bias with the first part), the later
    parts added by oneDNN's ``sum`` post-op; then the residual operand, if any, in float, and the
    requantization with the fake quantizer's arithmetic (an activation folded into its clamp)."""
    w_zp = torch.zeros(len(w_scale), dtype=torch.int64)
    packed = [torch.ops.onednn.qconv_prepack(p, w_scale, qin.scale, qin.zero_point, stride, padding, dilation,
                                             groups, None) for p in parts]
    if chain.add is None:
        quantize = _quantize_fn(qout, chain.unary, inplace=True)
    else:
        quantize = _quantize_fn(qout, ("relu", []) if chain.post_relu else None, inplace=True)
        dequantize = _dequantize_fn(qother)

    def accumulate(x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.onednn.qconv2d_pointwise(x, qin.scale, qin.zero_point, packed[0], w_scale, w_zp, bias, stride,
                                               padding, dilation, groups, 1.0, 0, torch.float32, "none", [], "")
        for p in packed[1:]:
            y.add_(torch.ops.onednn.qconv2d_pointwise(x, qin.scale, qin.zero_point, p, w_scale, w_zp, None, stride,
                                                      padding, dilation, groups, 1.0, 0, torch.float32, "none", [],
                                                      ""))
        return y

    if chain.add is None:
        return lambda x: quantize(accumulate(x))
    return lambda x, other: quantize(accumulate(x).add_(dequantize(other)))


def _act_qparams(aq: ActQuantizer, name: str) -> _QParams:
    q = aq.quantizer
    if not (q.enabled and q.calibrated):
        raise NoIntegerPath(f"activation quantizer {name} ({aq.scope}) is not enabled and calibrated")
    if q.spec.per_channel or q.spec.qmin != 0 or q.spec.qmax > 255:
        raise NoIntegerPath(f"activation quantizer {name}: only unsigned per-tensor activations fit uint8")
    return _QParams(float(q.scale.detach().item()), int(q.zero_point.item()), q.spec.qmax)


def to_integer(qmodel: QuantizedModel) -> IntegerModel:
    """The integer model of a calibrated quantized model (grid search or reconstructed) with
    weight and activation quantization switched on; see the module docstring."""
    gm = qmodel.graph_module
    modules = dict(gm.named_modules())
    if next(gm.parameters()).device.type != "cpu":
        raise NoIntegerPath("the int8 engine runs on the CPU; move the quantized model there first")
    for name, layer in qmodel.quant_layers():
        if not (layer.weight_quantizer.enabled and layer.weight_quantizer.calibrated):
            raise NoIntegerPath(f"layer {name}: weight quantization is not enabled and calibrated")
    nodes = list(gm.graph.nodes)
    qparams: dict[fx.Node, _QParams] = {}  # nodes whose value is a uint8 tensor, with its grid
    fused: dict[fx.Node, _Chain] = {}  # activation quantizer node -> the chain it ends
    absorbed: set[fx.Node] = set()
    for node in nodes:  # which quantized layers have an integer path
        if node.op == "call_module" and isinstance(modules[node.target], ActQuantizer):
            qparams[node] = _act_qparams(modules[node.target], node.target)
    for node in nodes:
        if node.op == "call_module" and isinstance(modules[node.target], QuantConv2d):
            src = node.args[0]
            chain = _chain(node, modules)
            if chain is None or not _is_quantized(src, qparams, modules):
                continue
            if chain.other is not None and not _is_quantized(chain.other, qparams, modules):
                continue
            fused[chain.end] = chain
            absorbed.update(n for n in (chain.conv, chain.add) if n is not None)
            absorbed.update(_between(chain))
    folded: set[fx.Node] = set()  # float activations right before a quantizer: done by its clamp
    for node in nodes:
        if node in qparams and node not in fused:
            src = node.args[0]
            if (isinstance(src, fx.Node) and len(src.users) == 1 and _activation_kind(src, modules) is not None
                    and not _is_quantized(src.args[0], qparams, modules)):
                folded.add(src)
    absorbed |= folded
    order = {n: i for i, n in enumerate(nodes)}
    steps, float_layers, integer_layers = [], [], 0
    kinds: dict[fx.Node, _QParams | None] = {}  # the value each computed node holds: uint8 grid or float
    last_use: dict[fx.Node, int] = {}
    plan = []  # (node, step function or a fused convolution's settings, input nodes)
    for node in nodes:
        if node in absorbed or node.op == "output":
            continue
        if node in fused:
            chain = fused[node]
            src, other = chain.conv.args[0], chain.other
            layer = modules[chain.conv.target]
            qin = kinds[src]
            qother = kinds[other] if other is not None else None
            inputs = [src] if other is None else [src, other]
            plan.append((node, (layer, chain, qin, qparams[node], qother), inputs))
            kinds[node] = qparams[node]
            integer_layers += 1
            continue
        fn, inputs, kind = _plain_step(node, modules, kinds, qparams, folded)
        if node.op == "call_module" and isinstance(modules[node.target], QUANT_LAYERS):
            float_layers.append(node.target)
        plan.append((node, fn, inputs))
        kinds[node] = kind
    output = next(n for n in nodes if n.op == "output")
    for i, (node, _, inputs) in enumerate(plan):
        for inp in inputs:
            last_use[inp] = i
    out_nodes: list[fx.Node] = []
    fx.node.map_arg(output.args[0], out_nodes.append)
    for n in out_nodes:
        last_use[n] = len(plan)
    out_value = output.args[0]
    # identity and indexing pass their input's tensor or a view of it on: a tensor is free to
    # overwrite once every node sharing its storage has been used for the last time
    root: dict[fx.Node, fx.Node] = {}
    for node, _, _ in plan:
        aliases = node.op == "call_module" and isinstance(modules[node.target], nn.Identity) or \
            node.op == "call_function" and node.target is operator.getitem
        root[node] = root.get(node.args[0], node.args[0]) if aliases and kinds.get(node) is not None else node
    storage_last_use: dict[fx.Node, int] = {}
    for n, i in last_use.items():
        r = root.get(n, n)
        storage_last_use[r] = max(storage_last_use.get(r, -1), i)
    for i, (node, fn, inputs) in enumerate(plan):
        if isinstance(fn, tuple):  # a fused integer convolution
            layer, chain, qin, qout, qother = fn
            # the sum post-op overwrites its operand: it gets the tensor itself only if nobody reads it later
            other_dies = chain.other is not None and storage_last_use.get(root.get(chain.other, chain.other)) == i
            fn = _conv_fn(layer, chain.conv.target, chain, qin, qout, qother, other_dies)
        free = sorted({inp for inp in inputs if last_use.get(inp) == i}, key=order.get)
        steps.append((node, fn, inputs, free))
    # the output is float, as the fake model's (a quantized one is dequantized)
    out_deq = {n: _dequantize_fn(kinds[n]) for n in out_nodes if kinds.get(n) is not None}
    return IntegerModel(gm, steps, out_value, out_deq, integer_layers, float_layers)


def _between(chain: _Chain) -> list[fx.Node]:
    """The activation nodes of a chain (between the convolution and the quantizer)."""
    out, n = [], chain.conv
    while n is not chain.end:
        n = _only_user(n)
        if n is not chain.end and n is not chain.add:
            out.append(n)
    return out


def _is_quantized(node, qparams, modules) -> bool:
    """Whether ``node`` will hold a uint8 tensor: an activation quantizer, or data movement of one."""
    if not isinstance(node, fx.Node):
        return False
    if node in qparams:
        return True
    if _moves_data(node, modules):
        return _is_quantized(node.args[0], qparams, modules)
    return False


def _moves_data(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Nodes that only move values (exact on the integer grid): identity, the option-A shortcut,
    slicing, and zero padding."""
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.Identity, ShortcutA))
    if node.op == "call_function" and node.target is operator.getitem:
        return _static_index(node.args[1])
    if node.op == "call_function" and node.target is F.pad:
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
        return mode == "constant" and value in (None, 0, 0.0)
    return False


def _static_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(isinstance(i, (int, slice, type(Ellipsis))) and not (isinstance(i, slice) and any(
        isinstance(v, fx.Node) for v in (i.start, i.stop, i.step))) for i in items)


def _plain_step(node: fx.Node, modules, kinds, qparams, folded):
    """The step of a node outside any fused convolution: ``(fn, inputs, kind of its value)``."""
    inputs = list(node.all_input_nodes)
    if node.op == "placeholder":
        return None, [], None
    if node.op == "get_attr":
        value = _fetch_attr(modules[""], node.target)
        return (lambda: value), [], None
    if node.op == "call_module" and isinstance(modules[node.target], ActQuantizer):
        src = node.args[0]
        qp = qparams[node]
        if src in folded:  # a ReLU or clip folded into the quantization's clamp
            quantize = _quantize_fn(qp, _activation_kind(src, modules))
            return quantize, [src.args[0]], qp
        quantize = _quantize_fn(qp)
        if kinds.get(src) is not None:  # requantize a quantized value: through float, as fake quantization
            dequantize = _dequantize_fn(kinds[src])
            return (lambda q: quantize(dequantize(q))), [src], qp
        return quantize, [src], qp
    if inputs and _moves_data(node, modules) and kinds.get(node.args[0]) is not None:
        qp = kinds[node.args[0]]
        src = node.args[0]
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.Identity):
                return (lambda q: q), [src], qp
            pad = mod.pad  # ShortcutA: the padded channels hold the zero point, the real 0

            def shortcut(q: torch.Tensor) -> torch.Tensor:
                n, c, h, w = q.shape
                out = q.new_full((n, c + 2 * pad, (h + 1) // 2, (w + 1) // 2), qp.zero_point,
                                 memory_format=torch.channels_last)
                out[:, pad:pad + c].copy_(q[:, :, ::2, ::2])
                return out
            return shortcut, [src], qp
        if node.target is operator.getitem:
            idx = node.args[1]
            return (lambda q: q[idx]), [src], qp
        pad_arg = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
        return (lambda q: F.pad(q, pad_arg, value=qp.zero_point)), [src], qp
    # float: dequantize quantized inputs, run the node as the fake-quantized model does
    deq = {n: _dequantize_fn(kinds[n]) for n in inputs if kinds.get(n) is not None}

    def fetch(n, values):
        v = values[n]
        return deq[n](v) if n in deq else v

    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, QuantConv2d):  # float convolutions run channels-last, as the integer ones
            convert = lambda v: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v  # noqa: E731
        else:
            convert = lambda v: v  # noqa: E731

        def call(*values):
            env = dict(zip(inputs, values))
            args = fx.node.map_arg(node.args, lambda n: fetch(n, env))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: fetch(n, env))
            return mod(*[convert(a) if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
        return call, inputs, None
    if node.op in ("call_function", "call_method"):
        target = node.target

        def call(*values):
            env = dict(zip(inputs, values))
            args = fx.node.map_arg(node.args, lambda n: fetch(n, env))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: fetch(n, env))
            if node.op == "call_function":
                return target(*args, **kwargs)
            return getattr(args[0], target)(*args[1:], **kwargs)
        return call, inputs, None
    raise NoIntegerPath(f"graph node {node.name} ({node.op}) has no integer path")


def _fetch_attr(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# --- agreement --------------------------------------------------------------------------------

def agreement(fake_preds: torch.Tensor, int_preds: torch.Tensor, labels: torch.Tensor,
              classes: list[int]) -> dict:
    """How far the integer model's predictions are from fake quantization's on the same trial:
    the share of images predicted alike (0..1), the images that differ, and per class the
    accuracy of both and the difference (integer minus fake, in points)."""
    if fake_preds.shape != int_preds.shape or fake_preds.shape != labels.shape:
        raise ValueError(f"predictions and labels must have one shape, got {tuple(fake_preds.shape)}, "
                         f"{tuple(int_preds.shape)} and {tuple(labels.shape)}")
    same = fake_preds == int_preds
    fake_acc = per_class_accuracy(fake_preds, labels, classes)
    int_acc = per_class_accuracy(int_preds, labels, classes)
    return {"agreement": same.double().mean().item(), "differing_images": int((~same).sum()),
            "per_class": {c: {"fake": fake_acc[c], "int8": int_acc[c], "diff": int_acc[c] - fake_acc[c]}
                          for c in classes}}
