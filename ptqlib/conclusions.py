"""This project's remedies for the worst class, checked against the results store.

The study's own four claims are tested in :mod:`ptqlib.verdicts`. Here, each remedy (stratified
calibration sets, class-weighted reconstruction) is compared with its baseline on paired seeds
(:func:`protects_worst_class`), giving a :class:`Verdict`: whether the stored results support
it, the numbers behind it and the trials it rests on, or ``None`` (not enough data).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


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
