"""How far a reconstruction step is from this CPU's float32 arithmetic rate: the ceiling on any
speed-up that keeps float32 convolutions.

For ResNet-20 W4A4 in the reference variant (METHOD as its reference code runs it, ITERS
iterations per unit, 1,024 calibration images, seed 0, one thread), per unit: the floating-point
operations of one optimisation step's convolutions and matrix products, forward and backward
(``torch.utils.flop_counter.FlopCounterMode`` on the unit's first step, which counts only the
gradients the step needs), the CPU seconds of the unit's steps (``time.process_time``, so that
other processes on the cores do not count), and from the two the rate the step runs at. The
attainable rate is one thread's float32 matrix product (``torch.mm`` of 2048x2048 matrices, the
best of several, also in CPU seconds). A step cannot run faster than its products at that rate
however the rest is fused: ``ceiling`` = attainable rate / step rate bounds the speed-up of the
unit's step, and the last line bounds the whole reconstruction's. The counted first step's
overhead is in the CPU seconds (one step of ITERS), which overstates the ceiling by at most that.
Run: PTQ_DATA=... PYTHONPATH=. .venv/bin/python results/bench/recon-roofline.py METHOD ITERS
"""
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ptqlib.app.bench import reference_reconstruction_setup
from ptqlib.quant.recon import optimize, reconstruct

torch.set_num_threads(1)


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    """One thread's float32 ``torch.mm`` rate, FLOP per CPU second (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - t0)
    return 2 * n ** 3 / best


step_flops, cpu_seconds = [], []
eager_call, optimize_units = optimize._EagerSteps.__call__, optimize._optimize


def counted_step(self, step):
    if step == 0:
        with FlopCounterMode(display=False) as counter:
            rec = eager_call(self, step)
        step_flops.append(counter.get_total_flops())
        return rec
    return eager_call(self, step)


def timed_units(*args, **kwargs):
    t0 = time.process_time()
    optimize_units(*args, **kwargs)
    cpu_seconds.append(time.process_time() - t0)


optimize._EagerSteps.__call__, optimize._optimize = counted_step, timed_units

method, iters = sys.argv[1], int(sys.argv[2])
cfg, qmodel, images = reference_reconstruction_setup(method, iters)
peak_before = matmul_rate()
reports = [r for r in reconstruct(qmodel, images, method, cfg.recon, seed=cfg.seed, progress=False) if r.iters]
peak = max(peak_before, matmul_rate())
assert len(reports) == len(step_flops) == len(cpu_seconds)
print(f"{method}, reference variant, {iters} iterations per unit, torch {torch.__version__}, 1 thread")
print(f"attainable: torch.mm 2048x2048 float32 {peak / 1e9:.1f} GFLOP per CPU second "
      f"(before {peak_before / 1e9:.1f}, best of both)")
print(f"{'unit':<18}{'MFLOP/step':>11}{'CPU ms/step':>12}{'GFLOP/s':>9}{'ceiling':>9}")
total_flops = total_s = 0.0
for r, flops, s in zip(reports, step_flops, cpu_seconds):
    rate = flops * r.iters / s
    total_flops, total_s = total_flops + flops * r.iters, total_s + s
    print(f"{r.name:<18}{flops / 1e6:>11.1f}{s / r.iters * 1e3:>12.2f}{rate / 1e9:>9.1f}{peak / rate:>8.2f}x")
print(f"whole reconstruction: {total_flops / 1e9:.1f} GFLOP in {total_s:.1f} CPU s, {total_flops / total_s / 1e9:.1f} "
      f"GFLOP/s; ceiling {peak * total_s / total_flops:.2f}x (the products alone at the attainable rate: "
      f"{total_flops / peak:.1f} s)")
