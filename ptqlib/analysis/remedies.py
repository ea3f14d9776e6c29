"""The candidate remedies for the worst class, each against its baseline, as a report shows them.

The remedies are declared with their settings (:func:`ptqlib.study.settings.remedies`): a level
of a setting (``sampling="stratified"``, ``class_weighting="dro"``) tested against the setting's
default on the same seeds. :func:`remedy_comparisons` selects the trials of each and gives what
the page shows: the trials per level, the worst-class table and the per-class paired test;
:func:`ptqlib.analysis.conclusions.protects_worst_class` gives the verdict on the same frame.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from ptqlib.analysis.aggregate import worst_class
from ptqlib.analysis.cells import ensure_trials, factor_frame, trial_counts
from ptqlib.analysis.stats import paired_test
from ptqlib.study import settings
from ptqlib.study.settings import Cell, Remedy, Setting
from ptqlib.study.store import ResultsStore


@dataclass(frozen=True)
class RemedyComparison:
    """One remedy against its setting's default in ``cell``: ``frame`` holds the tidy per-class
    rows of both levels, the setting's column holding each level's label (:func:`settings.label`)."""

    setting: Setting
    remedy: Remedy
    cell: Cell
    trials: int  # the first seeds asked for, per level
    frame: pd.DataFrame

    @property
    def factor(self) -> str:
        return self.setting.name

    @property
    def base(self) -> str:
        return self.setting.label(self.setting.default)

    @property
    def alt(self) -> str:
        return self.setting.label(self.remedy.level)

    @property
    def name(self) -> str:
        """The remedy's name, with the reconstruction method for a remedy of reconstruction."""
        return f"{self.remedy.name} ({self.cell.optimizer.upper()})" if self.remedy.reconstruction else self.remedy.name

    @property
    def title(self) -> str:
        """The cell in a few words: model, bit-widths, and the range metric or reconstruction method."""
        how = self.cell.optimizer.upper() if self.remedy.reconstruction else self.cell.metric
        return f"{self.cell.model} W{self.cell.w_bits}A{self.cell.a_bits} {how}"

    @property
    def both(self) -> bool:
        """Whether both levels have trials."""
        return not self.frame.empty and {self.base, self.alt} <= set(self.frame[self.factor])

    def counts(self) -> pd.Series:
        """Trials per level (label)."""
        return trial_counts(self.frame, self.factor)

    def count_line(self) -> str:
        """The trials per level in words, with the calibration size (and, for a remedy of
        reconstruction, the iterations per unit)."""
        iters = f", {self.cell.iters} iterations per unit" if self.remedy.reconstruction else ""
        return (f"trials per {self.factor} ({self.cell.calib_size} calibration images{iters}): "
                + ", ".join(f"{k}: {n}" for k, n in self.counts().items()))

    def worst_class(self) -> pd.DataFrame:
        """:func:`~ptqlib.analysis.aggregate.worst_class` per level, indexed by the level's label."""
        return worst_class(self.frame, by=[self.factor]).set_index(self.factor)

    def paired(self) -> pd.DataFrame:
        """:func:`~ptqlib.analysis.stats.paired_test` per class, remedy against baseline (both
        levels must have trials)."""
        return paired_test(self.frame, self.factor, self.base, self.alt)


def missing_lines(store: ResultsStore, c: RemedyComparison) -> list[str]:
    """Where a side of comparison ``c`` lacks trials: per level, how many trials the store holds
    of it and on which devices, with the median seconds a trial spent calibrating; or the
    ``ptq sweep`` command that runs it. Empty when both sides have trials."""
    if c.both:
        return []
    lines = []
    for level, label in ((c.setting.default, c.base), (c.remedy.level, c.alt)):
        cell = replace(c.cell, **{c.factor: level})
        stored = store.trials(**cell.where())
        stored = stored[stored["seed"].isin(set(c.frame.loc[c.frame[c.factor] == label, "seed"]))]
        if stored.empty:
            lines.append(f"{label}: no trials of this cell; to run them: `{cell.command(c.trials)}`")
            continue
        devices = ", ".join(f"{k} on {d}" for d, k in stored["device"].fillna("cpu").value_counts().items())
        lines.append(f"{label}: {len(stored)} trials ({devices}), median {stored['calib_s'].median():.0f} s "
                     "calibrating a trial")
    return lines


def remedy_cells(cell: Cell, trials: int, recon_cell: Cell, recon_trials: int):
    """``(setting, remedy, cell, trials)`` of each remedy the settings declare: ``cell`` and
    ``trials``, or ``recon_cell`` and ``recon_trials`` for a remedy of reconstruction."""
    for setting, remedy in settings.remedies():
        yield (setting, remedy, *((recon_cell, recon_trials) if remedy.reconstruction else (cell, trials)))


def remedy_comparisons(store: ResultsStore, cell: Cell, trials: int, recon_cell: Cell,
                       recon_trials: int) -> list[RemedyComparison]:
    """Each remedy the settings declare against its setting's default, on the first seeds of the
    cell :func:`remedy_cells` gives it."""
    out = []
    for setting, remedy, on, n in remedy_cells(cell, trials, recon_cell, recon_trials):
        frame = factor_frame(store, on, setting.name, [setting.default, remedy.level], n)
        frame[setting.name] = frame[setting.name].map(setting.label)
        out.append(RemedyComparison(setting, remedy, on, n, frame))
    return out


def ensure_remedy_trials(store: ResultsStore, cell: Cell, trials: int, recon_cell: Cell, recon_trials: int,
                         **sweep_kwargs) -> list[dict]:
    """Run the missing trials of every remedy and its baseline (needs the data)."""
    return [ensure_trials(store, on, setting.name, [setting.default, remedy.level], n, **sweep_kwargs)
            for setting, remedy, on, n in remedy_cells(cell, trials, recon_cell, recon_trials)]
