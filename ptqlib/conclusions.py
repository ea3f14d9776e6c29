"""The study's four conclusions, each checked against the results store.

Every check returns a :class:`Verdict`: whether the stored results support the conclusion,
the numbers behind it, and the trials it rests on, or ``None`` (not enough data) when the
cells it needs are missing. The thresholds are stated in each docstring.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from .aggregate import AVERAGE, class_summary, worst_class
from .stats import paired_worst
from .store import ResultsStore
from .study import Cell, factor_frame

MIN_TRIALS = 5  # a cell with fewer trials is "not enough data"
VERDICT_LABELS = {True: "supported", False: "not supported", None: f"not enough data (< {MIN_TRIALS} trials in a cell)"}


@dataclass(frozen=True)
class Verdict:
    conclusion: str
    supported: bool | None  # None: not enough data
    evidence: str
    trials: int


def _summary(frame: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    return class_summary(frame, by=by)


def _enough(frame: pd.DataFrame, factor: str, levels: list) -> bool:
    counts = frame.groupby(factor, dropna=False)["key"].nunique()
    return all(counts.get(lv, 0) >= MIN_TRIALS for lv in levels)


def classes_drop_more(store: ResultsStore, cell: Cell, trials: int) -> Verdict:
    """Supported when the class with the largest mean drop loses at least twice the average's
    drop and the largest class std over trials is at least twice the std of the average."""
    text = "Individual classes drop much more than the average, and vary much more across calibration sets."
    frame = factor_frame(store, cell, "noise", [0.0], trials)
    n = frame["key"].nunique()
    if n < MIN_TRIALS:
        return Verdict(text, None, f"only {n} trials of the default cell", n)
    s = _summary(frame).set_index("class")
    avg, classes = s.loc[AVERAGE], s.drop(index=AVERAGE)
    drop_ratio = classes["mean_drop"].max() / max(avg["mean_drop"], 1e-9)
    std_ratio = classes["std"].max() / max(avg["std"], 1e-9)
    evidence = (f"average drop {avg['mean_drop']:.2f} points vs {classes['mean_drop'].max():.2f} for "
                f"'{classes['mean_drop'].idxmax()}' ({drop_ratio:.2f}x); std of the average {avg['std']:.2f} vs "
                f"up to {classes['std'].max():.2f} for a class ({std_ratio:.2f}x); rule: both at least 2x")
    return Verdict(text, bool(drop_ratio >= 2 and std_ratio >= 2), evidence, n)


def average_robust_classes_not(store: ResultsStore, cell: Cell, trials: int, bias_classes: list[str],
                               sizes: tuple[int, ...] = (32, 256, 1024), bias_size: int | None = None) -> Verdict:
    """Over the noise levels 1-10 %, the bias towards single classes (on ``bias_size``
    calibration images, default the cell's, against a balanced draw of as many) and the
    calibration ``sizes`` (32 to the largest the pool allows): supported when the largest
    change of the average's mean accuracy against the default is under 1 point while some class
    changes by more than twice as much, and when the median class std at the largest size is at
    least 70 % of that at the smallest."""
    text = ("The average is robust to noise, class bias and calibration size; individual classes are not. "
            "Beyond 32 images, more data barely reduces a class's variance.")
    small, large = min(sizes), max(sizes)
    parts = {"noise": [0.0, 0.01, 0.05, 0.1], "calib_size": sorted(sizes)}
    parts["bias_class"] = [None, *bias_classes]
    cells = {"bias_class": replace(cell, calib_size=bias_size or cell.calib_size)}
    frames = {f: factor_frame(store, cells.get(f, cell), f, lv, trials) for f, lv in parts.items()}
    frames["bias_class"] = frames["bias_class"].fillna({"bias_class": "balanced"})
    missing = [f for f, lv in parts.items()
               if not _enough(frames[f], f, ["balanced" if v is None else v for v in lv])]
    n = sum(fr["key"].nunique() for fr in frames.values())
    if missing:
        return Verdict(text, None, f"cells with fewer than {MIN_TRIALS} trials: {', '.join(missing)}", n)
    avg_changes, class_changes = [], []
    for factor, frame in frames.items():
        mean = _summary(frame, by=[factor]).pivot(index="class", columns=factor, values="mean")
        base = {"noise": 0.0, "calib_size": cell.calib_size, "bias_class": "balanced"}[factor]
        delta = mean.sub(mean[base], axis=0).drop(columns=base)
        avg_changes.append(delta.loc[AVERAGE].abs().max())
        class_changes.append(delta.drop(index=AVERAGE).abs().max().max())
    std = _summary(frames["calib_size"], by=["calib_size"]).pivot(index="class", columns="calib_size", values="std")
    class_std = std.drop(index=AVERAGE).median()
    std_ratio = class_std[large] / max(class_std[small], 1e-9)
    evidence = (f"largest change of the average {max(avg_changes):.2f} points vs {max(class_changes):.2f} for a class; "
                f"median class std {class_std[small]:.2f} at {small} images, "
                f"{class_std[large]:.2f} at {large} ({std_ratio:.0%})")
    supported = max(avg_changes) < 1.0 and max(class_changes) > 2 * max(avg_changes) and std_ratio >= 0.7
    return Verdict(text, bool(supported), evidence, n)


def low_bits_hit_classes(store: ResultsStore, cell: Cell, trials: int) -> Verdict:
    """Supported when, at the lowest bit-width stored, the largest class drop is at least
    twice the average's drop."""
    text = "Lower bit-width can hit specific classes hard."
    frame = factor_frame(store, cell, "w_bits", [8, 6, 4], trials)
    present = [b for b in (8, 6, 4) if frame[frame["w_bits"] == b]["key"].nunique() >= MIN_TRIALS]
    n = frame["key"].nunique()
    if len(present) < 2:
        return Verdict(text, None, "fewer than two bit-widths with enough trials", n)
    drops = _summary(frame, by=["w_bits"]).pivot(index="class", columns="w_bits", values="mean_drop")
    low = min(present)
    cls = drops.drop(index=AVERAGE)[low]
    evidence = "; ".join(f"W{b}A{b}: average drop {drops.loc[AVERAGE, b]:.2f}, largest class drop "
                         f"{drops.drop(index=AVERAGE)[b].max():.2f} ('{drops.drop(index=AVERAGE)[b].idxmax()}')"
                         for b in present)
    ratio = cls.max() / max(drops.loc[AVERAGE, low], 1e-9)
    evidence += f"; at W{low}A{low} the largest class drop is {ratio:.2f}x the average's (rule: at least 2x)"
    return Verdict(text, bool(ratio >= 2), evidence, n)


def reconstruction_not_more_reliable(store: ResultsStore, cell: Cell, trials: int) -> Verdict:
    """Supported when every reconstruction method raises the average over grid search while,
    for at least one method, some class loses accuracy or the worst class does not gain more
    than the average."""
    text = "Gradient-based PTQ (AdaRound, BRECQ, QDrop) raises the average but is not more reliable per class."
    methods = ["adaround", "brecq", "qdrop"]
    frame = factor_frame(store, cell, "optimizer", ["grid", *methods], trials)
    present = [m for m in methods if frame[frame["optimizer"] == m]["key"].nunique() >= MIN_TRIALS]
    n = frame["key"].nunique()
    if frame[frame["optimizer"] == "grid"]["key"].nunique() < MIN_TRIALS or not present:
        return Verdict(text, None, "grid search or every reconstruction method has too few trials", n)
    mean = _summary(frame, by=["optimizer"]).pivot(index="class", columns="optimizer", values="mean")
    worst = worst_class(frame, by=["optimizer"]).set_index("optimizer")["worst_mean"]
    gains = {m: mean[m] - mean["grid"] for m in present}
    raises_avg = all(g[AVERAGE] > 0 for g in gains.values())
    unreliable = any((g.drop(index=AVERAGE) < 0).any() or (worst[m] - worst["grid"]) <= g[AVERAGE]
                     for m, g in gains.items())
    counts = frame.groupby("optimizer")["key"].nunique()
    evidence = "; ".join(f"{m} ({counts[m]} trials vs {counts['grid']}): average {g[AVERAGE]:+.2f}, worst class "
                         f"{worst[m] - worst['grid']:+.2f}, {int((g.drop(index=AVERAGE) < 0).sum())} classes lose"
                         for m, g in gains.items())
    return Verdict(text, bool(raises_avg and unreliable), evidence, n)


def all_verdicts(store: ResultsStore, cell: Cell, trials: int, bias_classes: list[str],
                 recon_cell: Cell | None = None, sizes: tuple[int, ...] = (32, 256, 1024),
                 bias_size: int | None = None) -> list[Verdict]:
    recon_cell = recon_cell or replace(cell, calib_size=max(sizes))
    return [classes_drop_more(store, cell, trials),
            average_robust_classes_not(store, cell, trials, bias_classes, sizes, bias_size),
            low_bits_hit_classes(store, cell, trials), reconstruction_not_more_reliable(store, recon_cell, trials)]


def protects_worst_class(frame: pd.DataFrame, factor: str, base, alt, name: str) -> Verdict:
    """A remedy (level ``alt`` of ``factor``) against its baseline (``base``) on the seeds both
    have. Supported when it raises the mean worst-class accuracy significantly (Wilcoxon
    p < 0.05), lowers the worst class's std over trials, and does not lower the average
    significantly."""
    text = f"{name} protects the worst class: higher and steadier worst-class accuracy at equal average accuracy."
    counts = frame.groupby(factor, dropna=False)["seed"].nunique()
    if counts.get(base, 0) < MIN_TRIALS or counts.get(alt, 0) < MIN_TRIALS:
        return Verdict(text, None, f"trials: {base} {counts.get(base, 0)}, {alt} {counts.get(alt, 0)}",
                       int(counts.get(alt, 0)))
    r = paired_worst(frame, factor, base, alt)
    supported = r["worst_diff"] > 0 and r["worst_p"] < 0.05 and r["worst_std_b"] < r["worst_std_a"] and \
        (r["avg_diff"] >= 0 or r["avg_p"] >= 0.05)
    evidence = (f"{r['pairs']} paired trials: mean worst-class accuracy {r['worst_mean_a']:.2f} -> "
                f"{r['worst_mean_b']:.2f} % ({r['worst_diff']:+.2f} points, Wilcoxon p = {r['worst_p']:.3g}), its std "
                f"{r['worst_std_a']:.2f} -> {r['worst_std_b']:.2f}; average {r['avg_mean_a']:.2f} -> "
                f"{r['avg_mean_b']:.2f} % ({r['avg_diff']:+.2f} points, p = {r['avg_p']:.3g})")
    return Verdict(text, bool(supported), evidence, r["pairs"])


def remedy_verdicts(store: ResultsStore, cell: Cell, trials: int, recon_cell: Cell, recon_trials: int) -> list[Verdict]:
    """This project's two remedies (section "Can PTQ protect the worst class?"): stratified
    calibration sets against random ones in ``cell``, and class-weighted against plain
    reconstruction in ``recon_cell``."""
    sampling = factor_frame(store, cell, "sampling", ["random", "stratified"], trials)
    weighting = factor_frame(store, recon_cell, "class_weighting", [None, "dro"], recon_trials)
    weighting["weighting"] = weighting["class_weighting"].fillna("none")
    return [protects_worst_class(sampling, "sampling", "random", "stratified", "Stratified calibration sampling"),
            protects_worst_class(weighting, "weighting", "none", "dro",
                                 f"Class-weighted {recon_cell.optimizer.upper()}")]
