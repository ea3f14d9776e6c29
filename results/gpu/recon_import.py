"""Evaluate the GPU's reconstructions here and add them to the store (run where the data is):

    PTQ_DATA=../shared/data python results/gpu/recon_import.py results/trials.sqlite OUT/*.pt
"""
import sys

import torch

from ptqlib.study.offload import import_results
from ptqlib.study.store import ResultsStore

store = ResultsStore(sys.argv[1])
results = [res for path in sys.argv[2:] for res in torch.load(path, weights_only=True)]
print(import_results(results, store))
for res in results:
    cfg = res["config"]
    print(cfg["optimizer"], cfg["seed"], cfg["recon"]["iters"], res["device"], f"{res['recon_seconds']:.0f} s")
