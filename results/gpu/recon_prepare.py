"""Write the bundle of reconstruction jobs for the GPU (run here, where the data is).

The jobs are the iteration curve's 20,000-iteration trials: ResNet-20 on CIFAR-10, W4A4,
1,024 calibration images, the reference variant of AdaRound, BRECQ (fp_weights=kept) and QDrop,
seeds 0-4 (the stored 500/2,000/5,000-iteration trials of the same cell have seeds 0-2 at least;
BRECQ's stored ones ran fp_weights=current). Each is the
trial of ``ptq sweep --model resnet20 --dataset cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size
1024 --optimizer M --variant reference --iters 20000 --seeds S``.

    PTQ_DATA=../shared/data python results/gpu/recon_prepare.py .gpu/recon-jobs.pt
"""
import json
import sqlite3
import sys
from dataclasses import replace

from ptqlib.quant.recon import default_recon
from ptqlib.study.offload import export_jobs
from ptqlib.study.settings import TrialConfig

ITERS, SEEDS, METHODS = 20_000, range(5), ("adaround", "brecq", "qdrop")
con = sqlite3.connect("results/trials.sqlite")
stored = {m: TrialConfig.from_dict(json.loads(c)) for m, c in con.execute(
    "SELECT optimizer, config FROM trials WHERE model = 'resnet20' AND variant = 'reference' AND iters = 5000 "
    "AND calib_size = 1024 AND w_bits = 4 AND a_bits = 4 AND seed = 0")}
assert set(stored) == set(METHODS), stored.keys()
configs = []
for seed in SEEDS:  # seed-major: the lanes take their jobs in this order
    for m in METHODS:
        # the stored cell's rule, but for BRECQ's float network: its stored trials predate fp_weights
        # (they ran "current"); these run the reference's ("kept", the default)
        rule = replace(default_recon("resnet20", 5000, "reference", m), fp_weights="current")
        assert stored[m].recon == rule, m
        configs.append(replace(stored[m], seed=seed, recon=default_recon("resnet20", ITERS, "reference", m)))
bundle = export_jobs(configs, sys.argv[1])
print(f"{len(bundle['jobs'])} jobs, {len(bundle['images'])} calibration draws -> {sys.argv[1]}")
for job in bundle["jobs"]:
    print(TrialConfig.from_dict(job["config"]).key(), job["config"]["optimizer"], job["config"]["seed"],
          job["config"]["recon"]["iters"], job["config"]["recon"]["act_iters"])
