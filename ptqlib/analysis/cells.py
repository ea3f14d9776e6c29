"""The study's design: the default cell and the one-factor-at-a-time variations.

Each factor of the study (``book/method.md``) is varied alone, everything else at its default.
Notebooks select a factor's cells from the store with :func:`factor_frame` and, when asked,
compute the missing trials with :func:`ensure_trials`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ptqlib.analysis.aggregate import AVERAGE, chosen_iters, reliability_summary, sorted_by, study_iters, worst_class
from ptqlib.analysis.stats import (above_guessing, count_reversals, guessing_lines, holm, mean_difference, paired_gain,
                                  seeds_for_equivalence)
from ptqlib.data import class_label
from ptqlib.study import settings
from ptqlib.study.settings import Cell
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import expand_grid, run_sweep

FACTOR_LEVELS = settings.STUDY_LEVELS


def level_cell(cell: Cell, factor: str, level) -> Cell:
    """The cell with ``factor`` at ``level`` (``w_bits`` also sets ``a_bits``: W8A8, W6A6 ...)."""
    if factor == "w_bits":
        return replace(cell, w_bits=level, a_bits=level)
    return replace(cell, **{factor: level})


def level_label(factor: str, level) -> str:
    """How a report names a level of ``factor`` (its setting's declared label)."""
    return settings.label(factor, level)


def level_selections(store: ResultsStore, cell: Cell, factor: str, levels: list):
    """``(level, store filters)`` of each level of ``factor``, on the weights and data of the most
    recent FP reference of the cell's model and dataset; levels impossible for the cell (e.g. 1 %
    noise of 8 images) are left out: they have no trials."""
    fingerprints = store.latest_fingerprints(cell.model, cell.dataset, cell.weights) or {"weights_fp": None}
    for level in levels:
        try:
            where = level_cell(cell, factor, level).where()
        except ValueError:
            continue
        yield level, {**where, **fingerprints}


def _first_seeds(rows: pd.DataFrame, trials: int) -> pd.DataFrame:
    return rows[rows["seed"].isin(sorted(rows["seed"].unique())[:trials])]


def factor_frame(store: ResultsStore, cell: Cell, factor: str, levels: list, trials: int) -> pd.DataFrame:
    """Tidy per-class rows of the first ``trials`` seeds of each level of ``factor``, on the
    weights and data of the most recent FP reference of the cell's model and dataset."""
    frames, columns = [], []
    for level, where in level_selections(store, cell, factor, levels):
        tidy = store.per_class(**where)
        columns = list(tidy.columns)
        if tidy.empty:  # left out: an empty frame in the concat would turn every column to object dtype
            continue
        frames.append(_first_seeds(tidy, trials).assign(level=level))
    if not frames:
        return pd.DataFrame(columns=list(dict.fromkeys([*columns, factor])))
    frame = pd.concat(frames, ignore_index=True)
    frame[factor] = frame.pop("level")
    frame["class"] = frame["class"].map(class_label)  # readable: 'tench', not 'n01440764'
    return frame


@dataclass(frozen=True)
class LevelPredictions:
    """The stored predictions of one factor's cells: per level, the seeds and the predicted
    label of every test image ``[trials, images]``; shared by the levels, the test labels, the
    float model's predictions and the class names (in label order)."""

    preds: dict  # level -> [trials, images] int array
    seeds: dict  # level -> [trials] int array
    labels: np.ndarray | None  # None: no level has trials
    fp_preds: np.ndarray | None
    class_names: list[str]


def factor_predictions(store: ResultsStore, cell: Cell, factor: str, levels: list, trials: int) -> LevelPredictions:
    """The predictions behind :func:`factor_frame` (same levels, same first ``trials`` seeds);
    levels without trials are left out."""
    preds, seeds, labels, fp_preds, names = {}, {}, None, None, []
    for level, where in level_selections(store, cell, factor, levels):
        if store.trials(**where).empty:
            continue
        rows, level_preds, fp_preds, labels = store.predictions(**where)
        keep = rows["seed"].isin(sorted(rows["seed"].unique())[:trials]).to_numpy()
        order = np.argsort(rows["seed"].to_numpy()[keep], kind="stable")
        preds[level] = level_preds[keep][order]
        seeds[level] = rows["seed"].to_numpy()[keep][order]
        names = [class_label(c) for c in rows["per_class"].iloc[0]]  # stored in label order
    return LevelPredictions(preds, seeds, labels, fp_preds, names)


def factor_seconds(store: ResultsStore, cell: Cell, factor: str, levels: list, trials: int) -> pd.DataFrame:
    """Per level of ``factor`` (the trials of :func:`factor_frame`): the number of trials and the
    median seconds a trial spent calibrating (reconstruction included) and evaluating, over its
    CPU trials where it has any (a GPU's times would mix two machines' speeds)."""
    rows = []
    for level, where in level_selections(store, cell, factor, levels):
        stored = store.trials(**where)
        if stored.empty:
            continue
        first = _first_seeds(stored, trials)
        timed = first
        if "device" in first:
            on_cpu = first[first["device"].isna() | (first["device"] == "cpu")]
            timed = on_cpu if len(on_cpu) else first
        rows.append({factor: level, "trials": len(first), "calib_s": timed["calib_s"].median(),
                     "eval_s": timed["eval_s"].median()})
    return pd.DataFrame(rows, columns=[factor, "trials", "calib_s", "eval_s"])


def models_frame(store: ResultsStore, cell: Cell, models: list[str], factor: str, levels: list,
                 trials: int) -> pd.DataFrame:
    """:func:`factor_frame` of the same cell for each of ``models`` (a ``model`` column tells
    them apart); models without trials are left out."""
    frames = [factor_frame(store, replace(cell, model=m), factor, levels, trials) for m in models]
    stored = [f for f in frames if len(f)]
    return pd.concat(stored, ignore_index=True) if stored else frames[0]


def models_summaries(store: ResultsStore, cell: Cell, models: list[str], factors: dict[str, list],
                     trials: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Each factor's :func:`~ptqlib.analysis.aggregate.reliability_summary` over ``models`` and its
    levels (factors no model has trials of left out), and the trials of every model (rows) in
    every cell ``factor=level`` (columns; the default cell appears under each factor)."""
    frames = {factor: models_frame(store, cell, models, factor, levels, trials) for factor, levels in factors.items()}
    summaries = {factor: reliability_summary(frame, ["model", factor]) for factor, frame in frames.items() if len(frame)}
    counts = pd.DataFrame({f"{factor}={lv}": s[s[factor] == lv].set_index("model")["trials"]
                           for factor, s in summaries.items() for lv in factors[factor]}, index=models)
    return summaries, counts.reindex(models).fillna(0).astype(int).rename_axis("model")


def default_summaries(store: ResultsStore, cell: Cell, models: list[str], trials: int) -> pd.DataFrame:
    """:func:`~ptqlib.analysis.aggregate.reliability_summary` of ``cell`` for each of ``models``
    that has trials of it (in the order of ``models``), with the model's float accuracy on the
    cell's dataset (``fp_avg``, its latest float reference; NaN without one)."""
    summary = reliability_summary(models_frame(store, cell, models, "noise", [0.0], trials), ["model"])
    fp = store.fp_reference()
    if len(fp):
        fp = fp[(fp["dataset"] == cell.dataset) & fp["model"].isin(models)].drop_duplicates("model", keep="last")
        summary = summary.merge(fp[["model", "avg"]].rename(columns={"avg": "fp_avg"}), on="model", how="left")
    else:
        summary = summary.assign(fp_avg=np.nan)
    return sorted_by(summary, {"model": models}).reset_index(drop=True)


def bits_summaries(store: ResultsStore, cell: Cell, models: list[str], bits: list, trials: int) -> pd.DataFrame:
    """:func:`~ptqlib.analysis.aggregate.reliability_summary` per model of ``cell`` at each
    ``[weight bits, activation bits]`` of ``bits`` that has trials (``bits``: ``"W4A8"``); empty
    when none has."""
    frames = {f"W{w}A{a}": models_frame(store, replace(cell, w_bits=w, a_bits=a), models, "noise", [0.0], trials)
              for w, a in bits}
    stored = [reliability_summary(f, ["model"]).assign(bits=b) for b, f in frames.items() if len(f)]
    return pd.concat(stored, ignore_index=True) if stored else pd.DataFrame()


def kept_above_chance(store: ResultsStore, cell: Cell, models: list[str], bits: list, trials: int,
                      outputs: int, images: int) -> list[str]:
    """For each ``[weight bits, activation bits]`` of ``bits`` with trials of ``cell``: per model,
    :func:`~ptqlib.analysis.stats.above_guessing` in words; then one line naming, per bit-width,
    the models kept above chance (every class and the average shown above guessing in more than
    half their trials)."""
    lines, kept = [], {}
    for w, a in bits:
        frame = models_frame(store, replace(cell, w_bits=w, a_bits=a), models, "noise", [0.0], trials)
        if frame.empty:
            continue
        table = above_guessing(frame, outputs, images)
        lines += guessing_lines(table, f"W{w}A{a} ")
        kept[f"W{w}A{a}"] = ", ".join(table.loc[table["kept"], "model"]) or "none"
    return lines + ["kept above chance: " + ("; ".join(f"{b}: {names}" for b, names in kept.items()) or
                                             "no bit-width has trials")]

def ensure_trials(store: ResultsStore, cell: Cell, factor: str, levels: list, trials: int, **sweep_kwargs) -> dict:
    """Run the missing trials of the factor's cells (needs the data)."""
    configs = [c for level in levels
               for c in expand_grid(level_cell(cell, factor, level).trial_config(), {}, range(trials))]
    return run_sweep(configs, store, **sweep_kwargs)


def trial_counts(frame: pd.DataFrame, factor: str) -> pd.Series:
    return frame.groupby(factor, dropna=False)["key"].nunique().rename("trials")


def paired_effects(store: ResultsStore, cell: Cell, comparisons: dict, trials: int,
                   min_pairs: int = 3) -> tuple[pd.DataFrame, list[str]]:
    """Settings measured one at a time. ``comparisons``: ``name -> (setting, a, b, methods)``; for
    each method, ``cell`` with that optimizer and ``setting`` at ``a`` against ``b`` on the seeds
    both have (first ``trials`` seeds of each): :func:`~ptqlib.analysis.stats.paired_gain` (Student-t
    intervals: these comparisons have ten seeds or so) of ``b``
    against ``a`` (average and worst class). Returns the table indexed by comparison (``name (b -
    a)``), method and statistic, with columns ``a``, ``b`` and ``b - a`` for the means and their
    difference, and the ``name (method)`` of the comparisons without trials of both settings on
    at least ``min_pairs`` shared seeds (fewer give no usable interval: two equal differences
    would give one of zero width)."""
    rows, missing = [], []
    for name, (factor, a, b, methods) in comparisons.items():
        for method in methods:
            frame = factor_frame(store, replace(cell, optimizer=method), factor, [a, b], trials)
            gain = (paired_gain(frame, factor, a, b, interval="t") if set(frame.get(factor, [])) >= {a, b}
                    else pd.DataFrame())
            if len(gain) and gain["pairs"].min() >= min_pairs:
                rows.append(gain.assign(comparison=f"{name} ({b} - {a})", method=method))
            else:
                pairs = int(gain["pairs"].min()) if len(gain) else 0
                missing.append(f"{name} ({method}" + (f": {pairs} shared seeds)" if pairs else ")"))
    if not rows:
        return pd.DataFrame(), missing
    table = pd.concat(rows, ignore_index=True).set_index(["comparison", "method", "statistic"])
    return table.rename(columns={"mean_a": "a", "mean_b": "b", "diff": "b - a"}), missing


def _worst_by_count(frame: pd.DataFrame) -> pd.DataFrame:
    """Each trial's worst-class accuracy of a :func:`factor_frame` over ``iters``: rows seeds,
    columns counts (NaN where a count lacks the seed)."""
    return frame[frame["class"] != AVERAGE].groupby(["iters", "seed"])["acc"].min().unstack("iters")

def iteration_curve(store: ResultsStore, cell: Cell, methods: list[str], iters: list[int],
                    trials: int, min_reference_trials: int = 3, tolerance: float = 0.3) -> pd.DataFrame:
    """Per reconstruction method and iteration count (the cell's other settings, its variant
    included), over the first ``trials`` seeds each count has: trials, the mean average and
    worst-class accuracy (with the std of the worst class) and the median minutes a trial spent
    calibrating, and ``first_seeds``: whether the count's seeds are 0, 1, ... without a gap.
    Against the ``reference`` count, the largest with at least
    ``min_reference_trials`` trials (else the largest), on every trial of both counts, the seeds
    they share paired and the others independent (the partially overlapping samples t-test,
    :func:`~ptqlib.analysis.stats.mean_difference`): the change of the mean worst class
    (``worst_diff``, this count minus the reference), its standard error and degrees of freedom
    (``diff_se``, ``diff_df``) and 95 % interval (``diff_low``, ``diff_high``; NaN with fewer
    than two trials on a side), the seeds both have (``shared``) and the correlation of their
    worst classes (``shared_r``), the spread a paired change would have (``paired_sd``), the
    margin within which the two counts are shown equivalent by the two one-sided tests at 5 %
    (``equivalent_within``) and about how many seeds run at both counts would put the 95 %
    interval within ``tolerance`` points either way if the change and spread held
    (``seeds_needed``: :func:`~ptqlib.analysis.stats.seeds_for_equivalence`)."""
    compared = ["worst_diff", "diff_se", "diff_df", "diff_low", "diff_high", "shared", "shared_r", "paired_sd",
                "equivalent_within", "seeds_needed"]
    columns = ["method", "iters", "trials", "first_seeds", "avg_mean", "worst_mean", "worst_std", "minutes",
               "reference", *compared]
    rows = []
    for method in methods:
        frame = factor_frame(store, replace(cell, optimizer=method), "iters", iters, trials)
        if frame.empty:
            continue
        stats = worst_class(frame, by=["iters"])[["iters", "trials", "avg_mean", "worst_mean", "worst_std"]]
        seconds = factor_seconds(store, replace(cell, optimizer=method), "iters", iters, trials)
        stats = stats.merge(seconds[["iters", "calib_s"]], on="iters", how="left")
        stats = stats.assign(method=method, minutes=stats.pop("calib_s") / 60)
        worst = _worst_by_count(frame)
        enough = [c for c in worst.columns if worst[c].notna().sum() >= min_reference_trials]
        reference = max(enough) if enough else worst.columns.max()
        stats["reference"] = reference
        stats["first_seeds"] = [bool(set(worst[c].dropna().index) == set(range(int(worst[c].notna().sum()))))
                                for c in stats["iters"]]
        for i, count in enumerate(stats["iters"]):
            if count == reference:
                stats.loc[i, compared] = np.nan
                continue
            d = mean_difference(worst[count], worst[reference])
            stats.loc[i, compared] = [d.diff, d.se, d.df, *d.interval(), d.shared, d.r, d.paired_sd,
                                      d.equivalence_bound(), seeds_for_equivalence(d.diff, d.paired_sd, tolerance)]
        rows.append(stats)
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def curve_cell(cell: Cell, spec: dict) -> Cell:
    """The cell of one iteration curve: ``cell`` with the curve's changes (``spec``, a page's
    ``curve_series`` entry, less its optional ``methods``)."""
    return replace(cell, **{k: v for k, v in spec.items() if k != "methods"})


def iteration_curves(store: ResultsStore, cell: Cell, series: dict[str, dict], methods: list[str],
                     iters: list[int], trials: int, tolerance: float = 0.3) -> pd.DataFrame:
    """:func:`iteration_curve` of every curve of ``series`` (a name -> the curve's changes to
    ``cell`` and optionally its own ``methods``, else ``methods``), stacked, each row's curve
    named in ``variant``; empty (with the columns) when the store has none of their trials."""
    frames = [iteration_curve(store, curve_cell(cell, spec), spec.get("methods", methods), iters, trials,
                              tolerance=tolerance).assign(variant=name) for name, spec in series.items()]
    stored = [f for f in frames if not f.empty]  # an empty frame in concat would turn every column to object
    if not stored:
        return frames[0].iloc[:0] if frames else pd.DataFrame()
    return pd.concat(stored, ignore_index=True)


def curve_reversals(store: ResultsStore, cell: Cell, series: dict[str, dict], methods: list[str],
                    iters: list[int], trials: int, confidence: float = 0.95) -> pd.DataFrame:
    """Every pair of counts of every method of every curve of ``series`` (as
    :func:`iteration_curves` reads it), on the trials the curves read (the first ``trials`` seeds
    of each count): :func:`~ptqlib.analysis.stats.count_reversals`, stacked with the curve's name
    (``variant``) and ``method``, ``p_holm`` Holm-adjusted over every pair of every curve (one
    question asked of them all: does any curve change beyond chance?); a curve with one count
    has no pair and no rows; empty (with the columns) when no curve has two counts."""
    frames = []
    for name, spec in series.items():
        for method in spec.get("methods", methods):
            frame = factor_frame(store, replace(curve_cell(cell, spec), optimizer=method), "iters", iters, trials)
            pairs = count_reversals(_worst_by_count(frame), confidence) if not frame.empty else None
            if pairs is not None and len(pairs):  # a curve of one count has no pair
                frames.append(pairs.assign(variant=name, method=method))
    if not frames:
        return count_reversals(pd.DataFrame()).assign(variant=[], method=[])
    out = pd.concat(frames, ignore_index=True)
    out["p_holm"] = holm(out["p"].to_numpy())
    return out

def reference_curves(cell: Cell, series: dict[str, dict]) -> list[str]:
    """The names of the curves of ``series`` (as :func:`iteration_curves` reads it) that run the
    ``reference`` variant, the one an iteration count is chosen on."""
    return [name for name, spec in series.items() if curve_cell(cell, spec).variant == "reference"]


def study_count(store: ResultsStore, cell: Cell, methods: list[str], iters: list[int], trials: int,
                target: int, margin: float, alpha: float) -> tuple[float, str, pd.DataFrame]:
    """The iteration count the study's reconstruction cells run at, decided on ``cell``'s curve
    (its variant and other settings; :func:`iteration_curve` of ``methods`` at ``iters`` on
    ``trials`` seeds): each method's :func:`~ptqlib.analysis.aggregate.chosen_iters`, then the
    largest over the methods (:func:`~ptqlib.analysis.aggregate.study_iters`). The count (NaN
    until it is decided, by that function's rule), its line, and the curve. Every count of
    ``iters`` must be at most ``target``: the decision compares each with the target."""
    if any(n > target for n in iters):
        raise ValueError(f"iteration counts {sorted(n for n in iters if n > target)} are above the target count "
                         f"{target}: the count decision compares every count with the target; choose counts up to it")
    curve = iteration_curve(store, cell, methods, iters, trials)
    if curve.empty:
        return np.nan, "study-wide count: none yet; no curve trials in the store", curve
    count, line = study_iters(chosen_iters(curve, target, margin, trials, iters, alpha), methods, target)
    return count, line, curve


def rerun_seeds(curve: pd.DataFrame, count: int, methods: list[str], full: int, reduced: int,
                budget_hours: float) -> tuple[int, str]:
    """How many seeds the study's own cell reruns at ``count`` iterations: ``full`` if the trials
    its ``methods`` still lack for ``full`` seeds (beyond the curve's trials at that count, which
    are its first seeds) take at most ``budget_hours`` at the curve's median minutes a trial there,
    else ``reduced``; and a line saying why. ``reduced`` too where the curve has no timed trial of
    a method at the count (nothing to estimate from)."""
    at = curve[curve["iters"] == count].set_index("method").reindex(methods)
    if at["minutes"].isna().any():
        missing = ", ".join(at[at["minutes"].isna()].index)
        return reduced, f"{reduced} seeds: no timed trial of {missing} at {count} iterations to estimate {full} from"
    hours = float((at["minutes"] * (full - at["trials"].clip(upper=full))).sum()) / 60
    if hours <= budget_hours:
        return full, f"{full} seeds: the trials still to run take about {hours:.1f} hours, within {budget_hours:g}"
    return reduced, (f"{reduced} seeds: the trials {full} would still need take about {hours:.1f} hours, "
                     f"more than the budget of {budget_hours:g}")
