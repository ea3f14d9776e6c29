"""Sweeps: a grid of factor levels x seeds, run as trials, written to the results store.

Only trials missing from the store are run, so an interrupted sweep resumes where it stopped.
With ``workers > 1`` (or a ``scheduler`` address) trials run on Dask distributed, a
``LocalCluster`` of single-threaded worker processes by default; results come back to this
process, the only one that writes the store.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Iterable

from ptqlib.study.store import ResultsStore, row_key, trial_row
from ptqlib.study.trial import TrialConfig, TrialContext, default_device

QUANT_FACTORS = ("w_bits", "a_bits", "preset", "metric", "weight_metric")
CALIB_FACTORS = {"calib_size": "size", "noise": "noise", "noise_kind": "noise_kind",
                 "bias_class": "bias_class", "bias_p": "bias_p", "sampling": "sampling"}
FACTORS = (*QUANT_FACTORS, *CALIB_FACTORS, "optimizer")


def with_factor(cfg: TrialConfig, name: str, value) -> TrialConfig:
    if name in QUANT_FACTORS:
        return replace(cfg, quant=replace(cfg.quant, **{name: value}))
    if name in CALIB_FACTORS:
        return replace(cfg, calib=replace(cfg.calib, **{CALIB_FACTORS[name]: value}))
    if name == "optimizer":
        return replace(cfg, optimizer=value)
    raise ValueError(f"unknown sweep factor {name!r}; choose from {', '.join(FACTORS)}")


def expand_grid(base: TrialConfig, factors: dict[str, list], seeds: Iterable[int]) -> list[TrialConfig]:
    """Every combination of the factor levels, for every seed (seed varies fastest)."""
    names = list(factors)
    configs = []
    for levels in itertools.product(*(factors[n] for n in names)):
        cfg = base
        for name, value in zip(names, levels):
            cfg = with_factor(cfg, name, value)
        configs.extend(replace(cfg, seed=s) for s in seeds)
    return configs


_CONTEXTS: dict[tuple, TrialContext] = {}


def _context(cfg: TrialConfig) -> TrialContext:
    key = (cfg.model, cfg.dataset, cfg.weights, default_device())
    if key not in _CONTEXTS:
        _CONTEXTS[key] = TrialContext(*key)
    return _CONTEXTS[key]


def run_one(cfg_dict: dict) -> dict:
    """Run one trial from its configuration dict; returns the store row (runs on any worker)."""
    cfg = TrialConfig.from_dict(cfg_dict)
    ctx = _context(cfg)
    return trial_row(ctx.run(cfg), ctx)


def run_sweep(configs: list[TrialConfig], store: ResultsStore, workers: int = 1, scheduler: str | None = None,
              progress: bool = True, fill_ece: bool = False) -> dict:
    """Run the trials of ``configs`` missing from ``store``; with ``fill_ece``, also rerun the
    stored ones that predate ECE to record it (see :meth:`ResultsStore.fill_ece`). Returns counts."""
    from tqdm.auto import tqdm

    for cfg in {(c.model, c.dataset, c.weights): c for c in configs}.values():
        ctx = _context(cfg)
        if fill_ece and ctx.device.type != "cpu":
            raise ValueError(f"fill_ece reruns stored CPU trials and keeps only exact reproductions, which "
                             f"device {str(ctx.device)!r} cannot give; run it on the CPU (--device cpu)")
        store.add_fp(ctx)  # also checks data and weights before any work starts
    done = store.existing_keys()
    keyed = {}
    for cfg in configs:
        ctx = _context(cfg)
        keyed.setdefault(row_key(cfg, ctx.weights_fp, ctx.data_fp), cfg)
    refill = store.keys_without_ece() & set(keyed) if fill_ece else set()
    todo = [cfg for key, cfg in keyed.items() if key not in done or key in refill]
    bar = tqdm(total=len(todo), desc="trials", unit="trial", disable=not progress, smoothing=0.1)

    def save(row: dict) -> None:
        if row["key"] in refill:
            store.fill_ece(row)
        else:
            store.add_trial(row)

    if workers <= 1 and scheduler is None:
        for cfg in todo:
            save(run_one(cfg.to_dict()))
            bar.update()
    else:
        _run_distributed(todo, save, workers, scheduler, bar)
    bar.close()
    counts = {"requested": len(keyed), "already_done": len(keyed) - len(todo) + len(refill), "ran": len(todo) - len(refill)}
    return counts | ({"ece_filled": len(refill)} if fill_ece else {})


def _run_distributed(todo: list[TrialConfig], save, workers: int, scheduler: str | None, bar) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None, env={"OMP_NUM_THREADS": "1"})
    client = Client(scheduler or cluster)
    try:
        futures = client.map(run_one, [c.to_dict() for c in todo], pure=False)
        for future in as_completed(futures):
            save(future.result())
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
