"""Speed benchmark of one trial against the float model and against ``torch.ao``.

Everything is measured in one run, repetitions interleaved (FP eval, our trial, the same
trial's model on int8 kernels, the ``torch.ao`` trial, then again), and medians reported, so
that the ratios hold on a noisy shared machine. The int8 numbers (:mod:`ptqlib.quant.integer`):
``int8_eval_s`` the integer model's test-set evaluation, ``int8_trial_s`` a whole trial on it
(calibration, conversion, evaluation), ``int8_agreement`` the share of test images predicted
alike by fake quantization and the integer model. The ``torch.ao`` peer is the FX fake-quant
flow a user would otherwise pick:
``prepare_qat_fx`` with fake-quant modules whose observers match ours (per-channel affine
min/max weights, per-tensor affine histogram activations with L2 range search), observers on
during calibration, fake quantization on during evaluation.
"""
from __future__ import annotations

import statistics
import time

import torch

from ptqlib.quant.calibration import calibrate, calibrate_activations, calibrate_weights
from ptqlib.study.calibset import build_calibration_set
from ptqlib.quant.evaluation import check_engine
from ptqlib.quant.integer import NoIntegerPath, agreement, to_integer
from ptqlib.quant.recon import REFERENCE_ITERS, reconstruct
from ptqlib.data import to_float
from ptqlib.metrics import accuracy, predict
from ptqlib.quant.qmodel import quantize_model
from ptqlib.study.settings import TrialConfig
from ptqlib.study.trial import TrialContext


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def torch_ao_trial(model: torch.nn.Module, calib: torch.Tensor, w_bits: int, a_bits: int):
    """Calibrate ``model`` with ``torch.ao``'s FX fake-quant flow; returns the prepared model."""
    import copy

    from torch.ao.quantization import FakeQuantize, QConfig, QConfigMapping
    from torch.ao.quantization import disable_fake_quant, disable_observer, enable_fake_quant, enable_observer
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    qconfig = QConfig(
        activation=FakeQuantize.with_args(observer=HistogramObserver, quant_min=0, quant_max=2**a_bits - 1,
                                          dtype=torch.quint8, qscheme=torch.per_tensor_affine),
        weight=FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=-(2 ** (w_bits - 1)),
                                      quant_max=2 ** (w_bits - 1) - 1, dtype=torch.qint8,
                                      qscheme=torch.per_channel_affine, ch_axis=0))
    prepared = prepare_qat_fx(copy.deepcopy(model).train(), QConfigMapping().set_global(qconfig),
                              example_inputs=(to_float(calib[:1]),))
    prepared.eval()
    prepared.apply(enable_observer)
    prepared.apply(disable_fake_quant)
    with torch.no_grad():
        for start in range(0, len(calib), 128):
            prepared(to_float(calib[start:start + 128]))
    prepared.apply(disable_observer)
    prepared.apply(enable_fake_quant)
    return prepared


def run_bench(cfg: TrialConfig, reps: int = 3, with_torch_ao: bool = True, log=lambda *_: None) -> dict:
    ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, device="cpu")  # torch.ao runs on the CPU
    calib = build_calibration_set(ctx.pool, cfg.calib, cfg.seed).images
    times: dict[str, list[float]] = {k: [] for k in ("fp_eval_s", "calib_s", "quant_eval_s", "int8_convert_s",
                                                     "int8_eval_s", "torch_ao_calib_s", "torch_ao_eval_s")}
    acc, int8 = {}, {}
    try:
        check_engine("int8", cfg.model)
    except NoIntegerPath as exc:
        int8["int8_skipped"] = str(exc)
    for rep in range(reps):
        log(f"repetition {rep + 1}/{reps}")
        _, t = _timed(lambda: predict(ctx.model, ctx.test))
        times["fp_eval_s"].append(t)
        qmodel, t = _timed(lambda: calibrate(quantize_model(ctx.model, cfg.quant), calib))
        times["calib_s"].append(t)
        preds, t = _timed(lambda: predict(qmodel, ctx.test))
        times["quant_eval_s"].append(t)
        acc["ours_avg"] = accuracy(preds, ctx.test.labels)
        if "int8_skipped" not in int8:
            try:
                imodel, t = _timed(lambda: to_integer(qmodel))
            except NoIntegerPath as exc:
                int8["int8_skipped"] = str(exc)
            else:
                times["int8_convert_s"].append(t)
                int_preds, t = _timed(lambda: predict(imodel, ctx.test))
                times["int8_eval_s"].append(t)
                acc["int8_avg"] = accuracy(int_preds, ctx.test.labels)
                agree = agreement(preds, int_preds, ctx.test.labels, ctx.classes)
                int8.update(int8_agreement=round(agree["agreement"], 5),
                            int8_differing_images=agree["differing_images"],
                            int8_max_class_diff=round(max(abs(v["diff"]) for v in agree["per_class"].values()), 2))
        if with_torch_ao:
            ao_model, t = _timed(lambda: torch_ao_trial(ctx.model, calib, cfg.quant.w_bits, cfg.quant.a_bits))
            times["torch_ao_calib_s"].append(t)
            preds, t = _timed(lambda: predict(ao_model, ctx.test))
            times["torch_ao_eval_s"].append(t)
            acc["torch_ao_avg"] = accuracy(preds, ctx.test.labels)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    out = {"model": cfg.model, "dataset": cfg.dataset, "w_bits": cfg.quant.w_bits, "a_bits": cfg.quant.a_bits,
           "metric": cfg.quant.metric, "calib_size": cfg.calib.size, "test_images": len(ctx.test),
           "reps": reps, "threads": torch.get_num_threads(), **{k: round(v, 3) for k, v in med.items()}}
    out["trial_s"] = round(med["calib_s"] + med["quant_eval_s"], 3)
    out["quant_eval_over_fp_eval"] = round(med["quant_eval_s"] / med["fp_eval_s"], 3)
    out["calib_share_of_trial"] = round(med["calib_s"] / out["trial_s"], 3)
    out["trials_per_hour"] = round(3600 / out["trial_s"], 1)
    out["fp_eval_floor_trials_per_hour"] = round(3600 / med["fp_eval_s"], 1)  # a trial can't beat one FP pass
    if "int8_eval_s" in med:
        out["int8_trial_s"] = round(med["calib_s"] + med["int8_convert_s"] + med["int8_eval_s"], 3)
        out["int8_eval_over_fp_eval"] = round(med["int8_eval_s"] / med["fp_eval_s"], 3)
        out["int8_trial_over_fp_eval"] = round(out["int8_trial_s"] / med["fp_eval_s"], 3)
    out.update(int8)
    if with_torch_ao:
        out["torch_ao_trial_s"] = round(med["torch_ao_calib_s"] + med["torch_ao_eval_s"], 3)
        out["torch_ao_trial_over_ours"] = round(out["torch_ao_trial_s"] / out["trial_s"], 3)
    out["fp_avg"] = round(ctx.fp_avg, 2)
    out.update({k: round(v, 2) for k, v in acc.items()})
    return out


