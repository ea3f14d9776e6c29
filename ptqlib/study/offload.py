"""Reconstruction on another machine: a trial split into three steps so that only its
reconstruction runs where the accelerator is, without the data or the weights there.

1. :func:`export_jobs` (here): draws each trial's calibration set and sets its ranges exactly as
   :meth:`TrialContext.quantize` does before reconstructing, and writes a bundle: the calibration
   images (once per draw), the quantized model's state (:func:`quant_state`; what the trials
   share stored once) and the configuration.
2. :func:`run_job` (there): rebuilds the quantized model from its architecture and the state,
   reconstructs it on the device, and returns its state and the seconds it took.
3. :func:`import_results` (here): loads each returned state into the trial's calibrated model,
   evaluates it on the test split and stores the trial under its usual key, with the device the
   reconstruction ran on and the seconds of both machines.

The trial is the one :meth:`TrialContext.run` would run on that device; the test below checks
that on the CPU the three steps give the same predictions as one run.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ptqlib.data import save_atomic
from ptqlib.models import build_model
from ptqlib.quant.qmodel import QuantizedModel, load_quant_state, quant_state, quantize_model
from ptqlib.quant.recon import reconstruct
from ptqlib.study.settings import TrialConfig
from ptqlib.study.store import ResultsStore, row_key, trial_row
from ptqlib.study.trial import check_device, full_float32_on_cuda, synchronize

FORMAT = 1


def draw_key(cfg: TrialConfig) -> str:
    """Trials with equal keys draw the same calibration images."""
    return json.dumps({"calib": cfg.to_dict()["calib"], "seed": cfg.seed}, sort_keys=True)


def export_jobs(configs: list[TrialConfig], path: str | Path, device: str = "cpu") -> dict:
    """Write the bundle of ``configs`` (reconstruction trials of one model, dataset and weights)
    to ``path``; returns it."""
    from ptqlib.study.sweep import context

    if not configs:
        raise ValueError("no trials to export")
    if len({(c.model, c.dataset, c.weights) for c in configs}) != 1:
        raise ValueError("a bundle holds the trials of one model, dataset and weights")
    if any(c.recon is None for c in configs):
        bad = next(c for c in configs if c.recon is None)
        raise ValueError(f"trial {bad.key()} has no reconstruction (optimizer {bad.optimizer!r}): nothing to offload")
    ctx = context(configs[0], device)
    images, labels, jobs, base = {}, {}, [], None
    for cfg in configs:
        t0 = time.perf_counter()
        calib = ctx.calibration_set(cfg)
        state = quant_state(ctx.calibrated(cfg, calib.images))
        draw = draw_key(cfg)
        images.setdefault(draw, calib.images)
        labels.setdefault(draw, calib.labels)
        if base is None:
            base = state
        jobs.append({"config": cfg.to_dict(), "draw": draw, "seconds": time.perf_counter() - t0,
                     "state": {k: v for k, v in state.items() if not torch.equal(v, base[k])}})
    bundle = {"format": FORMAT, "model": ctx.model_name, "num_classes": ctx.test.num_classes,
              "in_channels": int(ctx.test.images.shape[1]), "data_fp": ctx.data_fp, "weights_fp": ctx.weights_fp,
              "base": base, "images": images, "labels": labels, "jobs": jobs}
    torch.save(bundle, path)
    return bundle


def load_bundle(path: str | Path) -> dict:
    bundle = torch.load(path, weights_only=True)
    if bundle.get("format") != FORMAT:
        raise ValueError(f"{path}: bundle format {bundle.get('format')!r}, this code reads {FORMAT}")
    return bundle


def rebuild(bundle: dict, job: dict, device: str) -> QuantizedModel:
    """The quantized model of ``job`` as :func:`export_jobs` left it, on ``device``."""
    cfg = TrialConfig.from_dict(job["config"])
    float_model = build_model(bundle["model"], None, num_classes=bundle["num_classes"],
                              in_channels=bundle["in_channels"], pretrained=False)
    qmodel = quantize_model(float_model, cfg.quant)
    load_quant_state(qmodel, bundle["base"] | job["state"])
    qmodel.set_quant_state(weights=True, acts=True)
    return qmodel.to(device)


def run_job(bundle: dict, index: int, device: str, progress: bool = False) -> dict:
    """Reconstruct job ``index`` of ``bundle`` on ``device``; returns what :func:`import_results` reads."""
    job = bundle["jobs"][index]
    cfg = TrialConfig.from_dict(job["config"])
    dev = check_device(device)
    if dev.type == "cuda":
        full_float32_on_cuda()  # as a trial on the device runs
    qmodel = rebuild(bundle, job, device)
    t0 = time.perf_counter()
    reports = reconstruct(qmodel, bundle["images"][job["draw"]], cfg.optimizer, cfg.recon, seed=cfg.seed,
                          labels=bundle["labels"][job["draw"]], progress=progress)
    synchronize(dev)
    seconds = time.perf_counter() - t0
    return {"config": job["config"], "device": dev.type, "seconds": seconds + job["seconds"],
            "recon_seconds": seconds, "state": quant_state(qmodel), "data_fp": bundle["data_fp"],
            "weights_fp": bundle["weights_fp"], "units": [dataclasses.asdict(r) for r in reports]}


def run_jobs(bundle: dict, out: str | Path, device: str, optimizer: str | None = None,
             deadline: float | None = None, progress: bool = False, log=print) -> list[dict]:
    """Run the jobs of ``bundle`` (only ``optimizer``'s, if given) that the results file ``out``
    does not hold yet, in order, rewriting ``out`` with every result after each job: a run
    stopped in the middle keeps its finished jobs and, started again, goes on with the others.
    With ``deadline`` (seconds since the epoch) a job starts only if the last one's duration, with
    a 10 % margin, fits before it. Returns every result in ``out``."""
    out = Path(out)
    results = torch.load(out, weights_only=True) if out.exists() else []
    finished = {json.dumps(r["config"], sort_keys=True) for r in results}
    last = 0.0
    for i, job in enumerate(bundle["jobs"]):
        if json.dumps(job["config"], sort_keys=True) in finished or \
                (optimizer is not None and job["config"]["optimizer"] != optimizer):
            continue
        if deadline is not None and last * 1.1 > deadline - time.time():
            log(f"job {i} not started: {deadline - time.time():.0f} s left, the last took {last:.0f} s")
            break
        t0 = time.time()
        results.append(run_job(bundle, i, device, progress=progress))
        last = time.time() - t0
        save_atomic(results, out)
        res = results[-1]
        log(f"job {i} ({res['config']['optimizer']}, seed {res['config']['seed']}) on {res['device']}: "
            f"{res['recon_seconds']:.1f} s, {sum(u['iters'] for u in res['units']) / res['recon_seconds']:.0f} "
            f"it/s over {len(res['units'])} units")
    return results


def import_results(results: list[dict], store: ResultsStore, device: str = "cpu") -> dict:
    """Evaluate each returned reconstruction here and add it to ``store`` (trials already there
    are left as they are). Returns counts."""
    from ptqlib.study.sweep import context

    done, added = store.existing_keys(), 0
    for res in results:
        cfg = TrialConfig.from_dict(res["config"])
        ctx = context(cfg, device)
        if (res["data_fp"], res["weights_fp"]) != (ctx.data_fp, ctx.weights_fp):
            raise ValueError(f"trial {cfg.key()} was reconstructed on other data or weights "
                             f"({res['data_fp']}, {res['weights_fp']}) than this machine's "
                             f"({ctx.data_fp}, {ctx.weights_fp})")
        store.add_fp(ctx)
        if row_key(cfg, ctx.weights_fp, ctx.data_fp) in done:
            continue
        calib = ctx.calibration_set(cfg)
        qmodel = ctx.calibrated(cfg, calib.images)
        load_quant_state(qmodel, res["state"])
        store.add_trial(trial_row(ctx.evaluate(cfg, qmodel, calib, res["seconds"]), ctx, device=res["device"]))
        added += 1
    return {"results": len(results), "added": added, "already_done": len(results) - added}
