import math

import numpy as np
import pytest
import torch

from ptqlib.quant.quantizer import QuantSpec, fake_quantize, qparams_from_range
from ptqlib.quant.qmodel import WEIGHT_SPEC
from ptqlib.quant import range_estimators
from ptqlib.quant.range_estimators import HistogramObserver, histc, kl_threshold, weight_range


def test_histogram_equals_numpy_histogram_after_exact_growth():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.rand(5000, generator=gen), torch.rand(5000, generator=gen) * 3.0,
               torch.rand(3000, generator=gen) * 0.5]
    obs = HistogramObserver(num_bins=64)
    for b in batches:
        obs(b)
    data = torch.cat(batches).numpy()
    # the first batch sets R = its max (< 1); the second needs R * 4 >= 3
    r = batches[0].max().item() * 4
    assert obs.bound.item() == pytest.approx(r)
    expected, _ = np.histogram(data, bins=64, range=(0, r))
    # float32 (torch.histc) and float64 (numpy) may put a value lying on an edge on either side
    diff = obs.hist.numpy() - expected
    assert diff.sum() == 0 and np.abs(diff).sum() <= 2
    assert obs.min_val.item() == data.min() and obs.max_val.item() == data.max()


def test_histogram_becomes_signed_without_losing_counts():
    obs = HistogramObserver(num_bins=8)
    obs(torch.tensor([0.1, 0.6, 0.9, 1.0]))  # [0, 1], width 1/8
    obs(torch.tensor([-0.3]))                 # now [-1, 1], width 1/4
    # hand-computed: bins of width 0.25 from -1: -0.3 -> bin 2; 0.1 -> 4; 0.6 -> 6; 0.9, 1.0 -> 7
    assert obs.hist.tolist() == [0, 0, 1, 0, 1, 0, 1, 2]
    assert obs.lo_edge == -1.0


def _true_mse(x, lo, hi, spec):
    s, z = qparams_from_range(torch.tensor(lo), torch.tensor(hi), spec)
    return ((fake_quantize(x, s, z, spec) - x) ** 2).sum().item()


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_range_is_near_the_brute_force_optimum(bits):
    spec = QuantSpec(bits)
    x = torch.relu(torch.randn(200_000, generator=torch.Generator().manual_seed(bits)))
    obs = HistogramObserver()
    obs(x)
    lo, hi = obs.range("mse", spec)
    brute = min(_true_mse(x, 0.0, x.max().item() * i / 100, spec) for i in range(1, 101))
    assert _true_mse(x, lo.item(), hi.item(), spec) <= 1.02 * brute
    mm = _true_mse(x, 0.0, x.max().item(), spec)
    assert _true_mse(x, lo.item(), hi.item(), spec) < mm  # clipping the Gaussian tail pays off


def test_cosine_and_percentile_clip_outliers_but_minmax_does_not():
    x = torch.cat([torch.rand(100_000), torch.tensor([50.0])])
    obs = HistogramObserver()
    obs(x)
    assert obs.range("minmax", QuantSpec(4))[1].item() == 50.0
    assert obs.range("cosine", QuantSpec(4))[1].item() < 5.0
    assert obs.range("percentile", QuantSpec(4))[1].item() < 2.0
    assert obs.range("kl", QuantSpec(4))[1].item() < 5.0


def _smooth_reference(dist, eps=1e-4):
    zeros = [v == 0 for v in dist]
    n_zero, n_nonzero = sum(zeros), len(dist) - sum(zeros)
    if n_nonzero == 0:
        return None
    return [v + eps if z else v - eps * n_zero / n_nonzero for v, z in zip(dist, zeros)]


def _kl_threshold_reference(hist, levels):
    """Entropy calibration as MXNet writes it, one plain loop per quantity."""
    best, best_kl = None, math.inf
    for i in range(levels, len(hist) + 1):
        sliced = [float(v) for v in hist[:i]]
        p = list(sliced)
        p[-1] += float(sum(hist[i:]))
        merged = i // levels
        q = [0.0] * i
        for j in range(levels):
            start = j * merged
            stop = i if j == levels - 1 else start + merged
            nonzero = sum(1 for k in range(start, stop) if p[k] != 0)
            for k in range(start, stop):
                if p[k] != 0:
                    q[k] = sum(sliced[start:stop]) / nonzero
        ps, qs = _smooth_reference(p), _smooth_reference(q)
        if ps is None or qs is None:
            continue
        p_sum, q_sum = sum(ps), sum(qs)
        kl = sum(pk / p_sum * math.log((pk / p_sum) / (qk / q_sum)) for pk, qk in zip(ps, qs) if pk > 0)
        if kl < best_kl:
            best, best_kl = i, kl
    return best


