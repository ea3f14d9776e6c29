"""Where a reconstruction's time goes in the reference variant: torch.profiler over ``reconstruct``
of ResNet-20 W4A4 (METHOD as its reference code runs it, ITERS iterations per unit and a quarter
of that for BRECQ's activation pass, 1,024 calibration images, seed 0, one thread); the operators
by their own CPU time. Run: PTQ_DATA=... PYTHONPATH=. .venv/bin/python
results/bench/recon-profile-reference.py METHOD ITERS"""
import dataclasses
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from ptqlib.quant.recon import reconstruct
from ptqlib.study.calibset import build_calibration_set
from ptqlib.study.settings import trial_config
from ptqlib.study.trial import TrialContext

torch.set_num_threads(1)
method, iters = sys.argv[1], int(sys.argv[2])
cfg = trial_config(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=1024, optimizer=method,
                   variant="reference")
cfg = dataclasses.replace(cfg, recon=dataclasses.replace(cfg.recon, iters=iters, act_iters=max(iters // 4, 1)))
ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, device="cpu")
images = build_calibration_set(ctx.pool, cfg.calib, cfg.seed).images
qmodel = ctx.calibrated(cfg, images)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    reports = reconstruct(qmodel, images, method, cfg.recon, seed=cfg.seed, progress=False)
print(" ".join(f"{r.name}: {r.iters_per_s:.1f} it/s;" for r in reports))
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
