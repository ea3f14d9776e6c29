"""Aggregation of trials into the report's tables and figure data (tidy pandas frames).

Input: the tidy per-class frame of :meth:`ResultsStore.per_class` (one row per trial and
class, with ``acc``, ``fp_acc`` and ``drop``). ``"Average"`` rows are added from each trial's
mean over classes, so the average and the classes can be compared in one table.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

AVERAGE = "Average"


def with_average(per_class: pd.DataFrame) -> pd.DataFrame:
    """Append, for every trial, a row ``class == "Average"`` (mean over its classes)."""
    keys = [c for c in per_class.columns if c not in ("class", "acc", "fp_acc", "drop")]
    avg = per_class.groupby(keys, dropna=False, as_index=False)[["acc", "fp_acc", "drop"]].mean()
    avg["class"] = AVERAGE
    return pd.concat([per_class, avg], ignore_index=True)


def class_summary(per_class: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per class (and per level of ``by``): trials, mean and std of accuracy over trials, FP
    accuracy, mean and max drop."""
    groups = [*(by or []), "class"]
    g = with_average(per_class).groupby(groups, dropna=False, sort=False)
    out = g.agg(trials=("acc", "size"), mean=("acc", "mean"), std=("acc", "std"), fp=("fp_acc", "first"),
                mean_drop=("drop", "mean"), max_drop=("drop", "max"), min_acc=("acc", "min"))
    return out.reset_index()


def worst_class(per_class: pd.DataFrame, by: list[str] | None = None, k: int = 3) -> pd.DataFrame:
    """Per level of ``by``, over trials: the mean average accuracy; each trial's worst-class
    accuracy as mean, std, 5th percentile and minimum, and the class most often worst; and
    ``worst{k}_mean``, the mean of each trial's ``k`` worst classes (``k`` at most the number of
    classes)."""
    by = list(by or [])
    classes = per_class[per_class["class"] != AVERAGE].reset_index(drop=True)  # .loc below needs unique labels
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive number of classes, got {k!r}")
    k = min(k, classes["class"].nunique())
    keys = [*by, "key"]
    trial = classes.groupby(keys, dropna=False)["acc"].agg(
        avg="mean", worst="min", worst_k=lambda a: np.sort(a.to_numpy())[:k].mean()).reset_index()
    trial["worst_name"] = classes.loc[classes.groupby(keys, dropna=False)["acc"].idxmin(), "class"].to_numpy()
    groups = trial.groupby(by, dropna=False) if by else trial.assign(_all=0).groupby("_all")
    out = groups.agg(trials=("key", "size"), avg_mean=("avg", "mean"), worst_mean=("worst", "mean"),
                     worst_std=("worst", "std"), worst_p5=("worst", lambda w: np.percentile(w, 5)),
                     worst_min=("worst", "min"), worst_k_mean=("worst_k", "mean"),
                     most_often=("worst_name", lambda s: s.mode().iloc[0])).reset_index()
    return out.drop(columns="_all", errors="ignore").rename(columns={"worst_k_mean": f"worst{k}_mean"})