@pytest.mark.parametrize("seed", range(3))
def test_kl_threshold_matches_a_plain_reference(seed):
    rng = np.random.default_rng(seed)
    hist = np.histogram(np.abs(rng.standard_t(3, 300)), bins=96)[0].astype(np.float64)  # sparse: empty bins
    assert kl_threshold(hist, 8) == _kl_threshold_reference(list(hist), 8)


def test_kl_ignores_the_relu_zero_spike():
    x = torch.cat([torch.zeros(800_000), torch.rand(200_000)])
    obs = HistogramObserver()
    obs(x)
    assert obs.zeros.item() == 800_000
    assert obs.range("kl", QuantSpec(4))[1].item() > 0.5


def test_weight_mse_range_is_per_channel_brute_force():
    spec = QuantSpec(4, per_channel=True)
    w = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    w[0, 0] = 8.0  # an outlier in channel 0 only
    lo, hi = weight_range(w, spec, "mse")
    for c in range(6):
        row = w[c:c + 1]
        errs = []
        for i in range(1, 101):
            s, z = qparams_from_range(row.min() * i / 100, row.max() * i / 100, QuantSpec(4))
            errs.append(((fake_quantize(row, s, z, QuantSpec(4)) - row) ** 2).sum().item())
        best = int(np.argmin(errs)) + 1
        assert hi[c].item() == pytest.approx(row.max().item() * best / 100, rel=1e-6)
    lo_mm, hi_mm = weight_range(w, spec, "minmax")
    assert torch.equal(hi_mm, w.max(1).values) and torch.equal(lo_mm, w.min(1).values)


def test_unknown_metric_is_refused():
    obs = HistogramObserver()
    obs(torch.rand(10))
    with pytest.raises(ValueError, match="unknown calibration metric 'l1'; choose one of minmax, mse"):
        obs.range("l1", QuantSpec(4))
    with pytest.raises(ValueError, match="unknown weight metric 'kl'; choose one of minmax, mse, lp2.4, lp2.4-2d"):
        weight_range(torch.randn(2, 3), QuantSpec(4, per_channel=True), "kl")


def _reference_weight_search(channel: torch.Tensor, bits: int) -> tuple[float, float]:
    """The BRECQ code's per-channel weight search, written from its description: candidates
    [min, max] * (1 - 0.01 i) for i < 80, score mean |w - q(w)|^2.4, the first best kept;
    returns that candidate's (scale, zero point)."""
    levels = 2 ** bits
    w_min, w_max = channel.min(), channel.max()
    best, out = math.inf, None
    for i in range(80):
        c_max, c_min = w_max * (1.0 - i * 0.01), w_min * (1.0 - i * 0.01)
        delta = (c_max - c_min) / (levels - 1)
        zp = torch.round(-c_min / delta)
        q = (torch.clamp(torch.round(channel / delta) + zp, 0, levels - 1) - zp) * delta
        score = (channel - q).abs().pow(2.4).mean().item()
        if score < best:
            best, out = score, (delta.item(), zp.item())
    return out


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_the_lp24_weight_search_is_the_reference_codes(bits):
    torch.manual_seed(bits)
    w = torch.randn(16, 8, 3, 3) * torch.rand(16, 1, 1, 1) + 0.02 * torch.randn(16, 1, 1, 1)
    w[3, 0, 0, 0] = 6.0  # an outlier: the search clips it
    # both signs in every channel, as BN-folded weights (a one-signed channel's range is widened to 0 here)
    assert (w.amin((1, 2, 3)) < 0).all() and (w.amax((1, 2, 3)) > 0).all()
    spec = WEIGHT_SPEC.with_bits(bits)
    lo, hi = weight_range(w, spec, "lp2.4")
    scale, zp = qparams_from_range(lo, hi, spec)
    for c in range(16):
        ref_scale, ref_zp = _reference_weight_search(w[c].flatten(), bits)
        assert scale[c].item() == pytest.approx(ref_scale, rel=1e-5) and zp[c].item() == ref_zp
    if bits == 4:  # another search: other ranges on this tensor
        assert not torch.equal(hi, weight_range(w, spec, "mse")[1])


