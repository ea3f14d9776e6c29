"""Run the trials the open cells still lack, in priority order, into a side store (CPU lanes).

Two queues:

- ``recon``: the iteration curve's trials that the count decision reads (ResNet-20, CIFAR-10,
  W4A4, 1,024 calibration images, the reference variant; AdaRound, BRECQ with the float network
  kept, QDrop): seeds 0-9 at 20,000 iterations per unit, then 5,000, then 2,000, the methods
  interleaved seed by seed so that each count fills evenly.
- ``family``: every cell of the EfficientNet-Lite family page (the default W6A6 MSE cell with 256
  images of the 1,000-class pool, sizes 1/32/1,024, the other three metrics, W8A8, W4A8, noise
  0.1 and 0.5): seeds 10-19 of Lite1 and Lite2, then seeds 10-49 of Lite0.

Each trial is the one ``ptq sweep`` runs for the same settings and seed, so its key matches.
Lane ``--lane`` of ``--lanes`` takes every ``lanes``-th missing trial. With ``--until HH:MM`` a
trial is started only if the median time of its setting in the main store says it ends before
then (a trial cut off mid-way is lost, unless ``PTQ_CACHE`` keeps the unit checkpoints); the
lane goes on to shorter ones.

    PTQ_DATA=../shared/data python results/missing_trials.py recon --store side.sqlite --until 23:30
    ptq results merge --from side.sqlite
"""
import argparse
import datetime as dt
import sys
import time

import torch

from ptqlib.study.settings import row_key, trial_config
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import context, run_sweep

RECON_CELL = dict(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=1024, variant="reference")
RECON_METHODS = [{"optimizer": "adaround"}, {"optimizer": "brecq", "fp_weights": "kept"}, {"optimizer": "qdrop"}]
FAMILY_CELL = dict(dataset="imagenet-val10", w_bits=6, a_bits=6, metric="mse", calib_size=256)
FAMILY_LEVELS = [{}, {"calib_size": 1}, {"calib_size": 32}, {"calib_size": 1024}, {"metric": "minmax"},
                 {"metric": "kl"}, {"metric": "cosine"}, {"w_bits": 8, "a_bits": 8}, {"w_bits": 4, "a_bits": 8},
                 {"noise": 0.1}, {"noise": 0.5}]


def recon_queue() -> list[dict]:
    return [dict(RECON_CELL, **method, iters=iters, seed=seed)
            for iters in (20_000, 5_000, 2_000) for seed in range(10) for method in RECON_METHODS]


def family_queue() -> list[dict]:
    order = [("efficientnet_lite1", range(10, 20)), ("efficientnet_lite2", range(10, 20)),
             ("efficientnet_lite0", range(10, 50))]
    return [dict(FAMILY_CELL, **level, model=model, seed=seed)
            for model, seeds in order for seed in seeds for level in FAMILY_LEVELS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("queue", choices=["recon", "family"])
    p.add_argument("--store", required=True, help="side store the trials are written to")
    p.add_argument("--main", default="results/trials.sqlite", help="store whose trials are left out")
    p.add_argument("--lane", type=int, default=0)
    p.add_argument("--lanes", type=int, default=1)
    p.add_argument("--until", default=None, help="HH:MM (local time): start no trial expected to end later")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--list", action="store_true", help="print the missing trials and stop")
    a = p.parse_args()
    if not 0 <= a.lane < a.lanes:
        sys.exit(f"--lane must be in 0 .. {a.lanes - 1}, got {a.lane}")
    deadline = None
    if a.until:
        hour, minute = (int(x) for x in a.until.split(":"))
        deadline = dt.datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
        if deadline < dt.datetime.now():
            deadline += dt.timedelta(days=1)
    torch.set_num_threads(a.threads)
    main_store, side = ResultsStore(a.main), ResultsStore(a.store)
    done = main_store.existing_keys() | side.existing_keys()
    jobs = []
    for given in (recon_queue() if a.queue == "recon" else family_queue()):
        cfg = trial_config(**given)
        ctx = context(cfg, "cpu")
        if row_key(cfg, ctx.weights_fp, ctx.data_fp) not in done:
            jobs.append((given, cfg))
    jobs = jobs[a.lane::a.lanes]
    print(f"lane {a.lane}: {len(jobs)} trials missing", flush=True)
    if a.list:
        for given, _ in jobs:
            print(given)
        return
    for given, cfg in jobs:
        setting = {k: v for k, v in given.items() if k != "seed"}
        if deadline is not None:
            rows = main_store.trials(**setting)
            expected = float((rows["calib_s"] + rows["eval_s"]).median()) if len(rows) else 0.0
            if dt.datetime.now() + dt.timedelta(seconds=expected) > deadline:
                print(f"skip {given}: about {expected / 60:.0f} min, past {a.until}", flush=True)
                continue
        t0 = time.perf_counter()
        counts = run_sweep([cfg], side, progress=False, device="cpu")
        print(f"{dt.datetime.now():%H:%M} {given}: {counts} {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
