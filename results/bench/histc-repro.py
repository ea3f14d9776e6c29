"""Rerun stored grid trials and compare their per-image predictions with the store's (after the
observers' histogram moved from torch.histc to ptqlib.quant.range_estimators.histc). Prints one
line per case; the last argument names the run (its predictions go to /tmp/preds-MODEL-NAME.bin,
so that two checkouts can be compared with cmp).

    THREADS=1 PTQ_DATA=... python results/bench/histc-repro.py resnet20 efficientnet_lite1 new
"""
import os
import sqlite3
import sys

import torch

from ptqlib.study.settings import row_key, trial_config
from ptqlib.study.sweep import context, run_one

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
CASES = [dict(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, metric="mse", calib_size=256, seed=0),
         dict(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, metric="kl", calib_size=256, seed=1),
         dict(model="efficientnet_lite1", dataset="imagenet-val10", w_bits=6, a_bits=6, metric="mse", calib_size=256,
              seed=3)]
con = sqlite3.connect("results/trials.sqlite")
for given in (c for c in CASES if c["model"] in sys.argv[1:-1]):
    cfg = trial_config(**given)
    ctx = context(cfg, "cpu")
    stored = con.execute("select preds, avg from trials where key=?",
                         (row_key(cfg, ctx.weights_fp, ctx.data_fp),)).fetchone()
    row = run_one(cfg.to_dict(), "cpu")
    print(given["model"], given["metric"], f"seed {given['seed']}: predictions as stored: {row['preds'] == stored[0]}, "
          f"avg {row['avg']:.2f} (stored {stored[1]:.2f}), calib_s {row['calib_s']:.1f}", flush=True)
    with open(f"/tmp/preds-{given['model']}-{sys.argv[-1]}.bin", "wb") as f:
        f.write(row["preds"])