@pytest.mark.parametrize("metric", ["mse", "lp2.4", "cosine"])
def test_tensor_observer_keeps_the_candidate_with_the_least_error_on_the_raw_values(metric):
    """The raw-value search against its definition, written out in float64: every candidate range
    ``t * [min, max]``, each value quantized, the error summed (zeros, negatives and two batches
    included); the first best kept."""
    from ptqlib.quant.range_estimators import NUM_CANDIDATES, TensorObserver

    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(500, generator=g) * 2 - 0.5, torch.relu(torch.randn(300, generator=g)) * 5]
    obs = TensorObserver()
    for b in batches:
        obs(b)
    spec = QuantSpec(3)
    x = torch.cat(batches)
    scores = []
    for i in range(1, NUM_CANDIDATES + 1):
        lo, hi = x.min().double() * i / NUM_CANDIDATES, x.max().double() * i / NUM_CANDIDATES
        scale, zp = qparams_from_range(lo.float(), hi.float(), spec)
        q = (torch.clamp(torch.round(x * (1.0 / scale)) + zp, spec.qmin, spec.qmax) - zp) * scale
        d = x.double() - q.double()
        scores.append(float(d.pow(2).sum()) if metric == "mse" else float(d.abs().pow(2.4).sum()) if metric == "lp2.4"
                      else 1 - float((x.double() * q.double()).sum() / (x.double().norm() * q.double().norm())))
    best = min(range(NUM_CANDIDATES), key=lambda k: (scores[k], k))
    lo, hi = obs.range(metric, spec)
    assert hi.item() == pytest.approx(float(x.max()) * (best + 1) / NUM_CANDIDATES, rel=1e-6)
    assert lo.item() == pytest.approx(float(x.min()) * (best + 1) / NUM_CANDIDATES, rel=1e-6)


def test_tensor_and_histogram_searches_can_choose_different_ranges_and_tensor_refuses_histogram_metrics():
    """300 log-normal values at 2 bits: bin centres stand for the values well enough to keep the
    same candidate for most samples, not for all (here the histogram keeps a narrower range)."""
    from ptqlib.quant.range_estimators import TensorObserver, check_act_search

    x = torch.exp(torch.randn(300, generator=torch.Generator().manual_seed(54)) * 1.5)
    hist, tensor = HistogramObserver(), TensorObserver()
    hist(x)
    tensor(x)
    spec = QuantSpec(2)
    assert hist.range("minmax", spec)[1] == tensor.range("minmax", spec)[1]
    assert hist.range("mse", spec)[1] < tensor.range("mse", spec)[1]
    for metric in ("kl", "percentile"):
        with pytest.raises(ValueError, match=f"cannot run metric '{metric}'; choose one of minmax, mse, cosine, lp2.4"):
            check_act_search("tensor", metric)
        with pytest.raises(ValueError, match="unknown calibration metric"):
            tensor.range(metric, spec)
    with pytest.raises(ValueError, match="unknown act_search 'raw'; choose one of histogram, tensor"):
        check_act_search("raw")


def _qdrop_weight_search(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The QDrop code's ``MSEObserver`` on a per-channel weight, ported loop for loop (its
    ``perform_2D_search``, or ``perform_1D_search`` for a tensor of one sign; mean score, strict
    ``<``), with this project's ``qparams_from_range`` and fake quantization."""
    spec = QuantSpec(bits, per_channel=True)
    y = w.reshape(w.shape[0], -1)
    x_min, x_max = y.min(1).values, y.max(1).values
    one_side = "pos" if bool(y.min() >= 0) else "neg" if bool(y.max() <= 0) else "no"
    best_score = torch.full_like(x_min, 1e10)
    best_min, best_max = x_min.clone(), x_max.clone()

    def visit(new_min, new_max):
        nonlocal best_score, best_min, best_max
        scale, zp = qparams_from_range(new_min, new_max, spec)
        score = (fake_quantize(y, scale, zp, spec) - y).abs().pow(2.4).mean(1)
        best_min = torch.where(score < best_score, new_min, best_min)
        best_max = torch.where(score < best_score, new_max, best_max)
        best_score = torch.minimum(score, best_score)

    if one_side == "no":
        x_max, x_min = torch.clamp(x_max, min=0), torch.clamp(x_min, max=0)
        xrange = x_max - x_min
        for i in range(1, 101):
            tmp_max = xrange / 100 * i
            tmp_delta = tmp_max / float(spec.qmax - spec.qmin)
            for zp in range(spec.qmin, spec.qmax + 1):
                visit(torch.zeros_like(x_min) - zp * tmp_delta, tmp_max - zp * tmp_delta)
    else:
        xrange = torch.max(x_min.abs(), x_max)
        for i in range(1, 101):
            thres = xrange / 100 * i
            visit(torch.zeros_like(x_min) if one_side == "pos" else -thres,
                  torch.zeros_like(x_max) if one_side == "neg" else thres)
    return best_min, best_max


