"""Run the trials the open cells still lack, in priority order, into a side store (CPU lanes).

Three queues:

- ``recon``: the iteration curve's trials that the optimizer page's count decision still reads,
  as its parameters declare them (ResNet-20, CIFAR-10, W4A4, 1,024 calibration images, the
  reference variant; AdaRound, BRECQ, QDrop) and as the main store stands when the lane starts:
  seeds 0-9 of each count, from 20,000 iterations per unit down (the order in which the page's
  fixed-sequence test reads them), leaving out the counts no outcome of which can change the
  study-wide count (below a failed count, or where a failure would leave the method at or below a
  count another method has decided on). The counts the decision tests whatever happens come
  first, method by method in the page's order, then those it tests only if the counts above
  pass. So each method's count is decided as soon as its own trials are in, and the trials that
  its own outcomes may still make unneeded wait (another method's decision can make any of them
  unneeded, once a lane starts after it).
- ``rerun``: once the optimizer page has a study-wide count, the study's reconstruction cells at
  that count in the same configuration (its parameters: the page's cell with ``reference_trials``
  seeds, or ``rerun_trials`` where those would take more than ``rerun_budget_hours``, and each
  of ``rerun_cells`` with ``rerun_trials``), grid search beside each method on the same seeds;
  empty until the count is decided. In stages, ``MIN_TRIALS`` (the fewest seeds a claim-4 verdict
  reads) and ``rerun_trials`` in increasing order: every cell gets the seeds below the first
  before any cell goes further, then those below the second, then the page's cell the rest: new
  cells get verdicts before the cells that have them get narrower intervals.
- ``family``: every cell of the EfficientNet-Lite family page, as its parameters declare them
  (the default W6A6 MSE cell with 256 images of the 1,000-class pool, sizes 1/32/1,024, the
  other three metrics, W8A8, W4A8, noise 0.1 and 0.5): up to seed 19 of Lite1 and Lite2, then
  up to seed 49 of Lite0.

Each trial is the one ``ptq sweep`` runs for the same settings and seed, so its key matches.
Lane ``--lane`` of ``--lanes`` takes every ``lanes``-th trial of the whole queue (so lanes started
at different times still share it out) and runs those not yet in either store; the ``recon`` and
``rerun`` queues, which depend on the main store when a lane starts, are shared by claims only. With ``--claims DIR``
instead (and without ``--lane``), every lane walks the whole queue and takes the next trial no
other lane holds: a claim is an exclusive lock (``flock``) on the file ``DIR/<trial key>``, held
while the trial runs and released when its process ends however it ends, and the file says
``done`` once the trial is stored. A trial whose lane died is free again (a reconstruction trial
resumes from its checkpoints), and a lane looks once more at the trials it found held when it
reaches the end of the queue. So lanes share the queue in its order, whatever each trial costs.
Give the lanes the same ``--claims`` folder for one queue; the merge leaves out any trial two
side stores both hold. With ``--until HH:MM`` (the next such time) a trial is started only if
the longest time of the last ``RECENT_TRIALS`` CPU trials of its setting stored in the main store
and the lane's side store says it ends before then (the most recent, since how many lanes share the
cores moves a trial's time far more than its seed does), less what the units already in its
reconstruction checkpoint took; a setting without stored CPU trials is started (nothing to
estimate from). Times stored from a faster machine make the estimate short: give such a lane an
earlier ``--until``. A grid trial cut off mid-way is lost; a reconstruction trial
resumes from its last finished unit (checkpoints under ``PTQ_CACHE``, default
``~/.cache/ptqlib``) while that folder lasts.

    PTQ_DATA=../shared/data python results/missing_trials.py recon --store side.sqlite --until 23:30
    ptq results merge --from side.sqlite
"""
import argparse
import datetime as dt
import fcntl
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO

import pandas as pd
import torch

from ptqlib.analysis.aggregate import decision_backlog
from ptqlib.analysis.cells import iteration_curve, rerun_seeds
from ptqlib.analysis.verdicts import MIN_TRIALS, rerun_designs, staged_trials
from ptqlib.app.report import optimizer_study, section_parameters, study_setup
from ptqlib.quant.recon import checkpoint_seconds
from ptqlib.study.settings import columns, defaults, row_key, trial_config
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import context, run_sweep
from ptqlib.study.trial import checkpoint_file

# trials each model's family cells should reach, filled in this order (seed by seed, every cell)
# the stored trials of a setting whose longest time decides whether a trial fits before --until
RECENT_TRIALS = 3
FAMILY_SEEDS = {"efficientnet_lite1": 20, "efficientnet_lite2": 20, "efficientnet_lite0": 50}


