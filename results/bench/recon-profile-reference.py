"""Where a reconstruction's time goes in the reference variant: torch.profiler over ``reconstruct``
of ResNet-20 W4A4 (METHOD as its reference code runs it, ITERS iterations per unit and a quarter
of that for BRECQ's activation pass, 1,024 calibration images, seed 0, one thread); the operators
by their own CPU time. Run: PTQ_DATA=... PYTHONPATH=. .venv/bin/python
results/bench/recon-profile-reference.py METHOD ITERS"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from ptqlib.app.bench import reference_reconstruction_setup
from ptqlib.quant.recon import reconstruct

torch.set_num_threads(1)
method, iters = sys.argv[1], int(sys.argv[2])
cfg, qmodel, images = reference_reconstruction_setup(method, iters)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    reports = reconstruct(qmodel, images, method, cfg.recon, seed=cfg.seed, progress=False)
print(" ".join(f"{r.name}: {r.iters_per_s:.1f} it/s;" for r in reports))
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
