"""Range estimators: the study's calibration metrics, turning observed values into a range.

Activations are observed batch by batch into a 2048-bin histogram (plus the exact min and
max), so the calibration set never has to sit in memory as raw activations. When a batch
falls outside the current histogram range, the range doubles (as often as needed) and
neighbouring bins are merged exactly: every old bin edge is also a new bin edge.

The metrics follow ``book/method.md``:

- ``minmax``: the exact min and max seen.
- ``mse``: 100 candidate ranges ``[t*min, t*max]``, ``t = 1/100 .. 1``; keep the one with the
  least squared quantization error (bin centres stand for the values in a bin).
- ``cosine``: the same candidates; keep the one with the least cosine distance.
- ``kl``: TensorRT-style entropy calibration (Migacz 2017) on the histogram of |x|: the
  clipping threshold whose quantized histogram has the least KL divergence from the original.
- ``percentile``: the 0.01 % / 99.99 % quantiles of the histogram.
- ``lp2.4``: the ``mse`` candidates scored by ``sum |x - q(x)|^2.4`` (the L_p norm of LAPQ,
  Nahshan et al. 2019), the activation range search of the BRECQ and QDrop code.

Weights are estimated per output channel directly on the tensor: ``minmax``; ``mse`` (the
candidates above, squared error); ``lp2.4``, the BRECQ code's weight search (its
``UniformAffineQuantizer`` with ``scale_method='mse'``): 80 candidates ``[min, max] * (1 - 0.01 i)``,
``i = 0 .. 79`` (down to 21 % of the range, not 1 %), scored by ``sum |w - q(w)|^2.4``, the
first best kept (the widest, where the ``mse`` search keeps the narrowest). As everywhere
here, a channel's range is widened to contain 0 (the reference code leaves a one-signed
channel's range as it is; BN-folded convolution weights have both signs). ``lp2.4-2d``, the
QDrop code's weight search (its ``MSEObserver`` per channel): range and zero point searched
together, 100 ranges ``i/100`` of the channel's span (its range widened to contain 0) times every
zero point of the grid (16 at 4 bits, 256 at 8), scored by ``sum |w - q(w)|^2.4``, the first best
kept in that order; a tensor of one sign only gets QDrop's 1-D search instead (100 ranges
``[0, t]`` or ``[-t, 0]``, ``t`` up to its largest magnitude).

Exact zeros (ReLU's dead units) are counted apart from the histogram: they are always
representable exactly, so MSE and cosine count them at 0 and KL leaves them out.
The histogram's resolution is the price of a single pass: its range is the first batch's
max doubled as often as later batches need, so the data fills between half and all of the
2048 bins.

:class:`TensorObserver` keeps the raw values instead and scores the same candidates on them (as
the BRECQ and QDrop code search activation ranges, on one calibration batch's tensor): exact, at
the cost of holding every observed value. It serves the metrics that score candidates
(``TENSOR_METRICS``); ``kl`` and ``percentile`` are defined on the histogram here.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import nn

from ptqlib.quant.quantizer import QuantSpec, fake_quantize, fake_quantize_inference, flat_view, qparams_from_range

METRICS = ("minmax", "mse", "kl", "cosine", "percentile", "lp2.4")
WEIGHT_METRICS = ("minmax", "mse", "lp2.4", "lp2.4-2d")
TENSOR_METRICS = ("minmax", "mse", "cosine", "lp2.4")  # those a TensorObserver scores
REFERENCE_WEIGHT_CANDIDATES = 80  # the BRECQ code's weight range search: [min, max] * (1 - 0.01 i), i < 80
NUM_BINS = 2048
NUM_CANDIDATES = 100
PERCENTILE = 99.99


class _Scratch(threading.local):
    """Per-thread buffers reused by :func:`histc` (a fresh tensor per call costs its page faults)."""

    values = torch.empty(0, dtype=torch.float32, device="cpu")
    bins = torch.empty(0, dtype=torch.int32, device="cpu")


_SCRATCH = _Scratch()


def histc(x: torch.Tensor, bins: int, lo: float, hi: float, x_min: torch.Tensor, x_max: torch.Tensor) -> torch.Tensor:
    """``torch.histc(x, bins, lo, hi)`` (float32 counts): the same counts, 3 to 4.7 times faster
    on the CPU (on EfficientNet-Lite1's activation shapes). ``x_min``/``x_max``: ``x``'s min and
    max (already at hand where it is called).

    PyTorch's CPU ``histc`` (``HistogramKernel.cpp``, linear interpolation) puts an element ``e``
    of ``[lo, hi]`` (its edges rounded to float32) in bin ``int((e - lo) * bins / (hi - lo))``,
    every operation in float32, the last bin closed (``hi`` counts in it), one element at a time.
    The same float32 operations done whole-tensor (elementwise IEEE arithmetic, so the same
    values) and a ``bincount`` give the same counts, as long as no bin of the float32 count
    passes 2**24 (where ``histc``'s count stops growing), every element lies in the range
    (``histc`` skips the others, NaN included) and ``(hi - lo) * bins`` is finite. Elsewhere, on
    other devices and dtypes, this calls ``torch.histc``."""
    n = x.numel()
    lo32, hi32 = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    if (x.device.type != "cpu" or x.dtype != torch.float32 or n >= 2 ** 24 or not lo32 < hi32
            or not torch.isfinite((hi32 - lo32) * bins) or not (x_min >= lo32 and x_max <= hi32)):
        return torch.histc(x, bins=bins, min=lo, max=hi)
    if _SCRATCH.values.numel() < n:
        _SCRATCH.values = torch.empty(n, dtype=torch.float32, device="cpu")
        _SCRATCH.bins = torch.empty(n, dtype=torch.int32, device="cpu")
    x = x.detach()
    flat = flat_view(x) if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.reshape(-1)
    t, idx = _SCRATCH.values[:n], _SCRATCH.bins[:n]
    if lo32.item() == 0.0:
        torch.mul(flat, float(bins), out=t)  # e - 0 is e
    else:
        torch.sub(flat, lo32.item(), out=t).mul_(float(bins))
    t.div_((hi32 - lo32).item())  # the float32 width, exact as a Python float
    idx.copy_(t)  # truncation, as a C++ cast
    idx.clamp_max_(bins - 1)  # the last bin is closed: e = hi lands in it
    return torch.bincount(idx, minlength=bins).to(torch.float32)


def check_metric(metric: str, allowed: tuple[str, ...] = METRICS, what: str = "calibration metric") -> str:
    if metric not in allowed:
        raise ValueError(f"unknown {what} {metric!r}; choose one of {', '.join(allowed)}")
    return metric


class HistogramObserver(nn.Module):
    """Accumulates the exact min/max and a histogram of everything passed through ``forward``.

    The histogram covers ``[0, R]`` while only non-negative values have been seen, and
    ``[-R, R]`` once a negative value appears; ``R`` only ever doubles, so rebinning is exact.
    """

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        super().__init__()
        assert num_bins % 2 == 0, "the signed histogram needs 0 on a bin edge"
        self.num_bins = num_bins
        self.register_buffer("hist", torch.zeros(num_bins, dtype=torch.float64))
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.register_buffer("bound", torch.tensor(0.0, dtype=torch.float64))  # R
        self.register_buffer("signed", torch.tensor(False))
        self.register_buffer("zeros", torch.tensor(0.0, dtype=torch.float64))  # exact zeros seen

    @property
    def empty(self) -> bool:
        return not torch.isfinite(self.min_val).item()

    @property
    def lo_edge(self) -> float:
        return -self.bound.item() if self.signed.item() else 0.0

    @property
    def bin_width(self) -> float:
        return (self.bound.item() - self.lo_edge) / self.num_bins

    def centers(self) -> torch.Tensor:
        lo, w = self.lo_edge, self.bin_width
        return lo + w * (torch.arange(self.num_bins, dtype=torch.float64) + 0.5)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_det = x.detach().float()
        if x_det.numel() == 0:
            return x
        bmin, bmax = (v.cpu() for v in torch.aminmax(x_det))
        self.min_val = torch.minimum(self.min_val, bmin)
        self.max_val = torch.maximum(self.max_val, bmax)
        self._grow(need_signed=bool(bmin < 0), need_bound=float(max(-bmin.item(), bmax.item())))
        lo, hi = self.lo_edge, self.bound.item()
        counts = histc(x_det, self.num_bins, lo, hi, bmin, bmax).double().cpu()
        self.hist += counts
        small = x_det.numel() < 2**31  # an int32 sum of booleans is faster than the default int64 one
        self.zeros += (x_det == 0).sum(dtype=torch.int32 if small else torch.int64).double().cpu()
        return x

    def _grow(self, need_signed: bool, need_bound: float) -> None:
        if self.bound.item() == 0.0:  # first batch
            self.bound.fill_(need_bound if need_bound > 0 else 1.0)
            self.signed.fill_(need_signed)
            return
        old_bound = self.bound.item()
        factor = 1 if need_bound <= old_bound else 2 ** math.ceil(math.log2(need_bound / old_bound))
        new_signed = bool(self.signed.item()) or need_signed
        if factor == 1 and new_signed == bool(self.signed.item()):
            return
        old_centers, old_hist = self.centers(), self.hist.clone()
        self.bound.fill_(old_bound * factor)
        self.signed.fill_(new_signed)
        idx = torch.floor((old_centers - self.lo_edge) / self.bin_width).long().clamp_(0, self.num_bins - 1)
        self.hist = torch.zeros_like(old_hist).index_add_(0, idx, old_hist)

    def _hist_without_zeros(self) -> torch.Tensor:
        """The histogram without the exact zeros (ReLU's dead units). Zero is always exactly
        representable, so those values say nothing about the best range, yet their spike
        would dominate the KL divergence and pull the threshold towards 0."""
        hist = self.hist.clone()
        zero_bin = self.num_bins // 2 if self.signed.item() else 0
        hist[zero_bin] = (hist[zero_bin] - self.zeros).clamp_min(0)
        return hist

    def range(self, metric: str, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(lo, hi)`` range chosen by ``metric`` for quantizing to ``spec``."""
        check_metric(metric)
        if self.empty:
            raise RuntimeError("observer saw no data: the calibration pass did not reach this layer")
        lo, hi = self.min_val.clone(), self.max_val.clone()
        if metric == "minmax":
            return lo, hi
        if metric == "percentile":
            return _histogram_percentile(self.hist, self.centers(), lo, hi)
        if metric == "kl":
            return _kl_range(self._hist_without_zeros(), self.bin_width, spec, lo, hi)
        values = torch.cat([torch.zeros(1, dtype=torch.float64), self.centers()])
        counts = torch.cat([self.zeros.reshape(1), self._hist_without_zeros()])
        return _search_range(counts, values, lo, hi, spec, metric)


class TensorObserver(nn.Module):
    """Keeps every value passed through ``forward`` (on the CPU) and scores the candidate ranges
    of :class:`HistogramObserver`'s search on those values themselves rather than on bin centres.
    Exact zeros are left out of the scoring: zero is exactly representable under every candidate,
    so they add nothing to any score."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[torch.Tensor] = []
        self.min_val, self.max_val = torch.tensor(float("inf")), torch.tensor(float("-inf"))

    @property
    def empty(self) -> bool:
        return not self.values

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().float().reshape(-1).cpu()
        if flat.numel() == 0:
            return x
        bmin, bmax = torch.aminmax(flat)
        self.min_val, self.max_val = torch.minimum(self.min_val, bmin), torch.maximum(self.max_val, bmax)
        self.values.append(flat[flat != 0])
        return x

    def range(self, metric: str, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(lo, hi)`` range chosen by ``metric`` (one of ``TENSOR_METRICS``) for ``spec``."""
        check_metric(metric, TENSOR_METRICS)
        if self.empty:
            raise RuntimeError("observer saw no data: the calibration pass did not reach this layer")
        lo, hi = self.min_val.clone(), self.max_val.clone()
        if metric == "minmax":
            return lo, hi
        return _search_range_on_values(torch.cat(self.values), lo, hi, spec, metric)


OBSERVERS = {"histogram": HistogramObserver, "tensor": TensorObserver}
ACT_SEARCHES = tuple(OBSERVERS)  # what an activation range search scores its candidates on


def check_act_search(search: str, *metrics: str) -> str:
    """``search`` (one of ``ACT_SEARCHES``), refused with one line if it cannot run ``metrics``."""
    if search not in OBSERVERS:
        raise ValueError(f"unknown act_search {search!r}; choose one of {', '.join(ACT_SEARCHES)}")
    if search == "tensor":
        for metric in metrics:
            if metric not in TENSOR_METRICS:
                raise ValueError(f"act_search 'tensor' scores candidate ranges on the raw values and cannot run "
                                 f"metric {metric!r}; choose one of {', '.join(TENSOR_METRICS)}, or act_search "
                                 "histogram")
    return search


def _candidate_ranges(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(1, NUM_CANDIDATES + 1, dtype=torch.float64) / NUM_CANDIDATES
    return lo.double() * t, hi.double() * t


def _quantize_values(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize 1-D ``values`` under each candidate range; returns ``[len(lo), len(values)]``."""
    per_candidate = QuantSpec(spec.bits, spec.symmetric, spec.signed, per_channel=True, ch_axis=0)
    scale, zp = qparams_from_range(lo.float(), hi.float(), per_candidate)
    grid = values.float().unsqueeze(0).expand(len(lo), -1)
    return fake_quantize(grid, scale, zp, per_candidate).double()


def _score(values, quantized, metric, counts=None, norm=None):
    """The error of ``quantized`` (candidates along the first dimension, or one candidate) against
    the float64 ``values`` (last dimension) under ``metric`` (mse, lp2.4 or cosine distance), each
    value weighted by ``counts`` (``None``: once each); ``norm``, for cosine: the weighted sum of
    the squared values (:func:`_norm`). Lower is better."""
    if metric == "cosine":
        quantized_squares = quantized**2 if counts is None else counts * quantized**2
        dot = ((values if counts is None else counts * values) * quantized).sum(-1)
        return 1 - dot / torch.sqrt(norm * quantized_squares.sum(-1)).clamp_min(1e-30)
    error = values - quantized
    error = error.square_() if metric == "mse" else error.abs_().pow_(2.4)
    return (error if counts is None else counts * error).sum(-1)


def _norm(values, counts=None):
    return (values**2 if counts is None else counts * values**2).sum()


def _search_range(counts, values, lo, hi, spec, metric):
    """``counts[k]`` values equal to ``values[k]`` (exact zeros, then bin centres)."""
    cand_lo, cand_hi = _candidate_ranges(lo, hi)
    keep = counts > 0
    counts, values = counts[keep], values[keep]
    quantized = _quantize_values(values, cand_lo, cand_hi, spec)  # [candidates, nonzero bins]
    score = _score(values, quantized, metric, counts, _norm(values, counts) if metric == "cosine" else None)
    best = int(torch.argmin(score))
    return cand_lo[best].float(), cand_hi[best].float()


def _search_range_on_values(values, lo, hi, spec, metric):
    """:func:`_search_range` with one count per value, one candidate at a time (the values may be
    millions): each value quantized in float32 as the quantizer does, the error summed in float64;
    the first (narrowest) best candidate kept, as there."""
    cand_lo, cand_hi = _candidate_ranges(lo, hi)
    per_tensor = QuantSpec(spec.bits, spec.symmetric, spec.signed)
    exact = values.double()
    norm = _norm(exact) if metric == "cosine" else None
    scores = []
    for c_lo, c_hi in zip(cand_lo.float(), cand_hi.float()):
        scale, zp = qparams_from_range(c_lo, c_hi, per_tensor)
        scores.append(_score(exact, fake_quantize_inference(values, scale, zp, per_tensor).double(), metric, norm=norm))
    best = int(torch.argmin(torch.stack(scores)))
    return cand_lo[best].float(), cand_hi[best].float()


def _histogram_percentile(hist, centers, lo, hi, pct: float = PERCENTILE):
    cdf = torch.cumsum(hist, 0) / hist.sum()
    lo_idx = int(torch.searchsorted(cdf, torch.tensor((100 - pct) / 100, dtype=cdf.dtype)))
    hi_idx = int(torch.searchsorted(cdf, torch.tensor(pct / 100, dtype=cdf.dtype)))
    hi_idx = min(hi_idx, len(hist) - 1)
    new_lo = torch.maximum(lo, centers[lo_idx].float()) if lo < 0 else lo
    return new_lo, torch.minimum(hi, centers[hi_idx].float())


def kl_threshold(abs_hist: np.ndarray, num_levels: int) -> int:
    """Entropy calibration (TensorRT, Migacz 2017; as implemented in MXNet): the number of bins
    ``i`` (threshold ``i * width``) minimising KL(P || Q). P is the first ``i`` bins with the
    tail folded into the last one; Q merges those ``i`` bins (tail excluded) into
    ``num_levels`` bins and spreads each back evenly over the bins where P is non-zero; both
    are smoothed so that empty bins do not make the divergence infinite."""
    nbins = len(abs_hist)
    if num_levels >= nbins:
        return nbins
    tail = np.concatenate([np.cumsum(abs_hist[::-1])[::-1], [0.0]])  # tail[i] = sum(abs_hist[i:])
    best_i, best_kl = nbins, math.inf
    for i in range(num_levels, nbins + 1):
        sliced = abs_hist[:i].astype(np.float64)
        p = sliced.copy()
        p[-1] += tail[i]
        nonzero = p != 0
        # split [0, i) into num_levels chunks, the last one taking the remainder
        merged = i // num_levels
        starts = np.arange(num_levels) * merged
        chunk_sum = np.add.reduceat(sliced, starts)
        chunk_nonzero = np.add.reduceat(nonzero.astype(np.float64), starts)
        chunk_id = np.minimum(np.arange(i) // merged, num_levels - 1)
        q = np.where(nonzero, chunk_sum[chunk_id] / np.maximum(chunk_nonzero[chunk_id], 1), 0.0)
        kl = _kl_divergence(_smooth(p), _smooth(q))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def _smooth(dist: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Move ``eps`` of mass into every empty bin, taken evenly from the others (MXNet)."""
    zero = dist == 0
    n_zero, n_nonzero = int(zero.sum()), int((~zero).sum())
    if n_nonzero == 0:
        return None
    return dist + eps * zero - (eps * n_zero / n_nonzero) * (~zero)


def _kl_divergence(p: np.ndarray | None, q: np.ndarray | None) -> float:
    if p is None or q is None or np.any(q <= 0) or np.any(p < 0):
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _kl_range(hist, width, spec, lo, hi):
    if lo < 0:  # fold the signed histogram onto |x|: bins mirror around the centre edge
        half = len(hist) // 2
        abs_hist = (hist[half:] + hist[:half].flip(0)).numpy()
        levels = 2 ** (spec.bits - 1)
    else:
        abs_hist = hist.numpy()
        levels = 2**spec.bits
    i = kl_threshold(abs_hist, levels)
    threshold = torch.tensor(i * width, dtype=torch.float32)
    new_hi = torch.minimum(hi, threshold)
    new_lo = torch.maximum(lo, -threshold) if lo < 0 else lo
    return new_lo, new_hi


@torch.no_grad()
def weight_range(weight: torch.Tensor, spec: QuantSpec, metric: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel ``(lo, hi)`` of a weight tensor, chosen by ``metric``."""
    check_metric(metric, WEIGHT_METRICS, "weight metric")
    assert spec.per_channel and spec.ch_axis == 0, "weights are quantized per output channel"
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    lo, hi = flat.min(1).values, flat.max(1).values
    if metric == "minmax":
        return lo, hi
    if metric == "lp2.4-2d":
        return _range_and_zero_point_search(flat, spec)
    if metric == "lp2.4":  # widest first, as the reference loops
        shrink, p = [1.0 - 0.01 * i for i in range(REFERENCE_WEIGHT_CANDIDATES)], 2.4
    else:
        shrink, p = [i / NUM_CANDIDATES for i in range(1, NUM_CANDIDATES + 1)], 2.0
    best_err = torch.full_like(lo, math.inf)
    best_lo, best_hi = lo.clone(), hi.clone()
    for t in shrink:
        c_lo, c_hi = lo * t, hi * t
        scale, zp = qparams_from_range(c_lo, c_hi, spec)
        diff = fake_quantize(flat, scale, zp, spec) - flat
        err = (diff ** 2 if p == 2.0 else diff.abs().pow(p)).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, c_lo, best_lo)
        best_hi = torch.where(better, c_hi, best_hi)
    return best_lo, best_hi


def _range_and_zero_point_search(flat: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The QDrop code's per-channel weight search (``MSEObserver.perform_2D_search``, and
    ``perform_1D_search`` for a tensor of one sign) on ``flat`` (``[channels, values]``): every
    candidate ``(lo, hi)``, in the reference's order, scored by ``sum |w - q(w)|^2.4`` per channel,
    the first best kept. Two details differ from the reference, without effect on ordinary
    channels: the sum where it takes the mean (the same order, unless dividing makes two sums
    equal), and the smallest scale (float32's epsilon where it floors at 1e-8)."""
    assert not spec.symmetric, "a search over zero points needs an asymmetric grid"
    lo = flat.min(1).values.clamp(max=0.0)
    hi = flat.max(1).values.clamp(min=0.0)

    def candidates():
        if bool((flat >= 0).all()) or bool((flat <= 0).all()):  # one sign: a threshold on that side
            positive, span = bool((flat >= 0).all()), torch.maximum(-lo, hi)
            for i in range(1, NUM_CANDIDATES + 1):
                t = span / NUM_CANDIDATES * i
                yield (torch.zeros_like(t), t) if positive else (-t, torch.zeros_like(t))
            return
        span = hi - lo
        for i in range(1, NUM_CANDIDATES + 1):
            width = span / NUM_CANDIDATES * i
            step = width / float(spec.qmax - spec.qmin)
            for zp in range(spec.qmin, spec.qmax + 1):
                yield -zp * step, width - zp * step

    best_err = torch.full_like(lo, math.inf)
    best_lo, best_hi = lo.clone(), hi.clone()
    for c_lo, c_hi in candidates():
        scale, zp = qparams_from_range(c_lo, c_hi, spec)
        err = (fake_quantize(flat, scale, zp, spec) - flat).abs().pow(2.4).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, c_lo, best_lo)
        best_hi = torch.where(better, c_hi, best_hi)
    return best_lo, best_hi