def recon_queue(store: ResultsStore) -> list[dict]:
    """The iteration curve's trials that the optimizer page's count decision still reads, as its
    parameters declare it (:func:`ptqlib.analysis.aggregate.decision_backlog` on ``store``): first
    the counts the decision tests whatever happens, then those it tests only if the counts above
    pass; within each, method by method
    in the page's order, each count from the target down, seeds 0 to ``curve_trials - 1`` (those
    stored are left out later). A count no outcome of which can change the study-wide count is
    not in it."""
    page = section_parameters("optimizer")
    cell, methods = study_setup(page)
    curve = iteration_curve(store, cell, methods, page["curve_iters"], page["curve_trials"])
    backlog = decision_backlog(curve, page["curve_iters"], page["target_iters"], page["curve_trials"],
                               page["choice_margin"], page["choice_alpha"], methods)
    ordered = pd.concat([backlog[backlog["needed"].astype(bool)], backlog[~backlog["needed"].astype(bool)]])
    return [dict(asdict(cell), optimizer=r.method, iters=int(r.iters), seed=seed)
            for r in ordered.itertuples() for seed in range(page["curve_trials"])]


def rerun_queue(store: ResultsStore) -> list[dict]:
    """The trials of the optimizer page's claim-4 tables at its study-wide count (its parameters,
    :func:`ptqlib.analysis.verdicts.rerun_designs`), every cell to ``MIN_TRIALS`` seeds and to
    ``rerun_trials`` in turn (the smaller first), then the rest
    (:func:`ptqlib.analysis.verdicts.staged_trials`); within that
    cell by cell and seed by seed: grid search, then every method of the study's curve. Empty
    while there is no count."""
    page = section_parameters("optimizer")
    count, line, curve, cell, methods = optimizer_study(store)
    print(line, flush=True)
    if not count == count:
        return []
    seeds, why = rerun_seeds(curve, int(count), methods, page["reference_trials"], page["rerun_trials"],
                             page["rerun_budget_hours"])
    print(f"the page's cell: {why}", flush=True)
    designs = rerun_designs(cell, methods, int(count), page["rerun_cells"], seeds, page["rerun_trials"])
    return staged_trials([design for _, design in designs], tuple(sorted({MIN_TRIALS, page["rerun_trials"]})))


def family_queue() -> list[dict]:
    """The family page's cells (its parameters: the default cell, each factor's other levels and
    the mixed bit-widths), seed by seed up to :data:`FAMILY_SEEDS`."""
    page = section_parameters("family")
    cell = {k: page[k] for k in ("dataset", "w_bits", "a_bits", "metric", "calib_size", "pool", "weights")}
    levels = [{}]
    for name, values in page["factors"].items():
        default = page.get(name, defaults()[name])
        for value in values:
            if value != default:  # bit-width levels are WnAn
                levels.append({"w_bits": value, "a_bits": value} if name == "w_bits" else {name: value})
    levels += [{"w_bits": w, "a_bits": a} for w, a in page["mixed_bits"]]
    return [dict(cell, **level, model=model, seed=seed)
            for model, stop in FAMILY_SEEDS.items() for seed in range(stop) for level in levels]


