"""The ``ptq`` command line.

    ptq quantize --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --metric mse --json
    ptq train    --model resnet20 --data cifar10-jpeg --init resnet20.th --epochs 10 --out weights/...
    ptq bench    --model resnet20 --data cifar10-jpeg --json
    ptq section  first_look -p model resnet20

Bad input ends with one line ``ptq: error: ...`` naming the value and what is allowed.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
import sys
from pathlib import Path

from ptqlib.analysis.robustness import CORRUPTIONS
from ptqlib.data import DataError
from ptqlib.models import CheckpointError
from ptqlib.study import settings
from ptqlib.study.settings import TrialConfig
from ptqlib.study.store import DEFAULT_STORE
from ptqlib.study.trial import DEVICE_ENV, check_device


def _add_trial_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """One option per trial setting (``ptqlib.study.settings``); with ``many`` the factors of the
    study take several values (a grid)."""
    settings.add_arguments(p, many)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default=None, help=f"cpu, cuda or cuda:N (default: ${DEVICE_ENV}, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _trial_config(args: argparse.Namespace) -> TrialConfig:
    return settings.trial_config(**settings.from_args(args)[0])


def cmd_quantize(args: argparse.Namespace) -> None:
    from ptqlib.study.trial import TrialContext

    cfg = _trial_config(args)
    ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, args.device, progress=True)
    res = ctx.run(cfg)
    if args.json:
        print(json.dumps({"config": cfg.to_dict(), "weights": ctx.weights, "avg": res.avg,
                          "per_class": res.per_class, "worst_class": min(res.per_class, key=res.per_class.get),
                          "worst_class_acc": min(res.per_class.values()), "fp_avg": res.fp_avg,
                          "fp_per_class": res.fp_per_class, "seconds": round(res.seconds, 3),
                          "calib_seconds": round(res.calib_seconds, 3),
                          "calib_class_counts": res.calib_counts, "noise_images": res.noise_images,
                          "eval_seconds": round(res.eval_seconds, 3)}))
        return
    q = cfg.quant
    optimizer = cfg.optimizer if cfg.recon is None else f"{cfg.optimizer} ({cfg.recon.iters} iterations per unit)"
    print(f"{cfg.model} on {cfg.dataset} ({len(ctx.test)} test images), W{q.w_bits}A{q.a_bits} {q.preset} "
          f"preset, {q.metric} activation ranges, {optimizer}, {cfg.calib.size} calibration images "
          f"({res.noise_images} noise), seed {cfg.seed}")
    width = max(len(c) for c in res.per_class) + 2
    print(f"{'class':<{width}}{'FP %':>8}{'quant %':>9}{'drop':>8}")
    for name, acc in res.per_class.items():
        fp = res.fp_per_class[name]
        print(f"{name:<{width}}{fp:8.2f}{acc:9.2f}{fp - acc:8.2f}")
    print(f"{'average':<{width}}{res.fp_avg:8.2f}{res.avg:9.2f}{res.fp_avg - res.avg:8.2f}")
    print(f"{res.seconds:.1f} s (calibration {res.calib_seconds:.1f} s, evaluation {res.eval_seconds:.1f} s)")


def cmd_train(args: argparse.Namespace) -> None:
    from ptqlib.train import TrainConfig, train

    cfg = TrainConfig(model=args.model, dataset=args.data, init=args.init, epochs=args.epochs,
                      peak_lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    out = Path(args.out or f"weights/{args.data}/{args.model}.pt")
    card = train(cfg, out, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps({"out": str(out), **{k: card[k] for k in ("test_accuracy_before", "test_accuracy",
                                                                "train_seconds", "per_class")}}))


def cmd_bench(args: argparse.Namespace) -> None:
    from ptqlib.app.bench import run_bench, run_recon_bench

    if args.device not in (None, "cpu"):
        raise ValueError(f"ptq bench times the CPU (against torch.ao's CPU kernels); --device {args.device} "
                         "is not supported, leave it out")
    cfg = _trial_config(args)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if cfg.recon is None:
        out = run_bench(cfg, reps=args.reps, with_torch_ao=not args.no_torch_ao, log=log)
    else:
        out = run_recon_bench(cfg, log=log)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>28}: {v}")


def cmd_robustness(args: argparse.Namespace) -> None:
    import time

    from ptqlib.analysis.robustness import robustness_frame
    from ptqlib.study.trial import TrialContext

    unknown = sorted(set(args.corruptions) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown corruption {unknown[0]!r}; choose from {', '.join(CORRUPTIONS)}")
    if args.trials < 0:
        raise ValueError(f"--trials must be 0 or more, got {args.trials}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"folder {str(out.parent)!r} does not exist")
    cfg = _trial_config(args)
    ctx = TrialContext(cfg.model, cfg.dataset, cfg.weights, args.device, progress=True)
    t0 = time.perf_counter()
    configs = [replace(cfg, seed=s) for s in range(cfg.seed, cfg.seed + args.trials)]
    frame = robustness_frame(ctx, configs, tuple(args.corruptions))
    out.write_text(json.dumps({"config": cfg.to_dict(), "trials": args.trials, "weights_fp": ctx.weights_fp,
                               "data_fp": ctx.data_fp, "seconds": round(time.perf_counter() - t0, 1),
                               "rows": frame.to_dict("records")}))
    print(f"wrote {out} ({len(frame)} rows)")


def cmd_section(args: argparse.Namespace) -> None:
    from ptqlib.app.report import build_book, parse_value, run_section

    params = {key: parse_value(value) for key, value in args.param}
    out = run_section(args.name, params, Path(args.output) if args.output else None)
    print(f"executed {out}")
    if args.output is None and not args.no_build:
        build_book()
        print("rebuilt the book: _build/html/index.html")


def cmd_sweep(args: argparse.Namespace) -> None:
    from ptqlib.study.store import ResultsStore
    from ptqlib.study.sweep import expand_grid, run_sweep

    base, factors = settings.from_args(args)
    configs = expand_grid(base, factors, range(base["seed"], base["seed"] + args.trials))  # validates every cell
    counts = run_sweep(configs, ResultsStore(args.store), args.workers, args.scheduler, fill_ece=args.fill_ece,
                       device=args.device)
    print(json.dumps({"store": args.store, **counts}))


def cmd_offload(args: argparse.Namespace) -> None:
    """Reconstruction trials split across machines (see :mod:`ptqlib.study.offload`)."""
    import torch

    from ptqlib.study.offload import export_jobs, import_results, load_bundle, run_jobs
    from ptqlib.study.store import ResultsStore, row_key
    from ptqlib.study.sweep import context, expand_grid

    if args.action == "export":
        if not args.out:
            raise ValueError("export needs --out FILE (the bundle to take to the other machine)")
        base, factors = settings.from_args(args)
        configs = expand_grid(base, factors, range(base["seed"], base["seed"] + args.trials))
        done = ResultsStore(args.store).existing_keys() if Path(args.store).exists() else set()
        todo = [c for c in configs if row_key(c, (ctx := context(c, "cpu")).weights_fp, ctx.data_fp) not in done]
        if not todo:
            print(json.dumps({"requested": len(configs), "jobs": 0, "note": "every trial is in the store already"}))
            return
        bundle = export_jobs(todo, args.out)
        print(json.dumps({"requested": len(configs), "jobs": len(bundle["jobs"]), "bundle": args.out}))
    elif args.action == "run":
        if not (args.bundle and args.out):
            raise ValueError("run needs --bundle FILE and --out FILE")
        run_jobs(load_bundle(args.bundle), args.out, args.device or "cpu", progress=True,
                 log=lambda line: print(line, flush=True))
    else:
        if not args.results:
            raise ValueError("import needs --results FILE [FILE ...] (written by 'ptq offload run')")
        results = [r for path in args.results for r in torch.load(path, weights_only=True)]
        print(json.dumps({"store": args.store, **import_results(results, ResultsStore(args.store))}))


def cmd_verdicts(args: argparse.Namespace) -> None:
    from ptqlib.models import check_model
    from ptqlib.study.store import ResultsStore
    from ptqlib.analysis.verdicts import all_parts, claim_verdicts, describe, design_for

    check_model(args.model)
    if not Path(args.store).exists():
        raise ValueError(f"results store {args.store!r} does not exist")
    design = design_for(args.model, args.data, trials=args.trials)
    parts = all_parts(ResultsStore(args.store), design, chance_draws=args.chance_draws)
    if args.json:
        print(json.dumps([p.to_dict() for p in parts], indent=1))
        return
    for claim, verdict in claim_verdicts(parts).items():
        print(f"claim {claim}: {verdict}")
        for p in (p for p in parts if p.claim == claim):
            print(f"  {p.verdict:15s} {describe(p)}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_results(args: argparse.Namespace) -> None:
    from ptqlib.study.store import ResultsStore

    if args.action == "export":
        if not Path(args.store).exists():
            raise ValueError(f"results store {args.store!r} does not exist")
        if not args.out:
            raise ValueError("export needs --out FILE (.csv or .parquet)")
        print(f"wrote {ResultsStore(args.store).export(args.out)}")
    elif args.action == "merge":
        if not args.source:
            raise ValueError("merge needs --from STORE")
        store = ResultsStore(args.store)
        print(json.dumps({"store": args.store, "new_trials": sum(store.merge(s) for s in args.source)}))
    elif args.action == "check":
        if not Path(args.store).exists():
            raise ValueError(f"results store {args.store!r} does not exist")
        report = ResultsStore(args.store).check_keys()
        print(json.dumps(report if args.verbose else
                         {k: v if k == "trials" else len(v) for k, v in report.items()}))
        if any(report[k] for k in ("config_keys_differ", "row_keys_differ", "invalid")):
            raise ValueError(f"{args.store}: stored trials whose keys the current settings code does not reproduce "
                             "(a rerun of their configuration would compute them again); --verbose lists them")
    else:
        if not args.name:
            raise ValueError("pack needs --name NAME (letters, digits, '-' and '_')")
        part = ResultsStore(args.store).pack(args.name)
        print(f"wrote {part}" if part else "nothing to pack: every row is in a part already")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptq", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("quantize", help="quantize a model once and evaluate it per class")
    _add_trial_args(p)
    p.set_defaults(func=cmd_quantize)
    p = sub.add_parser("bench", help="time a trial against FP evaluation and torch.ao "
                                     "(with --optimizer: time a reconstruction, unit by unit)")
    _add_trial_args(p)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-torch-ao", action="store_true")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("sweep", help="run a grid of factors x seeds into the results store")
    _add_trial_args(p, many=True)
    p.add_argument("--trials", type=_positive_int, default=50, help="seeds per grid cell (seed, seed+1, ...)")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--workers", type=int, default=1, help="Dask worker processes (1: run here)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--fill-ece", action="store_true",
                   help="also rerun stored trials that predate ECE; record it where the rerun reproduces them")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("offload", help="reconstruction trials on another machine: export their calibrated models "
                                       "(here), run the reconstructions (there, e.g. --device cuda), import the "
                                       "results (here)")
    p.add_argument("action", choices=["export", "run", "import"])
    _add_trial_args(p, many=True)
    p.add_argument("--trials", type=_positive_int, default=50, help="export: seeds per grid cell")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="export: trials stored here are left out; "
                                                                "import: the store to add to")
    p.add_argument("--out", default=None, help="export: the bundle to write; run: the results file (resumed)")
    p.add_argument("--bundle", default=None, help="run: the bundle written by export")
    p.add_argument("--results", nargs="+", default=None, help="import: results files written by run")
    p.set_defaults(func=cmd_offload)
    p = sub.add_parser("robustness", help="per-class accuracy of FP and quantized models on corrupted test images")
    _add_trial_args(p)
    p.add_argument("--trials", type=int, default=3, help="quantized models (seeds --seed, --seed+1, ...)")
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS),
                   help=f"any of {', '.join(CORRUPTIONS)}")
    p.add_argument("--out", required=True, help="output .json")
    p.set_defaults(func=cmd_robustness)
    p = sub.add_parser("verdicts", help="the study's claims tested on the results store: each part with its "
                                        "interval and chance band")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="dataset of the trials (cifar10-jpeg, imagenet-val10, ...)")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--trials", type=_positive_int, default=50, help="first seeds of each cell used")
    p.add_argument("--chance-draws", type=_positive_int, default=1000,
                   help="random splits of the test images into pseudo-classes")
    p.add_argument("--json", action="store_true", help="a JSON list of parts")
    p.set_defaults(func=cmd_verdicts)
    p = sub.add_parser("results", help="export the results store; merge other stores into it; pack its new rows "
                                       "into a part file to commit; check that every stored trial's keys are "
                                       "those the current code gives its configuration")
    p.add_argument("action", choices=["export", "merge", "pack", "check"])
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--out", default=None, help="export: output .csv or .parquet (one row per trial and class)")
    p.add_argument("--from", dest="source", nargs="+", default=None, help="merge: stores whose rows to add")
    p.add_argument("--name", default=None, help="pack: the new part's name (results/trials/NNNN-NAME.sqlite)")
    p.add_argument("--verbose", action="store_true", help="check: list the keys of the trials that fail")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("train", help="fine-tune or train a CIFAR ResNet")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="cifar10-jpeg")
    p.add_argument("--init", default=None, help="checkpoint to start from (default: from scratch)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.02, help="one-cycle peak learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="output checkpoint (default weights/DATA/MODEL.pt)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("section", help="re-execute one report section with new parameters")
    p.add_argument("name", help="section name (a notebook in notebooks/) or a variant (e.g. noise_lite0)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    p.add_argument("--output", default=None, help="folder for the executed notebook (default: book/)")
    p.add_argument("--no-build", action="store_true", help="do not rebuild the HTML book afterwards")
    p.set_defaults(func=cmd_section)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            import torch
            torch.set_num_threads(args.threads)
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        args.func(args)
    except (ValueError, DataError, CheckpointError, OSError, ImportError) as exc:
        print(f"ptq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptq: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
