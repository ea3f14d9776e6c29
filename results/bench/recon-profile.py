"""Where a reconstruction's time goes: torch.profiler over ``reconstruct`` of ResNet-20 W4A4
(QDrop, joint variant, 60 iterations per unit, 256 calibration images, seed 0, one thread); the
operators by their own CPU time. Run: PTQ_DATA=... .venv/bin/python results/bench/recon-profile.py"""
import dataclasses

import torch
from torch.profiler import ProfilerActivity, profile

from ptqlib.quant.recon import default_recon, reconstruct
from ptqlib.study.calibset import build_calibration_set
from ptqlib.study.settings import trial_config
from ptqlib.study.trial import TrialContext

torch.set_num_threads(1)
cfg = trial_config(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=256, optimizer="qdrop")
cfg = dataclasses.replace(cfg, recon=default_recon("resnet20", iters=60))
ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, device="cpu")
images = build_calibration_set(ctx.pool, cfg.calib, cfg.seed).images
qmodel = ctx.calibrated(cfg, images)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    reconstruct(qmodel, images, "qdrop", cfg.recon, seed=cfg.seed)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
