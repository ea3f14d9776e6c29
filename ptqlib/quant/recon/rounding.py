"""AdaRound's learned rounding (Nagel et al. 2020) and the annealing of its regulariser."""
from __future__ import annotations

import torch
from torch import nn

from ptqlib.quant.quantizer import FakeQuantizer, broadcast
from ptqlib.quant.recon.config import ReconConfig

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h(V) = clip(sigmoid(V)(zeta - gamma) + gamma, 0, 1)


class AdaRound(nn.Module):
    """Learned rounding of one weight tensor under a fixed per-channel quantizer.

    What stays constant while ``V`` is learned is computed once: ``floor(w/s) + z``, the
    broadcast scale and zero point. The module therefore belongs to the weight and quantizer
    it was made with."""

    def __init__(self, weight: torch.Tensor, quantizer: FakeQuantizer) -> None:
        super().__init__()
        spec = quantizer.spec
        scale = broadcast(quantizer.scale, weight, 0).detach()
        zp = broadcast(quantizer.zero_point, weight, 0).to(weight.dtype)
        scaled = weight.detach() * (1.0 / scale)
        floor = torch.floor(scaled)
        rest = scaled - floor  # in [0, 1): round-to-nearest is h = (rest >= 0.5)
        self.logits = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(V) = rest
        self.register_buffer("base", floor + zp)  # floor(w/s) + z: an integer, exact in float
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zp)
        self.qmin, self.qmax = spec.qmin, spec.qmax
        self.hard = False

    def h(self) -> torch.Tensor:
        if self.hard:
            return (self.logits >= 0).to(self.logits.dtype)
        return torch.clamp(torch.sigmoid(self.logits) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def forward(self) -> torch.Tensor:
        """The fake-quantized weight ``(clamp(floor(w/s) + h(V) + z, qmin, qmax) - z) * s``."""
        w_int = torch.clamp(self.base + self.h(), self.qmin, self.qmax)
        return (w_int - self.zero_point) * self.scale


def beta_at(step: int, cfg: ReconConfig) -> tuple[float, bool]:
    """The annealed ``beta`` and whether the regulariser is on (after the warm-up)."""
    start = int(cfg.warmup * cfg.iters)
    if step < start:
        return cfg.beta_start, False
    progress = (step - start) / max(1, cfg.iters - start)
    return cfg.beta_end + (cfg.beta_start - cfg.beta_end) * max(0.0, 1 - progress), True
