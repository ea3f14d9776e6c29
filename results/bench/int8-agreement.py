"""Agreement of fake quantization and the int8 engine on stored cells (one seed each)."""
import json, sys, time
import torch
torch.set_num_threads(1)
from ptqlib.study.settings import TrialConfig
from ptqlib.study.trial import TrialContext
from ptqlib.quant.qmodel import QuantConfig
from ptqlib.study.calibset import build_calibration_set, CalibSpec
from ptqlib.quant.recon import default_recon
from ptqlib.metrics import predict
from ptqlib.quant.integer import to_integer, agreement

cells = [("resnet20", 2, 4, "grid", 256), ("resnet20", 6, 6, "grid", 256), ("resnet20", 4, 4, "qdrop", 1024),
         ("resnet32", 4, 4, "grid", 256), ("resnet56", 4, 4, "grid", 256)]
ctxs = {}  # one context per model
for model, w, a, opt, size in cells:
    ctx = ctxs.get(model) or ctxs.setdefault(model, TrialContext(model, "cifar10-jpeg", device="cpu"))
    recon = default_recon(model, 200) if opt != "grid" else None
    cfg = TrialConfig(model, "cifar10-jpeg", quant=QuantConfig(w, a), calib=CalibSpec(size), optimizer=opt, recon=recon)
    calib = build_calibration_set(ctx.pool, cfg.calib, cfg.seed)
    q = ctx.quantize(cfg, calib.images, calib.labels)
    t = time.perf_counter(); pf = predict(q, ctx.test); tf = time.perf_counter() - t
    t = time.perf_counter(); pi = predict(to_integer(q), ctx.test); ti = time.perf_counter() - t
    ag = agreement(pf, pi, ctx.test.labels, ctx.classes)
    row = {"model": model, "w_bits": w, "a_bits": a, "optimizer": opt, "iters": recon.iters if recon else None,
           "calib_size": size, "seed": 0, "agreement": ag["agreement"], "differing_images": ag["differing_images"],
           "max_class_diff": max(abs(v["diff"]) for v in ag["per_class"].values()),
           "fake_avg": (pf == ctx.test.labels).double().mean().item() * 100,
           "int8_avg": (pi == ctx.test.labels).double().mean().item() * 100, "fake_eval_s": round(tf, 2),
           "int8_eval_s": round(ti, 2)}
    print(json.dumps(row), flush=True)