def test_qdrops_weight_search_is_the_reference_codes_search():
    """``lp2.4-2d`` against the QDrop code's search ported loop for loop: two-signed, positive
    and negative tensors, at 2 and 4 bits; the last channel ties two zero points exactly
    (values +-1: the grids of zero point 1 and 2 mirror each other), where the first best is kept."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 2, 3, 3, generator=g) * torch.tensor([0.2, 1.0, 3.0, 1.0]).reshape(4, 1, 1, 1) + 0.3
    w[3] = torch.tensor([-1.0, 1.0]).repeat(9).reshape(2, 3, 3)
    for bits in (2, 4):
        spec = WEIGHT_SPEC.with_bits(bits)
        for tensor in (w, w.abs(), -w.abs()):
            lo, hi = weight_range(tensor, spec, "lp2.4-2d")
            ref_lo, ref_hi = _qdrop_weight_search(tensor, bits)
            assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)
    lo, hi = weight_range(w, WEIGHT_SPEC.with_bits(2), "lp2.4-2d")
    assert -lo[3] < hi[3]  # of the tied pair, zero point 1 (the first): one step below 0, two above
    assert not torch.equal(weight_range(w, WEIGHT_SPEC.with_bits(2), "lp2.4")[1], hi)


def _edge_values(lo: float, hi: float, bins: int) -> torch.Tensor:
    """Values on and next to every bin edge of ``[lo, hi]`` as torch.linspace puts them, ``hi``
    included: where a bin choice by float32 arithmetic is most likely to be off by one."""
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float32)
    near = [edges, torch.nextafter(edges, torch.tensor(-math.inf)), torch.nextafter(edges, torch.tensor(math.inf))]
    values = torch.cat(near)
    return values[(values >= edges[0]) & (values <= edges[-1])]


@pytest.mark.parametrize("seed", range(12))
def test_fast_histc_counts_are_torch_histcs(seed):
    gen = torch.Generator().manual_seed(seed)
    bins = [2048, 2048, 16, 7, 2048, 100][seed % 6]
    scale = float(torch.rand((), generator=gen)) * 10 ** int(torch.randint(-3, 4, (), generator=gen))
    lo = 0.0 if seed % 4 == 0 else -scale * float(torch.rand((), generator=gen))
    hi = scale
    values = lo + (hi - lo) * torch.rand(3, 8, 9, 5, generator=gen)
    values = torch.cat([values.reshape(-1), _edge_values(lo, hi, bins), torch.zeros(50)[: 50 * (lo <= 0)]])
    values = values[(values >= torch.tensor(lo, dtype=torch.float32)) & (values <= torch.tensor(hi, dtype=torch.float32))]
    x = values[torch.randperm(len(values), generator=gen)][: len(values) // 24 * 24].reshape(2, 4, 3, -1)
    for layout in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(1, 3), x.requires_grad_()):
        expected = torch.histc(layout.detach(), bins=bins, min=lo, max=hi)
        assert torch.equal(histc(layout, bins, lo, hi, layout.min(), layout.max()), expected)


def test_fast_histc_computes_in_float32_whatever_the_default_dtype():
    x = torch.linspace(0.0, 1.7, 2049, dtype=torch.float32)
    expected = torch.histc(x, bins=2048, min=0.0, max=1.7)
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        range_estimators._SCRATCH = range_estimators._Scratch()  # buffers made under this default
        assert torch.equal(histc(x, 2048, 0.0, 1.7, x.min(), x.max()), expected)
    finally:
        torch.set_default_dtype(default)


def test_fast_histc_leaves_values_outside_the_range_and_nan_to_torch_histc():
    cases = (([-1.0, 0.5, 1.0], 1.0, 4), ([0.25, 2.0], 1.0, 4), ([0.5, float("nan")], 1.0, 4),
             ([0.0, 1e37, 3e38], 3e38, 2048))  # the last: (e - lo) * bins overflows float32
    for values, hi, bins in cases:
        x = torch.tensor(values)
        x_min, x_max = torch.aminmax(x)
        assert torch.equal(histc(x, bins, 0.0, hi, x_min, x_max), torch.histc(x, bins=bins, min=0.0, max=hi))
