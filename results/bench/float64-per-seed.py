# Per seed: images where fake quantization, int8 and the reordered fake model predict differently from the
# float64 model (engine fake-float64), and int8 from fake; read from the store.
# .venv/bin/python results/bench/float64-per-seed.py
from dataclasses import replace
import numpy as np
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, factor_predictions
store = ResultsStore("results/trials.sqlite")
for m, d, w, a, pool in [("resnet56","cifar10-jpeg",4,4,None),("efficientnet_lite0","imagenet-val10",6,6,"train")]:
    cell = Cell(model=m, dataset=d, pool=pool, w_bits=w, a_bits=a, metric="mse", calib_size=256)
    lp = factor_predictions(store, cell, "engine", ["fake","int8","fake-reordered","fake-float64"], trials=2**31)
    ex = lp.seeds.get("fake-float64", [])
    for s in ex:
        p = {e: lp.preds[e][list(lp.seeds[e]).index(s)] for e in lp.preds if s in lp.seeds[e]}
        E = p["fake-float64"]
        print(m, "seed", s, "fake!=exact", int((p["fake"]!=E).sum()), "int8!=exact", int((p["int8"]!=E).sum()) if "int8" in p else None,
              "int8!=fake", int((p["int8"]!=p["fake"]).sum()) if "int8" in p else None,
              "reord!=exact", int((p["fake-reordered"]!=E).sum()) if "fake-reordered" in p else None)
