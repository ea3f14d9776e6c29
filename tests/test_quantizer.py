import pytest
import torch

from ptqlib.quant.quantizer import FakeQuantizer, QuantSpec, fake_quantize, fake_quantize_inference, qparams_from_range

SPECS = [QuantSpec(b, sym, signed) for b in range(2, 9) for sym, signed in ((False, False), (True, True), (True, False))]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.bits}b-sym{int(s.symmetric)}-signed{int(s.signed)}")
def test_per_tensor_matches_pytorch_exactly(spec):
    gen = torch.Generator().manual_seed(spec.bits)
    x = torch.randn(4096, generator=gen) * 3
    for lo, hi in ((-2.0, 5.0), (0.0, 1.3), (-0.7, 0.2)):
        scale, zp = qparams_from_range(torch.tensor(lo), torch.tensor(hi), spec)
        ref = torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zp), spec.qmin, spec.qmax)
        assert torch.equal(fake_quantize(x, scale, zp, spec), ref)
        assert torch.equal(fake_quantize_inference(x, scale, zp, spec), ref)


@pytest.mark.parametrize("bits", range(2, 9))
def test_per_channel_matches_pytorch_exactly(bits):
    spec = QuantSpec(bits, per_channel=True, ch_axis=0)
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(16, 8, 3, 3, generator=gen)
    lo, hi = w.flatten(1).min(1).values * 0.8, w.flatten(1).max(1).values * 0.9
    scale, zp = qparams_from_range(lo, hi, spec)
    ref = torch.fake_quantize_per_channel_affine(w, scale, zp, 0, spec.qmin, spec.qmax)
    assert torch.equal(fake_quantize(w, scale, zp, spec), ref)
    assert torch.equal(fake_quantize_inference(w, scale, zp, spec), ref)


def test_values_lie_on_the_grid_and_zero_is_exact():
    spec = QuantSpec(3)
    scale, zp = qparams_from_range(torch.tensor(-1.0), torch.tensor(2.5), spec)
    x = torch.linspace(-3, 4, 1001)
    xq = fake_quantize(x, scale, zp, spec)
    levels = torch.unique(xq)
    assert len(levels) <= 2**3
    assert torch.allclose(levels, (torch.arange(spec.qmin, spec.qmax + 1) - zp) * scale)
    assert fake_quantize(torch.zeros(1), scale, zp, spec).item() == 0.0


def test_straight_through_gradient_matches_pytorch():
    spec = QuantSpec(4)
    scale, zp = qparams_from_range(torch.tensor(-1.0), torch.tensor(1.0), spec)
    x1 = torch.linspace(-2, 2, 101, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    fake_quantize(x1, scale, zp, spec).sum().backward()
    torch.fake_quantize_per_tensor_affine(x2, scale.item(), int(zp), spec.qmin, spec.qmax).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    assert x1.grad.sum() > 0 and (x1.grad == 0).any()


@pytest.mark.parametrize("bits", [0, 1, 9, 33, 4.0, True])
def test_bad_bits_are_refused(bits):
    with pytest.raises(ValueError, match=f"from 2 to 8, got {bits!r}"):
        QuantSpec(bits=bits)


def test_uncalibrated_quantizer_refuses_to_run():
    q = FakeQuantizer(QuantSpec(4))
    q.enabled = True
    with pytest.raises(RuntimeError, match="before calibration"):
        q(torch.ones(3))
    q.enabled = False
    assert torch.equal(q(torch.ones(3)), torch.ones(3))


@pytest.mark.parametrize("zero_point", [0, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_learned_fake_quant_matches_the_composite_form(zero_point, channels_last):
    from ptqlib.quant.quantizer import fake_quantize_learned

    torch.manual_seed(0)
    spec = QuantSpec(4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(4, 8, 6, 6) * 2).contiguous(memory_format=fmt).requires_grad_(True)
    scale = torch.nn.Parameter(torch.tensor(0.3))
    zp = torch.tensor(zero_point, dtype=torch.int32)
    keep = (torch.rand(x.shape) < 0.5).float().contiguous(memory_format=fmt)
    grad = torch.randn(x.shape)
    for mask in (None, keep):
        ref = fake_quantize(x, scale, zp, spec)
        ref = ref if mask is None else torch.where(mask.bool(), ref, x)
        ref.backward(grad)
        ref_grads = x.grad.clone(), scale.grad.clone()
        x.grad = scale.grad = None
        out = fake_quantize_learned(x, scale, zp, spec, mask)
        out.backward(grad)
        assert torch.equal(out, ref)  # the same values
        # the STE gradient exactly (the composite form multiplies by s and 1/s), the scale's up to summation order
        assert torch.allclose(x.grad, ref_grads[0], rtol=1e-6, atol=0)
        assert torch.allclose(scale.grad, ref_grads[1], rtol=1e-5)
        x.grad = scale.grad = None


@pytest.mark.parametrize("learn", ["x", "scale"])
def test_learned_fake_quant_when_only_the_input_or_only_the_scale_learns(learn):
    from ptqlib.quant.quantizer import fake_quantize_learned

    torch.manual_seed(1)
    spec = QuantSpec(4)
    x = (torch.randn(4, 8, 6, 6) * 2).contiguous(memory_format=torch.channels_last).requires_grad_(learn == "x")
    scale = torch.tensor(0.3, requires_grad=learn == "scale")
    zp = torch.tensor(2, dtype=torch.int32)
    keep = (torch.rand(x.shape) < 0.5).float().contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape)
    for mask in (None, keep):
        ref = fake_quantize(x, scale, zp, spec)
        ref = ref if mask is None else torch.where(mask.bool(), ref, x)
        (ref_grad,) = torch.autograd.grad(ref, x if learn == "x" else scale, grad)
        out = fake_quantize_learned(x, scale, zp, spec, mask)
        (got,) = torch.autograd.grad(out, x if learn == "x" else scale, grad)
        assert torch.equal(out, ref) and torch.allclose(got, ref_grad, rtol=1e-5, atol=0)


def test_learned_fake_quantization_traces_without_a_graph_break():
    """Under torch.compile the clamp takes tensor bounds: reading the zero point as a number
    would break the graph (the eager CPU path reads it, for speed)."""
    import torch._dynamo

    from ptqlib.quant.quantizer import QuantSpec, fake_quantize_learned

    spec = QuantSpec(bits=4)
    scale = torch.tensor(0.1, requires_grad=True)

    def step(x):
        return fake_quantize_learned(x, scale, torch.tensor(3, dtype=torch.int32), spec).square().sum()

    x = torch.randn(2, 3, 4, 4)
    explained = torch._dynamo.explain(step)(x)
    assert explained.graph_break_count == 0
    torch._dynamo.reset()
    assert torch.equal(step(x), step(x))
