"""This project's remedies for the worst class, checked against the results store.

The study's own four claims are tested in :mod:`ptqlib.analysis.verdicts`. Here, each remedy (stratified
calibration sets, class-weighted reconstruction) is compared with its baseline on paired seeds
(:func:`protects_worst_class`), giving a :class:`Verdict` in the words of :mod:`ptqlib.analysis.verdicts`
(supported, contradicted, inconclusive, not enough data), the numbers and intervals behind it,
and the trials it rests on.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ptqlib.analysis.remedies import remedy_comparisons
from ptqlib.analysis.stats import p_value, paired_gain
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell
from ptqlib.analysis.verdicts import CONTRADICTED, EFFECTS, INCONCLUSIVE, MIN_TRIALS, NOT_ENOUGH, SUPPORTED, Effects


@dataclass(frozen=True)
class Verdict:
    conclusion: str
    verdict: str  # one of ptqlib.analysis.verdicts.VERDICTS
    evidence: str
    trials: int

    def text(self) -> str:
        """The question, then its verdict and evidence (which starts with the trials) on an
        indented line."""
        return f"{self.conclusion}\n   -> {self.verdict}: {self.evidence}"


def protects_worst_class(frame: pd.DataFrame, factor: str, base, alt, name: str,
                         effects: Effects = EFFECTS) -> Verdict:
    """A remedy (level ``alt`` of ``factor``) against its baseline (``base``) on the seeds both
    have: the mean per-seed gain of the worst class and the change of the average, each with a
    95 % bootstrap interval. Supported when the worst class's interval lies above 0 while the
    average's lies above ``-robust_points`` (no loss of a point or more); contradicted when the
    worst class's interval lies below 0 or the average's below ``-robust_points``; else
    inconclusive."""
    subject = name[:1].lower() + name[1:] if name[1:2].islower() else name  # "Stratified ..." -> "stratified ..."
    text = (f"Does {subject} protect the worst class (a higher worst-class accuracy, the average losing less than "
            f"{effects.robust_points:g} point)?")
    counts = frame.groupby(factor, dropna=False)["seed"].nunique()
    if counts.get(base, 0) < MIN_TRIALS or counts.get(alt, 0) < MIN_TRIALS:
        return Verdict(text, NOT_ENOUGH, f"trials: {base} {counts.get(base, 0)}, {alt} {counts.get(alt, 0)}",
                       int(counts.get(alt, 0)))
    gain = paired_gain(frame, factor, base, alt).set_index("statistic")
    worst, avg = gain.loc["worst class"], gain.loc["average"]
    if worst["ci_low"] > 0 and avg["ci_low"] > -effects.robust_points:
        verdict = SUPPORTED
    elif worst["ci_high"] < 0 or avg["ci_high"] < -effects.robust_points:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    evidence = "; ".join(
        f"{stat} {r['mean_a']:.2f} -> {r['mean_b']:.2f} % ({r['diff']:+.2f} points, 95 % interval "
        f"{r['ci_low']:+.2f} to {r['ci_high']:+.2f}, {p_value(r['p'], 'Wilcoxon p')})" for stat, r in gain.iterrows())
    return Verdict(text, verdict, f"{int(worst['pairs'])} paired trials: {evidence}", int(worst["pairs"]))


def remedy_verdicts(store: ResultsStore, cell: Cell, trials: int, recon_cell: Cell, recon_trials: int) -> list[Verdict]:
    """Each candidate remedy the settings declare (section "Can PTQ protect the worst class?")
    against its setting's default, on the trials :func:`~ptqlib.analysis.remedies.remedy_comparisons`
    selects (in ``cell``, or in ``recon_cell`` for remedies of reconstruction)."""
    return [protects_worst_class(c.frame, c.factor, c.base, c.alt, c.name)
            for c in remedy_comparisons(store, cell, trials, recon_cell, recon_trials)]
