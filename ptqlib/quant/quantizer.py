"""Uniform affine fake quantization.

    x_q   = clamp(round(x / s) + z, q_min, q_max)
    x_hat = s * (x_q - z)

as in ``book/method.md``. The operation order (``x * (1/s)``, round half to even)
is the one of PyTorch's ``torch.fake_quantize_per_{tensor,channel}_affine`` kernels, so that on
the same scale and zero point both give bit-identical results (see tests/test_quantizer.py).
Gradients pass straight through the rounding (STE, Bengio et al. 2013) and are zero outside
the clamping range.

Without autograd, the same arithmetic runs in place on one new tensor
(:func:`fake_quantize_inference`), which on CPU is several times faster than PyTorch's fused
kernel. With autograd, per-tensor quantizers (activations during reconstruction, learned
scales) use one custom autograd node of a few whole-tensor passes
(:func:`fake_quantize_learned`); per-channel ones the composite STE form (:func:`fake_quantize`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized: bit-width, signedness, symmetry and granularity."""

    bits: int = 8
    symmetric: bool = False
    signed: bool = False  # only meaningful for symmetric quantization
    per_channel: bool = False
    ch_axis: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {self.bits!r}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if (self.symmetric and self.signed) else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if (self.symmetric and self.signed) else 2**self.bits - 1

    def with_bits(self, bits: int) -> "QuantSpec":
        return QuantSpec(bits, self.symmetric, self.signed, self.per_channel, self.ch_axis)


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point that map ``[lo, hi]`` onto ``[qmin, qmax]``.

    The range is first widened to contain 0 so that zero is exactly representable.
    """
    lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(hi, dtype=torch.float32), min=0.0)
    if spec.symmetric:
        bound = torch.maximum(-lo, hi)
        scale = (2 * bound / (spec.qmax - spec.qmin)) if spec.signed else bound / spec.qmax
        scale = torch.clamp(scale, min=torch.finfo(torch.float32).eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = torch.clamp((hi - lo) / (spec.qmax - spec.qmin), min=torch.finfo(torch.float32).eps)
        zero_point = torch.clamp(spec.qmin - torch.round(lo / scale), spec.qmin, spec.qmax).to(torch.int32)
    return scale, zero_point


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


def broadcast(t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Differentiable fake quantization (STE); gradients reach ``x`` and ``scale``."""
    if spec.per_channel:
        scale = broadcast(scale, x, spec.ch_axis)
        zero_point = broadcast(zero_point, x, spec.ch_axis)
    zero_point = zero_point.to(x.dtype)
    x_int = _RoundSTE.apply(x * (1.0 / scale)) + zero_point
    # clamp with the gradient of PyTorch's kernels: 1 inside [qmin, qmax] (bounds included), 0 outside
    inside = (x_int >= spec.qmin) & (x_int <= spec.qmax)
    x_int = torch.where(inside, x_int, torch.clamp(x_int, spec.qmin, spec.qmax).detach())
    return (x_int - zero_point) * scale