def reliability_summary(per_class: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per level of ``by``: trials, the average's mean and std over trials, the worst
    class's mean and std (as :func:`worst_class`), the median over classes of each class's std,
    and the largest mean class drop with its class."""
    worst = worst_class(per_class, by=by)[[*by, "trials", "avg_mean", "worst_mean", "worst_std", "most_often"]]
    summary = class_summary(per_class, by=by)
    avg = summary[summary["class"] == AVERAGE][[*by, "std"]].rename(columns={"std": "avg_std"})
    classes = summary[summary["class"] != AVERAGE]
    largest = classes.loc[classes.groupby(by, dropna=False)["mean_drop"].idxmax(), [*by, "mean_drop", "class"]]
    spread = classes.groupby(by, dropna=False, as_index=False)["std"].median().rename(columns={"std": "class_std_median"})
    out = worst.merge(avg, on=by).merge(spread, on=by).merge(
        largest.rename(columns={"mean_drop": "max_class_drop", "class": "max_drop_class"}), on=by)
    return out[[*by, "trials", "avg_mean", "avg_std", "worst_mean", "worst_std", "most_often", "class_std_median",
                "max_class_drop", "max_drop_class"]]


def model_summary_lines(summary: pd.DataFrame) -> list[str]:
    """One line per model of a :func:`reliability_summary` by ``model`` (e.g.
    :func:`ptqlib.analysis.cells.default_summaries`): its trials, the average and the worst class
    (mean, std, the class most often worst) and the largest mean class drop."""
    return [f"{r.model} ({r.trials} trials of the default cell): average {r.avg_mean:.2f} % (std {r.avg_std:.2f}); "
            f"worst class {r.worst_mean:.2f} % (std {r.worst_std:.2f}, most often '{r.most_often}'); largest class "
            f"drop {r.max_class_drop:.2f} ('{r.max_drop_class}')" for r in summary.itertuples()]

def heatmap_data(per_class: pd.DataFrame, factor: str, baseline) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = classes + Average, columns = levels of ``factor``: the change of the mean accuracy
    and of its std against the ``baseline`` level (the study's noise and bias heatmaps)."""
    summary = class_summary(per_class, by=[factor])
    mean = summary.pivot(index="class", columns=factor, values="mean").astype(float)
    std = summary.pivot(index="class", columns=factor, values="std").astype(float)
    if baseline not in mean.columns:
        raise ValueError(f"baseline level {baseline!r} of {factor} is not in the results: {list(mean.columns)}")
    order = [c for c in mean.index if c != AVERAGE] + [AVERAGE]
    return (mean.sub(mean[baseline], axis=0).loc[order], std.sub(std[baseline], axis=0).loc[order])


def class_range_lines(table: pd.DataFrame, label: str, average: str, signed: bool = False, itself: bool = False,
                      std_change: pd.DataFrame | None = None) -> list[str]:
    """One line per column (a level) of a classes-by-levels ``table`` with an ``Average`` row
    (e.g. :func:`heatmap_data`'s changes, or drops, or stds): ``label`` with the level put in
    (``"noise {:g}"``), the average's value (named ``average``), and the classes' range (lowest
    and highest with their classes) and median; ``signed`` writes values with their sign.
    ``itself``: the level is a class (the class a calibration set is biased towards), whose own
    value the line gives too; ``std_change``: a table of the same shape whose largest absolute
    class change the line adds."""
    fmt = "{:+.2f}" if signed else "{:.2f}"
    lines = []
    for level in table.columns:
        col = table[level].drop(index=AVERAGE)
        text = (f"{label.format(level)}: {average} {fmt.format(table.loc[AVERAGE, level])}"
                + (f", the class itself {fmt.format(table.loc[level, level])}" if itself else "")
                + f"; classes from {fmt.format(col.min())} ('{col.idxmin()}') to {fmt.format(col.max())} "
                  f"('{col.idxmax()}'), median {fmt.format(col.median())}")
        if std_change is not None:
            text += f"; largest std change {std_change[level].drop(index=AVERAGE).abs().max():.2f}"
        lines.append(text)
    return lines


def converged_iters(curve: pd.DataFrame, tolerance: float = 0.3) -> pd.Series:
    """Per method of an :func:`ptqlib.analysis.cells.iteration_curve`: the smallest iteration count
    shown equivalent to the reference count (its ``reference`` column; without one, the largest),
    that is whose change of the worst class against it has its whole 95 % interval within
    ``tolerance`` points either way. NaN where no smaller count is shown equivalent: too few
    seeds, an interval too wide, or a real change (the reference cannot be told from a count that
    is still improving)."""
    out = {}
    for method, group in curve.groupby("method", sort=False):
        group = group.sort_values("iters")
        reference = group["reference"] if "reference" in group else group["iters"].max()
        within = group[(group["iters"] < reference) & (group["diff_low"] >= -tolerance)
                       & (group["diff_high"] <= tolerance)]
        out[method] = float(within["iters"].iloc[0]) if len(within) else np.nan
    return pd.Series(out, name="converged_iters", dtype=float)


def curve_lines(curve: pd.DataFrame, tolerance: float = 0.3) -> list[str]:
    """One line per method of an :func:`ptqlib.analysis.cells.iteration_curve` frame (with a
    ``variant`` column where it stacks several curves): each count's change of the worst class
    against the reference count with its 95 % interval, trials and shared seeds; for a count whose
    interval is not within ``tolerance`` either way, about how many seeds run at both would show
    it within (all shared), or why no number would (its change alone is at least ``tolerance``);
    the converged count (:func:`converged_iters`) and the counts whose interval lies clear of 0
    (each one uncorrected test at 5 %)."""
    from ptqlib.analysis.stats import seeds_for_equivalence  # here: stats imports this module

    by = ["variant", "method"] if "variant" in curve else ["method"]
    lines = []
    for keys, group in curve.groupby(by, sort=False):
        name = " ".join(map(str, keys if isinstance(keys, tuple) else (keys,)))
        reference = int(group["reference"].iloc[0])
        at_reference = int(group.loc[group["iters"] == reference, "trials"].iloc[0])

        def needed(r) -> str:  # what would show a count within the tolerance, where it is not yet
            if r.diff_low >= -tolerance and r.diff_high <= tolerance:
                return ""
            seeds = seeds_for_equivalence(r.worst_diff, r.paired_sd, tolerance)  # at this tolerance
            if np.isinf(seeds):
                return (f"; its estimated change alone is beyond {tolerance}: if it held, no number of seeds "
                        "would show it within")
            if np.isfinite(seeds):
                return f"; ~{seeds:.0f} seeds run at both would show it within {tolerance}"
            return ""

        compared = [f"{r.iters}: {r.worst_diff:+.2f}"
                    + (f" [{r.diff_low:+.2f}, {r.diff_high:+.2f}]" if np.isfinite(r.diff_low) else " (no interval)")
                    + f" ({r.trials:.0f} against {at_reference} trials, {r.shared:.0f} shared" + needed(r) + ")"
                    for r in group.itertuples() if np.isfinite(r.worst_diff)]
        if not compared:
            lines.append(f"{name}: a single count ({reference}): no convergence to read")
            continue
        converged = converged_iters(group, tolerance).iloc[0]
        differs = [f"{r.iters} ({r.worst_diff:+.2f})" for r in group.itertuples() if r.diff_low > 0 or r.diff_high < 0]
        lines.append(f"{name}: worst class against {reference} iterations: " + "; ".join(compared)
                     + (f" -> converged at {int(converged)}" if converged == converged
                        else f" -> no smaller count shown within {tolerance} points")
                     + (f"; differs from {reference} (interval clear of 0, one uncorrected test each; the pairs of counts "
                        "below are corrected for all) at " + ", ".join(differs) if differs else ""))
    return lines


def reversal_lines(reversals: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """One line per curve and method of a :func:`ptqlib.analysis.cells.curve_reversals` frame:
    the pairs of counts whose change of the mean worst class is beyond chance (adjusted p below
    ``alpha``; the frame's Holm adjustment, over every pair it holds), those where more
    iterations made it worse and those where they made it better, each with its change, 95 %
    interval and adjusted p; or that none is, with the smallest adjusted p."""
    from ptqlib.analysis.stats import p_value  # stats builds on this module

    lines = []
    family = int(reversals["p_holm"].notna().sum())
    for (name, method), group in reversals.groupby(["variant", "method"], sort=False):
        tested = group[group["p_holm"].notna()]
        if tested.empty:
            lines.append(f"{name} {method}: no pair of counts with a test (two trials each, and some spread)")
            continue
        head = (f"{name} {method}, {len(tested)} pairs of counts (t-tests on the trials of both, two-sided, "
                f"Holm over the {family} pairs of all curves at {alpha:g})")
        found = tested[tested["p_holm"] < alpha]
        if found.empty:
            lines.append(f"{head}: no change beyond chance either way "
                         f"({p_value(tested['p_holm'].min(), 'smallest Holm-adjusted p')})")
            continue

        def listed(rows: pd.DataFrame) -> str:
            return ", ".join(f"{r.lower} -> {r.higher} {r.diff:+.2f} [{r.low:+.2f}, {r.high:+.2f}] "
                             f"({p_value(r.p_holm)})" for r in rows.itertuples()) or "none"

        lines.append(f"{head}: worse with more iterations: {listed(found[found['diff'] < 0])}; "
                     f"better with more iterations: {listed(found[found['diff'] > 0])}")
    return lines

def on_fixed_sample(rows: pd.DataFrame, trials: int) -> pd.Series:
    """Per row of an :func:`ptqlib.analysis.cells.iteration_curve`: whether the count rests on
    the count decision's fixed sample, ``trials`` trials that are seeds 0 to ``trials - 1`` (the
    curve's ``first_seeds``, where it has the column; see :func:`chosen_iters`)."""
    first = rows["first_seeds"].astype(bool) if "first_seeds" in rows else True
    return (rows["trials"] >= trials) & first


def equivalence_interval(row, alpha: float = 0.05) -> tuple[float, float, float]:
    """``(low, high, bound)`` for one count of an :func:`ptqlib.analysis.cells.iteration_curve`
    row (its ``worst_diff``, ``diff_se``, ``diff_df``): the ``1 - 2 alpha`` interval of the
    change of the worst class, whose lying within ``+-d`` is the two one-sided tests at level
    ``alpha`` showing the count within ``d`` points of the reference, and the smallest such ``d``
    (the end farther from 0; :meth:`ptqlib.analysis.stats.MeanDifference.equivalence_bound`). NaN
    without a standard error."""
    from ptqlib.analysis.stats import MeanDifference  # stats builds on this module

    d = MeanDifference(row.worst_diff, row.diff_se, row.diff_df, np.nan, np.nan, 0)
    return (*d.interval(1 - 2 * alpha), d.equivalence_bound(alpha))


class _CountState(NamedTuple):
    """One count of the count decision's fixed sequence (:func:`_decision_walk`)."""
    count: int
    have: int  # trials stored at the count
    missing: int  # trials its fixed sample lacks (all of them where its seeds have a gap)
    exact: bool  # False where the seeds have a gap: ``missing`` is then an upper bound
    state: str  # "lacking", "untested" (the target lacks trials), "passed" or "failed"
    numbers: str = ""  # the change, its interval and the margin it is shown within, once tested


def _fixed_sample(group: pd.DataFrame, count: int, trials: int) -> tuple[int, int, bool]:
    """``(have, missing, exact)`` of one count of a curve indexed by ``iters``: the trials stored,
    those the fixed sample (seeds 0 to ``trials - 1``) lacks, and whether that is exact."""
    if count not in group.index:
        return 0, trials, True
    row = group.loc[count]
    have = int(row["trials"])
    gap = "first_seeds" in row and not bool(row["first_seeds"])
    if have >= trials and not gap:  # as on_fixed_sample: the trials, and seeds 0 up
        return have, 0, True
    return have, trials if gap else trials - have, not gap


def _decision_walk(group: pd.DataFrame, target: int, sequence: list[int], trials: int, margin: float,
                   alpha: float):
    """The count decision's fixed sequence over one method's curve (indexed by ``iters``): a
    :class:`_CountState` per count of ``sequence`` (largest first), ending after the first count
    that fails its test. A count is tested once it and ``target`` have their fixed samples."""
    target_ready = _fixed_sample(group, target, trials)[1] == 0
    for count in sequence:
        have, missing, exact = _fixed_sample(group, count, trials)
        if missing:
            yield _CountState(count, have, missing, exact, "lacking")
            continue
        if not target_ready:
            yield _CountState(count, have, 0, True, "untested")
            continue
        r = group.loc[count]
        low, high, bound = equivalence_interval(r, alpha)
        level = f"{(1 - 2 * alpha) * 100:g} %"
        numbers = f"{count}: {r.worst_diff:+.2f} [{low:+.2f}, {high:+.2f}] ({level}), within {bound:.2f}"
        passed = bound <= margin
        yield _CountState(count, have, 0, True, "passed" if passed else "failed", numbers)
        if not passed:
            return


def chosen_iters(curve: pd.DataFrame, target: int = 20000, margin: float = 1.0, trials: int = 10,
                 counts: list[int] | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """The iteration count to run a study at, per method of an
    :func:`ptqlib.analysis.cells.iteration_curve` whose reference count is ``target`` (the
    reference code's count), built with ``trials`` as its cap of seeds per count: a fixed-sequence
    test. From the largest count below ``target`` down (``counts``, default the curve's), each
    count is tested once it and ``target`` have ``trials`` trials, seeds 0 to ``trials - 1``
    (the curve's ``first_seeds``, where it has the column): is its mean worst class shown
    within ``margin`` points of ``target``'s either way by the two one-sided tests at ``alpha``
    (:func:`equivalence_interval`; the change from the partially overlapping samples t-test)? The
    sequence stops at the first count that fails or waits for trials, and the chosen count is the
    last that passed (``target`` itself when the first count tested fails, or when ``counts``
    has no smaller count), so every count from it up to ``target`` passed, and the chance of choosing
    a count that is not within the margin stays at most ``alpha`` without a correction for the
    several tests. Testing each count once, on a number of trials fixed in advance, keeps a
    count from passing by being tested again as trials arrive. A count better than ``target`` by
    more than the margin fails too: it would not measure what ``target`` measures. Meant for a
    decision, not a claim of convergence (:func:`converged_iters` asks for the far smaller
    ``tolerance``). Columns ``chosen`` (NaN while the target or the first count tested waits
    for its trials, while the curve has no count below ``target`` and ``counts`` is not given,
    and where the curve's reference count is not ``target``), ``why`` (each count tested or
    waited for, with its change, the ``1 - 2 alpha`` interval and the margin it is shown within)
    ``reached``: whether the curve's reference count is ``target`` with ``trials`` trials
    (else it says nothing about the choice yet), and ``final``: whether the sequence has ended
    (a count failed, or every count passed). While a smaller count waits for its trials,
    ``chosen`` is the last count that passed so far, an upper bound of the final choice."""
    if (curve["trials"] > trials).any():
        raise ValueError(f"the curve has more than {trials} trials at a count; the test runs on exactly {trials}: "
                         f"build the curve with trials={trials}")
    rows = []
    for method, group in curve.groupby("method", sort=False):
        group = group.set_index("iters").sort_index()
        reference = int(group["reference"].iloc[0]) if "reference" in group else int(group.index.max())
        have, missing, _ = _fixed_sample(group, target, trials)
        if missing or reference != target:
            why = (f"the curve's reference count is {reference}, not {target}" if not missing
                   else f"{target} iterations: {have} of {trials} trials" if have < trials
                   else f"{target} iterations: its seeds are not 0 to {trials - 1}")
            rows.append((method, np.nan, why, False, False))
            continue
        sequence = sorted((c for c in (counts if counts is not None else group.index) if c < target), reverse=True)
        if counts is None and not sequence:  # the curve has no smaller count yet: nothing to decide on
            rows.append((method, np.nan, f"no count below {target} in the curve yet", True, False))
            continue
        chosen, lines, stop, waiting = np.nan, [], "", False
        for step in _decision_walk(group, target, sequence, trials, margin, alpha):
            if step.state == "passed":
                chosen = float(step.count)
                lines.append(step.numbers)
                continue
            if step.state == "failed":
                stop = step.numbers + f", not within {margin}"
            else:  # lacking: the target has its sample, so nothing is "untested"
                stop = (f"{step.count}: {step.have} of {trials} trials, waiting" if step.have < trials
                        else f"{step.count}: its seeds are not 0 to {trials - 1}, waiting")
                waiting = True
            break
        if chosen == chosen and waiting:
            head = f"{int(chosen)} so far, shown within {margin} points of {target}; a smaller count waits for trials"
        elif chosen == chosen:
            head = f"{int(chosen)}: shown within {margin} points of {target}"
        elif waiting:
            head = f"no count below {target} shown within {margin} points yet"
        else:  # the sequence ended without a count passing: the study runs at the reference count
            chosen = float(target)
            head = f"{target}: no count below it shown within {margin} points"
        steps = lines + ([stop] if stop else [])
        rows.append((method, chosen, head + (": " + "; ".join(steps) if steps else ""), True, not waiting))
    return pd.DataFrame(rows, columns=["method", "chosen", "why", "reached", "final"]).set_index("method")


def decision_backlog(curve: pd.DataFrame, counts: list[int], target: int = 20000, trials: int = 10,
                     margin: float = 1.0, alpha: float = 0.05, methods: list[str] | None = None) -> pd.DataFrame:
    """What :func:`chosen_iters` (same arguments) still waits for, per method of an
    :func:`ptqlib.analysis.cells.iteration_curve`: walking its sequence (``target``, then each
    count of ``counts`` below it from the top), the trials of the fixed sample (seeds 0 to
    ``trials - 1``) each count lacks, and the hours they would take at the count's median
    calibration minutes a trial (NaN where the count has no trials to time). ``needed``: the
    decision tests the count whatever happens (the target, and the first count whose test is
    not decided yet); False: only if every count above it passes. A count below one that failed
    is not needed at all and is left out, as is everything once a method's decision is made.
    So is every count whose outcome cannot change the study-wide count (:func:`study_iters`, the
    largest of the methods' counts): one whose failure would leave its method at or below the
    largest count some method has already decided (the floor), and everything once the floor is
    ``target``. A count whose seeds have a gap is charged every trial of the sample (``exact`` False: an
    upper bound, the curve does not say which seeds it lacks). ``methods``: those to walk, in
    this order (default the curve's; one without any trial in the curve lacks every count).
    Columns ``method``, ``iters``, ``missing``, ``exact``, ``hours``, ``needed``."""
    if curve.empty:
        curve = pd.DataFrame(columns=["method", "iters", "trials", "minutes"])
    methods = list(methods) if methods is not None else list(dict.fromkeys(curve["method"]))
    curve = curve[curve["method"].isin(methods)]
    if (curve["trials"] > trials).any():
        raise ValueError(f"the curve has more than {trials} trials at a count; build it with trials={trials}")
    above_target = sorted({int(c) for c in [*counts, *curve["iters"]] if c > target})
    if above_target:
        raise ValueError(f"counts above the target {target} ({above_target}): the decision measures every count "
                         "against the target; build the curve from counts up to it")
    floor = -np.inf  # the largest count some method has decided on: the study-wide count is at least that
    if len(curve):
        choices = chosen_iters(curve, target, margin, trials, counts, alpha)
        decided = method_counts(choices, methods, target)["decided"].max()
        floor = decided if decided == decided else floor
    rows = []
    columns = ["method", "iters", "missing", "exact", "hours", "needed"]
    if floor >= target:  # the study runs at the target whatever the methods' tests give
        return pd.DataFrame(columns=columns)
    sequence = sorted((c for c in counts if c < target), reverse=True)
    above = dict(zip(sequence, [target, *sequence]))  # the count a failed test leaves a method at
    for method in methods:
        group = curve[curve["method"] == method].set_index("iters").sort_index()

        def hours(count, missing) -> float:
            return missing * float(group.loc[count, "minutes"]) / 60 if count in group.index else np.nan

        _, missing, exact = _fixed_sample(group, target, trials)
        if missing:
            rows.append((method, target, missing, exact, hours(target, missing), True))
        reached = True  # the sequence tests this count whatever the outcomes still open
        for step in _decision_walk(group, target, sequence, trials, margin, alpha):
            if above[step.count] <= floor:
                break  # pass or fail, the method ends at or below the floor: the study count stays
            if step.state == "lacking":
                rows.append((method, step.count, step.missing, step.exact, hours(step.count, step.missing), reached))
                reached = False
            elif step.state == "untested":
                reached = False  # its test waits for the target: what comes below is open
    return pd.DataFrame(rows, columns=columns)


def count_choices(curves: pd.DataFrame, names: list[str], target: int, margin: float, trials: int,
                  counts: list[int], alpha: float) -> pd.DataFrame:
    """:func:`chosen_iters` of each curve of ``curves`` (an iteration-curve frame with a
    ``variant`` column naming its curves) whose name is in ``names``, one row per curve and
    method, indexed by ``variant`` and ``method``, with the count and why; empty when none of
    those curves is in the frame."""
    picked = curves[curves["variant"].isin(names)] if not curves.empty else curves
    frames = [chosen_iters(group, target, margin, trials, counts, alpha).assign(variant=name)
              for name, group in picked.groupby("variant", sort=False)] if not picked.empty else []
    if not frames:
        return pd.DataFrame(columns=["chosen", "why"])
    return pd.concat(frames).reset_index().set_index(["variant", "method"])[["chosen", "why"]]


def gap_lines(curves: pd.DataFrame, name: str, count: int) -> list[str]:
    """For curve ``name`` of ``curves``, per method: its mean worst class at ``count`` iterations
    against the curve's reference count, with the 95 % interval (the curve's comparison)."""
    if curves.empty:
        return []
    rows = curves[(curves["variant"] == name) & (curves["iters"] == count)].dropna(subset=["worst_diff"])
    return [f"{name} curve, {r.method}: worst class at {count} minus at {int(r.reference)} iterations "
            f"{r.worst_diff:+.2f} [{r.diff_low:+.2f}, {r.diff_high:+.2f}] points (95 %; the trials of both: "
            "the curve's lines above)" for r in rows.itertuples()]


def backlog_lines(backlog: pd.DataFrame, methods: list[str]) -> list[str]:
    """:func:`decision_backlog` in words, a line per method of ``methods``."""
    def listed(rows: pd.DataFrame) -> str:
        return ", ".join(f"{'' if r.exact else 'up to '}{r.missing} at {r.iters}"
                         + (f" (about {r.hours:.1f} h)" if r.hours == r.hours else "") for r in rows.itertuples())

    lines = []
    for method in methods:
        rows = backlog[backlog["method"] == method]
        if rows.empty:
            lines.append(f"{method}: no trial left that the study-wide count needs")
            continue
        needed, maybe = rows[rows["needed"].astype(bool)], rows[~rows["needed"].astype(bool)]
        first, most = needed["hours"].sum(min_count=1), rows["hours"].sum(min_count=1)
        text = f"{method}: the decision waits for {listed(needed)}"
        if len(maybe):
            text += f"; then, if the counts above pass, {listed(maybe)}"
        if first == first:
            text += (f"; about {first:.1f} hours of calibration at the stored median times (one trial at a time)"
                     + (f", up to {most:.1f}" if len(maybe) and most > first else ""))
            if rows["hours"].isna().any():
                text += " (counts without a timed trial not counted)"
        lines.append(text)
    return lines


def method_counts(choices: pd.DataFrame, methods: list[str], target: int) -> pd.DataFrame:
    """Per method of ``methods``, from :func:`chosen_iters` tables (one or several stacked, indexed
    by method, e.g. one per convention a method ran under): ``decided``, its count once every
    curve of it has reached ``target`` and has a final count (the largest of theirs), else NaN;
    and ``bound``, the largest count it can still end at: its decided count, else ``target`` while
    it has no curve or a curve short of the target (that curve may still ask for the target),
    else the largest over its curves of the count passed so far (``target`` where none has)."""
    rows = []
    for method in methods:
        mine = choices[choices.index == method]
        reached, final = mine["reached"].astype(bool), mine["final"].astype(bool)
        if len(mine) and reached.all() and final.all() and mine["chosen"].notna().all():
            count = float(mine["chosen"].max())
            rows.append((method, count, count))
        else:
            bound = float(mine["chosen"].fillna(target).max()) if len(mine) and reached.all() else float(target)
            rows.append((method, np.nan, bound))
    return pd.DataFrame(rows, columns=["method", "decided", "bound"]).set_index("method")


def study_iters(choices: pd.DataFrame, methods: list[str], target: int) -> tuple[float, str]:
    """One count for every method of a study (:func:`method_counts` of ``choices``): the largest
    of the methods' counts. With the same sequence of counts for every method, each method's
    chosen count is the bottom of an unbroken run of passed counts up to the target, so the
    study-wide count passed for every method. It is decided once every method has a count, or
    once the largest decided count is at least every other method's bound (whatever those
    methods end at, the largest stays the same; the line says so). NaN, and a line saying which
    methods have no qualifying count, until then."""
    per = method_counts(choices, methods, target)
    floor = per["decided"].max()
    done = ", ".join(f"{m} {int(c)}" for m, c in per["decided"].dropna().items())
    open_ = per[per["decided"].isna()]
    if len(open_) and not (floor == floor and (open_["bound"] <= floor).all()):
        pending = ", ".join(open_.index)
        return np.nan, f"study-wide count: none yet; no qualifying count for {pending}" + (
            f" (chosen so far: {done})" if done else "")
    bounded = "".join(f"; {m} at most {int(b)}, its smaller counts cannot change the count"
                      for m, b in open_["bound"].items())
    return float(floor), f"study-wide count: {int(floor)} iterations per unit (per method: {done}{bounded})"


def gains_against(per_class: pd.DataFrame, factor: str, base) -> pd.DataFrame:
    """Each other level of ``factor`` against ``base`` (indexed by level, in the frame's order):
    the change of the mean average accuracy (points), how many of the classes lose mean
    accuracy, the largest class loss and its class, and the change of the mean worst-class
    accuracy. Empty when ``base`` has no trials."""
    columns = ["average", "classes_losing", "classes", "largest_loss", "largest_loss_class", "worst_class"]
    means = class_summary(per_class, by=[factor]).pivot(index="class", columns=factor, values="mean")
    if base not in means.columns:
        return pd.DataFrame(columns=columns)
    worst = worst_class(per_class, by=[factor]).set_index(factor)["worst_mean"]
    rows = {}
    for level in [lv for lv in dict.fromkeys(per_class[factor]) if lv != base]:  # in the frame's order
        gain = means[level] - means[base]
        classes = gain.drop(index=AVERAGE)
        rows[level] = {"average": gain[AVERAGE], "classes_losing": int((classes < 0).sum()), "classes": len(classes),
                       "largest_loss": classes.min(), "largest_loss_class": classes.idxmin(),
                       "worst_class": worst[level] - worst[base]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def ordered_levels(frame: pd.DataFrame, factor: str, levels: list) -> pd.DataFrame:
    """``frame`` with ``factor`` an ordered categorical in the order of ``levels`` (those present)."""
    present = set(frame[factor])
    out = frame.copy()
    out[factor] = out[factor].astype("category").cat.set_categories([lv for lv in levels if lv in present],
                                                                    ordered=True)
    return out


def sorted_by(frame: pd.DataFrame, orders: dict[str, list]) -> pd.DataFrame:
    """``frame`` sorted by the columns of ``orders`` in turn, each in the order its list gives
    (values not in the list after those in it, in their own order)."""
    def rank(column: pd.Series) -> pd.Series:
        order = orders[column.name]
        return column.map(lambda v: order.index(v) if v in order else len(order))

    return frame.sort_values(list(orders), key=rank, kind="stable")

def varying_settings(trials: pd.DataFrame, exclude: tuple[str, ...] = ("weights", "seed")) -> list[str]:
    """The settings (:data:`ptqlib.study.settings.COLUMNS`, in their order, less ``exclude``) that
    take more than one value among ``trials``; the first setting when none does."""
    from ptqlib.study.settings import COLUMNS

    shown = [c for c in COLUMNS if c not in exclude and c in trials.columns]
    return [c for c in shown if trials[c].nunique(dropna=False) > 1] or shown[:1]


def _dash_missing(table: pd.DataFrame) -> pd.DataFrame:
    index = table.index.to_frame(index=False).astype(object)
    index = index.where(index.notna(), "-")
    table.index = pd.MultiIndex.from_frame(index) if index.shape[1] > 1 else pd.Index(index.iloc[:, 0])
    return table


def inventory(trials: pd.DataFrame) -> pd.DataFrame:
    """The stored trials per configuration (by :func:`varying_settings`): how many, their mean
    average accuracy and mean seconds per trial (calibration plus evaluation); a setting's
    missing value (no bias class, grid search's iterations) shows as ``-``."""
    frame = trials.assign(trial_s=trials["calib_s"] + trials["eval_s"])
    table = frame.groupby(varying_settings(trials), dropna=False).agg(
        trials=("key", "size"), mean_acc=("avg", "mean"), seconds_per_trial=("trial_s", "mean"))
    return _dash_missing(table)


def ece_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The expected calibration error (%) of the trials that recorded it (trials stored before it
    have none): number of trials, mean and std per configuration (by :func:`varying_settings`,
    model and dataset left out); a setting's missing value shows as ``-``."""
    recorded = trials[trials["ece"].notna()]
    keys = varying_settings(recorded, exclude=("model", "dataset", "weights", "seed"))
    return _dash_missing(recorded.groupby(keys, dropna=False)["ece"].agg(trials="size", mean="mean", std="std"))
