"""One lane of the EfficientNet-Lite0 class-weighted BRECQ comparison (issue #7) on a GPU.

Lane k of L takes seeds k, k+L, ...; for each seed it runs plain BRECQ, then class-weighted
(DRO) BRECQ, so a lane stopped by its time limit leaves at most one unpaired trial. The
trials are exactly those of `ptq sweep --model efficientnet_lite0 --data imagenet-val10
--w-bits 6 --a-bits 6 --optimizer brecq --calib-size 1000 --iters 500 [--class-weighting dro]`.
"""
import argparse
import sys
import json
import time
from dataclasses import replace

import torch

from ptqlib.study.store import ResultsStore
from ptqlib.study.settings import trial_config
from ptqlib.study.sweep import context, run_sweep

EXPECTED = {"data_fp": "b3deab149ba0bbae-5a1218c3dbc538a8", "weights_fp": "74669a006ddf192e"}

p = argparse.ArgumentParser()
p.add_argument("--lane", type=int, required=True)
p.add_argument("--lanes", type=int, required=True)
p.add_argument("--store", required=True)
p.add_argument("--seeds", type=int, default=50)
p.add_argument("--extra", default="", help="extra settings as JSON, e.g. '{\"iters\": 2}' (smoke tests only)")
a = p.parse_args()
torch.set_num_threads(1)

common = dict(model="efficientnet_lite0", dataset="imagenet-val10", w_bits=6, a_bits=6, optimizer="brecq",
              calib_size=1000, iters=500, **json.loads(a.extra or "{}"))
plain = trial_config(**common)
dro = trial_config(**common, class_weighting="dro")
store = ResultsStore(a.store)
ctx = context(plain)
print(f"lane {a.lane}: device {ctx.device}, data_fp {ctx.data_fp}, weights_fp {ctx.weights_fp}, "
      f"fp_avg {ctx.fp_avg:.2f}", flush=True)
if not a.extra and (ctx.data_fp, ctx.weights_fp) != (EXPECTED["data_fp"], EXPECTED["weights_fp"]):
    print(f"lane {a.lane}: FINGERPRINT MISMATCH, expected {EXPECTED}", flush=True)
for seed in range(a.lane, a.seeds, a.lanes):
    for cfg in (plain, dro):
        t0 = time.perf_counter()
        counts = run_sweep([replace(cfg, seed=seed)], store, progress=False)
        print(f"lane {a.lane} seed {seed} {cfg.recon.class_weighting or 'none'}: {counts} "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
print(f"lane {a.lane}: done", file=sys.stderr, flush=True)