def run_recon_bench(cfg: TrialConfig, log=lambda *_: None) -> dict:
    """Time one reconstruction trial: iterations per second of every unit, the trial's total,
    and the total projected to the reference's 20 000 iterations per unit (reconstruction time
    scales linearly with the iterations; the rest does not change)."""
    assert cfg.recon is not None, "a reconstruction optimizer is needed"
    ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, device="cpu")
    images = build_calibration_set(ctx.pool, cfg.calib, cfg.seed).images
    t0 = time.perf_counter()
    qmodel = quantize_model(ctx.model, cfg.quant)
    calibrate_weights(qmodel)
    calibrate_activations(qmodel, images[:cfg.recon.act_init_size], search=cfg.recon.act_search)
    qmodel.set_quant_state(weights=True, acts=True)
    t1 = time.perf_counter()
    reports = reconstruct(qmodel, images, cfg.optimizer, cfg.recon, seed=cfg.seed)
    t2 = time.perf_counter()
    preds = predict(qmodel, ctx.test)
    t3 = time.perf_counter()
    recon_s = sum(r.seconds for r in reports)
    other_s = (t3 - t0) - recon_s
    log(f"{cfg.optimizer}: {len(reports)} units, {recon_s:.1f} s of reconstruction")
    return {"model": cfg.model, "dataset": cfg.dataset, "optimizer": cfg.optimizer, "variant": cfg.recon.variant,
            "w_bits": cfg.quant.w_bits,
            "a_bits": cfg.quant.a_bits, "calib_size": cfg.calib.size, "iters": cfg.recon.iters,
            "threads": torch.get_num_threads(),
            "units": [{"unit": r.name, "layers": r.layers, "iters_per_s": round(r.iters_per_s, 1),
                       "grid_loss": round(r.grid_loss, 4), "recon_loss": round(r.recon_loss, 4)} for r in reports],
            "init_s": round(t1 - t0, 2), "reconstruction_s": round(t2 - t1, 2), "eval_s": round(t3 - t2, 2),
            "trial_s": round(t3 - t0, 2),
            "projected_trial_s_at_20000_iters": round(other_s + recon_s * REFERENCE_ITERS / cfg.recon.iters, 1),
            "fp_avg": round(ctx.fp_avg, 2), "avg": round(accuracy(preds, ctx.test.labels), 2)}


def reference_reconstruction_setup(method: str, iters: int, model: str = "resnet20", dataset: str = "cifar10-jpeg",
                                   bits: int = 4, calib_size: int = 1024, seed: int = 0, weights: str | None = None):
    """What the reconstruction benchmarks under ``results/bench/`` time: one trial of ``method``
    in the reference variant at W``bits``A``bits`` with ``iters`` iterations per unit (and a
    quarter of that for BRECQ's activation pass, as at 20,000), calibrated and ready for
    :func:`~ptqlib.quant.recon.reconstruct`. Returns ``(config, quantized model, calibration
    images)``."""
    import dataclasses

    from ptqlib.study.settings import trial_config

    cfg = trial_config(model=model, dataset=dataset, w_bits=bits, a_bits=bits, calib_size=calib_size,
                       optimizer=method, variant="reference", seed=seed, weights=weights)
    cfg = dataclasses.replace(cfg, recon=dataclasses.replace(cfg.recon, iters=iters, act_iters=max(iters // 4, 1)))
    ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, device="cpu")
    images = build_calibration_set(ctx.pool, cfg.calib, cfg.seed).images
    return cfg, ctx.calibrated(cfg, images), images