def flat_view(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor in its memory order (contiguous or channels-last): no copy.
    Two tensors of the same shape and strides give their elements in the same order."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)  # contiguous after the permutation: a view
    return t.reshape(-1)


class _LearnedFakeQuant(torch.autograd.Function):
    """Per-tensor fake quantization with STE gradients for the input and the scale (LSQ), and
    optionally QDrop's random keep mask, in few whole-tensor passes (see
    :func:`fake_quantize_learned`). The forward pass leaves the backward pass two tensors: the
    0/1 factor of the input's gradient and the per-element derivative of the output by the
    scale, so that the backward pass is one product and one dot product."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, keep, grad_factor=1.0):  # type: ignore[override]
        ctx.grad_factor = grad_factor
        t = torch.mul(x, 1.0 / scale)  # float32 division, as in PyTorch's kernels
        q = torch.round(t)
        # clamp(q + z, qmin, qmax) - z, computed as clamp(q, qmin - z, qmax - z): exact on integers;
        # on the CPU with number bounds (a clamp with tensor bounds is several times slower there),
        # except under torch.compile, where reading the zero point would break the graph
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            z = float(zero_point)
            qc = torch.clamp(q, qmin - z, qmax - z)
        else:
            zp = zero_point.to(x.dtype)
            qc = torch.clamp(q, qmin - zp, qmax - zp)
        inside = q.eq_(qc)  # 1.0 where nothing was clipped (bounds included), else 0.0
        out = qc * scale
        if keep is not None:  # QDrop: quantized where keep is 1, the input where it is 0
            out = torch.lerp(x, out, keep)  # exact selection for weights 0 and 1
        d_scale = None
        if ctx.needs_input_grad[1]:
            # d(out)/d(scale): round(x/s) - x/s inside the range, the clipped level (minus z)
            # outside, 0 where the input was kept as it is; written over t
            d_scale = torch.sub(qc, t.mul_(inside), out=t)
            if keep is not None:
                d_scale.mul_(keep)
        d_x = inside
        if keep is not None and ctx.needs_input_grad[0]:
            d_x = inside.sub_(1).mul_(keep).add_(1)  # d(out)/d(x): 1 - keep * (1 - inside)
        ctx.save_for_backward(d_x, d_scale, scale)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        d_x, d_scale, scale = ctx.saved_tensors
        if grad.stride() != d_x.stride():  # e.g. a contiguous gradient for a channels-last input
            grad = torch.empty_like(d_x).copy_(grad)
        grad_x = grad_scale = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * d_x
        if ctx.needs_input_grad[1]:
            grad_scale = torch.dot(flat_view(grad), flat_view(d_scale)).reshape(scale.shape)
            if ctx.grad_factor != 1.0:
                grad_scale = grad_scale * ctx.grad_factor
        return grad_x, grad_scale, None, None, None, None, None


def fake_quantize_learned(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec,
                          keep: torch.Tensor | None = None, grad_factor: float = 1.0) -> torch.Tensor:
    """:func:`fake_quantize` for a per-tensor quantizer, as one autograd node: the same values
    and, up to floating-point summation order, the same gradients for ``x`` and ``scale``.
    ``keep`` (0/1, the shape of ``x``): QDrop's mask, the output is quantized where it is 1 and
    ``x`` where it is 0. ``grad_factor`` multiplies the scale's gradient (LSQ's
    ``1 / sqrt(numel * qmax)``, Esser et al. 2020). Whole-tensor passes, no ``torch.where`` (slow
    on the CPU)."""
    assert not spec.per_channel, "per-tensor quantizers only"
    return _LearnedFakeQuant.apply(x, scale, zero_point, spec.qmin, spec.qmax, keep, grad_factor)


@torch.no_grad()
def fake_quantize_inference(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                            spec: QuantSpec) -> torch.Tensor:
    """The same values as :func:`fake_quantize`, without autograd: one new tensor and in-place
    arithmetic. On CPU this is several times faster than PyTorch's fused
    ``fake_quantize_per_tensor_affine`` kernel, which also writes a gradient mask."""
    if spec.per_channel:
        scale = broadcast(scale, x, spec.ch_axis)
        zero_point = broadcast(zero_point, x, spec.ch_axis)
    inv_scale = 1.0 / scale  # float32 division, as in PyTorch's kernels
    out = torch.mul(x, inv_scale).round_()
    # reading the zero point waits for a GPU (and cannot be captured in a CUDA graph): there the
    # general form, exact for a zero point of 0 too
    if spec.per_channel or x.device.type != "cpu" or zero_point.item() != 0:
        zp = zero_point.to(x.dtype)
        return out.add_(zp).clamp_(spec.qmin, spec.qmax).sub_(zp).mul_(scale)
    return out.clamp_(spec.qmin, spec.qmax).mul_(scale)


class FakeQuantizer(nn.Module):
    """Holds a tensor's quantization parameters (buffers) and applies them when enabled.

    The parameters are set in one place, :meth:`set_qparams`, from a range estimator.
    A quantizer that was never calibrated refuses to quantize rather than guessing.
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        shape = (0,) if spec.per_channel else ()
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self._enabled = False
        self.calibrated = False
        self.generation = 0  # bumped on every change, so cached quantized tensors can tell
        self.grad_scaling = False  # a learned scale's gradient times 1/sqrt(numel * qmax) (LSQ)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        self.generation += 1

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.scale = scale.detach().clone().float().to(self.scale.device)
        self.zero_point = zero_point.detach().clone().to(torch.int32).to(self.scale.device)
        self.calibrated = True
        self.generation += 1

    def learn_scale(self) -> nn.Parameter:
        """Make the scale a trainable parameter (LSQ, Esser et al. 2020); the zero point stays.
        :meth:`freeze_scale` turns it back into a buffer."""
        param = nn.Parameter(self.scale.detach().clone())
        del self._buffers["scale"]
        self.scale = param
        return param

    def freeze_scale(self) -> None:
        if "scale" not in self._parameters:
            return
        value = self.scale.detach().clone()
        del self._parameters["scale"]
        self.register_buffer("scale", value)
        self.generation += 1

    def set_bits(self, bits: int) -> None:
        """Change the bit-width; the quantizer must be calibrated again afterwards."""
        self.spec = self.spec.with_bits(bits)
        self.calibrated = False
        self.generation += 1

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``keep`` (0/1 like ``x``, per-tensor quantizers only): quantize only where it is 1."""
        if not self.enabled:
            return x
        if not self.calibrated:
            raise RuntimeError("quantizer enabled before calibration: run a calibration first")
        if torch.is_grad_enabled() and (x.requires_grad or self.scale.requires_grad):
            if self.spec.per_channel:
                assert keep is None, "a keep mask needs a per-tensor quantizer"
                return fake_quantize(x, self.scale, self.zero_point, self.spec)
            factor = (x.numel() * self.spec.qmax) ** -0.5 if self.grad_scaling else 1.0
            return fake_quantize_learned(x, self.scale, self.zero_point, self.spec, keep, factor)
        out = fake_quantize_inference(x, self.scale, self.zero_point, self.spec)
        return out if keep is None else torch.lerp(x, out, keep)

    def extra_repr(self) -> str:
        s = self.spec
        kind = "per-channel" if s.per_channel else "per-tensor"
        sym = "symmetric" if s.symmetric else "asymmetric"
        return f"{s.bits}-bit {kind} {sym}, enabled={self.enabled}"