def claim(folder: Path, key: str) -> IO | None:
    """Hold the trial ``key``: the open claim file, locked for as long as it stays open, or None
    when another process holds it or it is done."""
    f = open(folder / key, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    if f.read().strip() == "done":
        f.close()
        return None
    return f


def finish(held: IO) -> None:
    """Mark a held claim done and release it."""
    held.seek(0)
    held.truncate()
    held.write("done")
    held.close()


def expected_seconds(cfg, stores, recent: int = RECENT_TRIALS) -> float:
    """What a trial of ``cfg``'s setting is expected to take on this CPU: the longest seconds
    (calibration and evaluation) of the ``recent`` most recently stored CPU trials of the same
    setting (any seed) in ``stores``, or 0 where none is stored (nothing to estimate from). The
    most recent ones, because a trial's time depends mostly on how many lanes share the cores,
    which changes between runs far more than between seeds; a lane's own side store is among
    ``stores`` so that its estimate follows the load it runs under once it has stored a trial.
    The longest rather than a middle one because the two errors cost unequally: a trial that
    runs past ``--until`` is stopped, and keeps only its finished units, and those only while the
    checkpoint cache lasts (a grid trial keeps nothing), while an estimate too long leaves the
    lane idle for less than one trial."""
    if recent < 1:
        raise ValueError(f"recent must be at least 1, got {recent}")
    where = {k: v for k, v in columns(cfg).items() if k != "seed"}
    rows = pd.concat([store.trials(**where) for store in stores], ignore_index=True)
    cpu = rows["device"].isna() | (rows["device"] == "cpu")
    rows = rows[cpu & rows["created"].notna()].sort_values("created")
    seconds = (rows["calib_s"] + rows["eval_s"]).dropna().tail(recent)
    return float(seconds.max()) if len(seconds) else 0.0


def seconds_left(cfg, key: str, stores) -> float:
    """What the trial ``cfg`` (row key ``key``) is expected to take from here: its setting's
    :func:`expected_seconds`, less what the units of its reconstruction checkpoint took (a
    stopped trial resumes after them), at least 0."""
    return max(expected_seconds(cfg, stores) - checkpoint_seconds(checkpoint_file(key)), 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("queue", choices=["recon", "rerun", "family"])
    p.add_argument("--store", required=True, help="side store the trials are written to")
    p.add_argument("--main", default="results/trials.sqlite", help="store whose trials are left out")
    p.add_argument("--lane", type=int, default=0)
    p.add_argument("--lanes", type=int, default=1)
    p.add_argument("--until", default=None, help="HH:MM (local time): start no trial expected to end later")
    p.add_argument("--claims", default=None, help="folder of claims shared by lanes that walk the whole queue")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="only the queue's trials of these models (e.g. leave out those a lane cannot finish)")
    p.add_argument("--list", action="store_true", help="print the missing trials and stop")
    a = p.parse_args()
    if not 0 <= a.lane < a.lanes:
        sys.exit(f"--lane must be in 0 .. {a.lanes - 1}, got {a.lane}")
    if a.claims and (a.lane, a.lanes) != (0, 1):
        sys.exit("--claims shares the whole queue between lanes: give it without --lane/--lanes")
    if a.queue in ("recon", "rerun") and a.lanes != 1:
        sys.exit(f"the {a.queue} queue depends on the main store when a lane starts, so lanes cannot split it "
                 f"by position (--lanes {a.lanes}): share it with --claims DIR")
    deadline = None
    if a.until:
        try:
            hour, minute = (int(x) for x in a.until.split(":"))
            dt.time(hour, minute)
        except ValueError:
            sys.exit(f"--until must be a time HH:MM (00:00 to 23:59), got {a.until!r}")
        deadline = dt.datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
        if deadline < dt.datetime.now():
            deadline += dt.timedelta(days=1)
    torch.set_num_threads(a.threads)
    main_store, side = ResultsStore(a.main), ResultsStore(a.store)
    done = main_store.existing_keys() | side.existing_keys()
    jobs = []
    queue = {"recon": lambda: recon_queue(main_store), "family": family_queue,
             "rerun": lambda: rerun_queue(main_store)}[a.queue]()
    if a.models and queue:
        unknown = sorted(set(a.models) - {given["model"] for given in queue})
        if unknown:
            sys.exit(f"--models: {', '.join(unknown)} not in the {a.queue} queue; it holds "
                     f"{', '.join(sorted({given['model'] for given in queue}))}")
    claims = Path(a.claims) if a.claims else None
    if claims:
        claims.mkdir(parents=True, exist_ok=True)
    # lanes split the whole queue by position, so lanes given different --models still split it alike
    for given in (queue if claims else queue[a.lane::a.lanes]):
        if a.models and given["model"] not in a.models:
            continue
        cfg = trial_config(**given)
        ctx = context(cfg, "cpu")
        key = row_key(cfg, ctx.weights_fp, ctx.data_fp)
        if key not in done:
            jobs.append((given, cfg, key))
    print(f"{'queue' if claims else f'lane {a.lane}'}: {len(jobs)} trials missing", flush=True)
    if a.list:
        for given, _, _ in jobs:
            print(given)
        return
    held_elsewhere = []
    for attempt in (jobs, held_elsewhere):
        for given, cfg, key in list(attempt):
            if deadline is not None:
                left = seconds_left(cfg, key, (main_store, side))
                if dt.datetime.now() + dt.timedelta(seconds=left) > deadline:
                    print(f"skip {given}: about {left / 60:.0f} min, past {a.until}", flush=True)
                    continue
            held = claim(claims, key) if claims else None
            if claims and held is None:
                if attempt is jobs:
                    held_elsewhere.append((given, cfg, key))
                continue
            t0 = time.perf_counter()
            counts = run_sweep([cfg], side, progress=False, device="cpu")
            if held is not None:
                finish(held)
            print(f"{dt.datetime.now():%H:%M} {given}: {counts} {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
