"""Sweeps: a grid of factor levels x seeds, run as trials, written to the results store.

Only trials missing from the store are run, so an interrupted sweep resumes where it stopped.
With ``workers > 1`` (or a ``scheduler`` address) trials run on Dask distributed, a
``LocalCluster`` of single-threaded worker processes by default; results come back to this
process, the only one that writes the store.
"""
from __future__ import annotations

import itertools
from typing import Iterable

from ptqlib.models import build_model
from ptqlib.quant.integer import check_widths
from ptqlib.quant.qmodel import quantize_model
from ptqlib.quant.recon import check_last_input
from ptqlib.study.store import ResultsStore, row_key, trial_row
from ptqlib.study import settings
from ptqlib.study.settings import TrialConfig, int8_input_bits
from ptqlib.study.trial import TrialContext, check_device, default_device, forget_checkpoint

def expand_grid(base: TrialConfig | dict, factors: dict[str, list], seeds: Iterable[int]) -> list[TrialConfig]:
    """Every combination of the factor levels, for every seed (seed varies fastest). ``base`` is a
    trial or flat setting values; flat values keep settings that ``base``'s own trial leaves out
    (the iterations of a grid-search base whose optimizer is a factor)."""
    unknown = set(factors) - set(settings.FACTORS)
    if unknown:
        raise ValueError(f"unknown sweep factor {sorted(unknown)[0]!r}; choose from {', '.join(settings.FACTORS)}")
    flat = settings.values(base) if isinstance(base, TrialConfig) else dict(base)
    names = list(factors)
    return [settings.trial_config(**{**flat, **dict(zip(names, levels)), "seed": s})
            for levels in itertools.product(*(factors[n] for n in names)) for s in seeds]


_CONTEXTS: dict[tuple, TrialContext] = {}


def context(cfg: TrialConfig, device: str | None = None) -> TrialContext:
    """The trial context of ``cfg``'s model, dataset and weights on ``device`` (default: :func:`default_device`),
    made once per process."""
    key = (cfg.model, cfg.dataset, cfg.weights, device or default_device())
    if key not in _CONTEXTS:
        _CONTEXTS[key] = TrialContext(*key)
    return _CONTEXTS[key]


def run_one(cfg_dict: dict, device: str | None = None) -> dict:
    """Run one trial from its configuration dict; returns the store row (runs on any worker). A
    reconstruction's finished state stays checkpointed until the row is stored (see ``save`` in
    :func:`run_sweep`), so a run stopped after the reconstruction does not lose it."""
    cfg = TrialConfig.from_dict(cfg_dict)
    ctx = context(cfg, device)
    return trial_row(ctx.run(cfg, keep_checkpoint=True), ctx)


def run_sweep(configs: list[TrialConfig], store: ResultsStore, workers: int = 1, scheduler: str | None = None,
              progress: bool = True, fill_ece: bool = False, device: str | None = None) -> dict:
    """Run the trials of ``configs`` missing from ``store``; with ``fill_ece``, also rerun the
    stored ones that predate ECE to record it (see :meth:`ResultsStore.fill_ece`). Trials run on
    ``device`` (default: :func:`default_device`). Returns counts."""
    from ptqlib.progress import progress_bar

    # what the configurations alone decide is checked before any data, weights or float pass
    dev = check_device(device or default_device())
    if fill_ece and dev.type != "cpu":
        raise ValueError(f"fill_ece reruns stored CPU trials and keeps only exact reproductions, which "
                         f"device {str(dev)!r} cannot give; run it on the CPU (--device cpu)")
    for cfg in {(c.model, c.quant): c for c in configs
                if c.recon is not None and c.recon.last_input != "ours"}.values():
        # the check reads the architecture only, so an untrained model of the same name serves
        check_last_input(quantize_model(build_model(cfg.model, pretrained=False), cfg.quant), cfg.recon)
    for cfg in {(c.model, c.dataset, c.weights): c for c in configs}.values():
        store.add_fp(context(cfg, device))  # also checks data and weights before any work starts
    done = store.existing_keys()
    keyed = {}
    for cfg in configs:
        ctx = context(cfg, device)
        keyed.setdefault(row_key(cfg, ctx.weights_fp, ctx.data_fp), cfg)
    refill = store.keys_without_ece() & set(keyed) if fill_ece else set()
    todo = [cfg for key, cfg in keyed.items() if key not in done or key in refill]
    if scheduler is None:  # this CPU's int8 kernels run the trials (a scheduler's workers check their own)
        for w_bits, a_bits in sorted({(c.quant.w_bits, int8_input_bits(c)) for c in todo if c.engine == "int8"}):
            check_widths(w_bits, a_bits)
    bar = progress_bar(total=len(todo), desc="trials", unit="trial", disable=not progress, smoothing=0.1)

    def save(row: dict) -> None:
        if row["key"] in refill:
            store.fill_ece(row)
        else:
            store.add_trial(row)
        forget_checkpoint(row["key"])  # the worker's, when it shares this machine's cache

    if workers <= 1 and scheduler is None:
        for cfg in todo:
            save(run_one(cfg.to_dict(), device))
            bar.update()
    else:
        _run_distributed(todo, save, workers, scheduler, bar, device)
    bar.close()
    counts = {"requested": len(keyed), "already_done": len(keyed) - len(todo) + len(refill), "ran": len(todo) - len(refill)}
    return counts | ({"ece_filled": len(refill)} if fill_ece else {})


def _run_distributed(todo: list[TrialConfig], save, workers: int, scheduler: str | None, bar,
                     device: str | None) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None, env={"OMP_NUM_THREADS": "1"})
    client = Client(scheduler or cluster)
    try:
        futures = client.map(run_one, [c.to_dict() for c in todo], device=device, pure=False)
        for future in as_completed(futures):
            save(future.result())
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
