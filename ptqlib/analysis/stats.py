"""Worst-case statistics over trials: what an average hides.

Input is the tidy per-class frame of :meth:`ResultsStore.per_class` (one row per trial and
class with ``acc``, ``fp_acc`` and ``drop``) and, for prediction-level effects, the stored
predicted labels.

- (worst-class accuracy over trials is summarised by :func:`ptqlib.analysis.aggregate.worst_class`);
- per-class mean drop with bootstrap confidence intervals over trials
  (:func:`scipy.stats.bootstrap`, read at Hesterberg's expanded percentile tails:
  :func:`expanded_tail`);
- a paired test between two settings run on the same seeds (same calibration draws up to the
  factor), per class (:func:`scipy.stats.wilcoxon`), with Holm's correction for the number of
  classes tested; and, for the average and each trial's worst class, the paired gain with its
  bootstrap interval (:func:`paired_gain`);
- the difference of two samples' means where some seeds ran in both (the partially overlapping
  samples t-test, :func:`mean_difference`), for iteration counts and models compared on the
  same seeds (:func:`model_contrasts`), and every pair of an iteration curve's counts
  (:func:`count_reversals`);
- churn against the float model (flip rate, and how many flips were right before) and
  *quantization-identified exemplars*: test images whose most frequent prediction over the
  trials differs from the float prediction (Hooker et al. 2019, "What do compressed deep
  neural networks forget?", arXiv:1911.05248).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ptqlib.analysis.aggregate import AVERAGE, gains_against, with_average


MAX_RESAMPLES = 100_000  # at most (below 5 trials fewer than 20 then fall beyond each end)
BOOTSTRAP_FROM = 5  # fewest trials bootstrap_mean_ci resamples (below: Student's t)


def expanded_tail(n: int, confidence: float = 0.95) -> float:
    """The tail probability at which a percentile bootstrap over ``n`` trials is read: Hesterberg's
    expanded percentile interval (Hesterberg 2015, "What teachers should know about the
    bootstrap", The American Statistician 69(4)), whose normal quantile is stretched to
    ``sqrt(n / (n - 1))`` times Student's with ``n - 1`` degrees of freedom. The plain percentile
    interval of a mean covers about 88 % instead of 95 % on 7 normal trials and 94 % on 50; the
    expanded one about 93 and 95 % (``results/stats/bootstrap-coverage.txt``; on 5 trials 84
    against 92 %). For statistics other than a mean it is the same small-sample widening, not an
    exact correction."""
    if n < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 trials, got {n}")
    stretch = np.sqrt(n / (n - 1)) * stats.t.ppf(1 - (1 - confidence) / 2, n - 1)
    return float(stats.norm.cdf(-stretch))


def resamples_for(tail: float, resamples: int = 2000) -> int:
    """Bootstrap resamples to read quantiles at ``tail`` and ``1 - tail``: at least ``resamples``,
    enough for 20 beyond each end, at most :data:`MAX_RESAMPLES`."""
    return min(max(resamples, int(np.ceil(20 / tail))), MAX_RESAMPLES)


def bootstrap_mean_ci(values: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (one per trial), read at
    the tails of the expanded percentile interval (:func:`expanded_tail`), which keeps its
    coverage from about 5 trials up (``results/stats/bootstrap-coverage.txt``); at least
    ``n_resamples`` resamples (:func:`resamples_for`). Below :data:`BOOTSTRAP_FROM` trials no
    resampling of so few values reaches its coverage (on 2 normal trials the expanded interval is
    their range, which covers the mean half the time), and the interval is Student's
    (:func:`t_mean_ci`) instead."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (np.nan, np.nan)
    if np.all(values == values[0]):  # no spread: every resample has the same mean
        return (float(values[0]), float(values[0]))
    if len(values) < BOOTSTRAP_FROM:
        return t_mean_ci(values, confidence)
    tail = expanded_tail(len(values), confidence)
    res = stats.bootstrap((values,), np.mean, confidence_level=1 - 2 * tail,
                          n_resamples=resamples_for(tail, n_resamples), method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (``mean +- t * sd / sqrt(n)``, n - 1
    degrees of freedom). For the few paired seeds of a costly comparison (3 to 10) it keeps close
    to its stated coverage where the percentile bootstrap, whose resamples of 3 values take only
    10 distinct means, is far too narrow. NaN with fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (np.nan, np.nan)
    mean, se = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * se
    return float(mean - half), float(mean + half)


def seeds_for_equivalence(mean: float, sd: float, tolerance: float, confidence: float = 0.95) -> float:
    """About how many paired seeds a mean difference needs before its ``confidence`` Student-t
    interval (:func:`t_mean_ci`: ``mean +- t(n - 1) * sd / sqrt(n)``) fits within ``tolerance``
    either way, if the observed ``mean`` and per-seed ``sd`` held: the smallest such ``n``, at
    least 2. Infinite when ``|mean| >= tolerance`` (no number of seeds shows it equivalent), NaN
    when ``sd`` is unknown."""
    if not np.isfinite(sd) or not np.isfinite(mean):
        return np.nan
    return _seeds_for_half_width(sd, tolerance - abs(mean), tolerance, confidence)


def _seeds_for_half_width(sd: float, room: float, scale: float, confidence: float) -> float:
    """The smallest ``n >= 2`` whose interval half-width ``t(n - 1) * sd / sqrt(n)`` is at most
    ``room``; infinite when ``room`` is 0 or less (up to rounding at ``scale``)."""
    if room <= 1e-9 * max(1.0, scale):
        return np.inf
    z = stats.norm.ppf(0.5 + confidence / 2)
    n = max(2, int(np.ceil((z * sd / room) ** 2)))  # the normal answer: t needs at least as many
    while stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n) > room:
        n += 1
    return float(n)


@dataclass(frozen=True)
class MeanDifference:
    """``mean(a) - mean(b)`` of two samples keyed by seed, some seeds in both (partially
    overlapping samples): its standard error and degrees of freedom (:func:`mean_difference`),
    the correlation of the shared seeds' values (NaN where it is undefined: fewer than two shared
    seeds or no spread, and the test then pairs nothing), and the spread a paired difference
    would have (``paired_sd``, from the two spreads and that correlation, 0 where undefined)."""

    diff: float
    se: float
    df: float
    r: float
    paired_sd: float
    shared: int

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """The two-sided Student-t interval ``diff +- t(df) * se`` (NaN without a spread)."""
        if not (np.isfinite(self.se) and self.se > 0):
            return (np.nan, np.nan)
        half = stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return (self.diff - half, self.diff + half)

    def equivalence_bound(self, alpha: float = 0.05) -> float:
        """The smallest margin ``d`` at which the two one-sided tests at level ``alpha`` (TOST,
        Schuirmann 1987: the difference is above ``-d`` and below ``d``, both shown) show the
        two means within ``d``: the end of the ``1 - 2 alpha`` interval farther from 0,
        ``|diff| + t(1 - alpha, df) * se``. NaN without a spread."""
        low, high = self.interval(1 - 2 * alpha)
        return float(max(abs(low), abs(high))) if np.isfinite(low) else np.nan


def mean_difference(a: pd.Series, b: pd.Series) -> MeanDifference:
    """The difference of the means of ``a`` and ``b`` (values indexed by seed), every value of
    both used, with the partially overlapping samples t-test's standard error and degrees of
    freedom (Derrick, Russ, Toher and White 2017, "Test statistics for the comparison of means for
    two samples that include both paired observations and independent observations", JMASM
    16(1); the unequal-variance statistic of the R package Partiallyoverlapping's
    ``Partover.test``): with ``n1``, ``n2`` values, ``n12`` seeds in both and ``na``, ``nb`` values
    whose seed the other sample lacks, ``se**2 = s1**2/n1 + s2**2/n2 - 2 r s1 s2 n12/(n1 n2)``
    (``r``: the correlation over the shared seeds) and ``df = (n12 - 1) + (g - n12 + 1)
    (na + nb) / (na + nb + 2 n12)`` (``g``: Welch's degrees of freedom). With no shared seed it is
    Welch's test, with every seed shared the paired t-test; fewer than two shared seeds, or no
    spread on a side, carry no correlation and count as none shared. NaN standard error with
    fewer than two values on a side or no spread on either."""
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    n1, n2 = len(a), len(b)
    diff = float(a.mean() - b.mean()) if n1 and n2 else np.nan
    shared = a.index.intersection(b.index)
    if n1 < 2 or n2 < 2:
        return MeanDifference(diff, np.nan, np.nan, np.nan, np.nan, len(shared))
    s1, s2 = float(a.std(ddof=1)), float(b.std(ddof=1))
    p1, p2 = a[shared], b[shared]
    paired = len(shared) >= 2 and p1.std() > 0 and p2.std() > 0
    r = float(np.corrcoef(p1, p2)[0, 1]) if paired else np.nan  # undefined: no pairing
    n12, rho = (len(shared), r) if paired else (0, 0.0)
    paired_sd = float(np.sqrt(max(s1 ** 2 + s2 ** 2 - 2 * rho * s1 * s2, 0.0)))
    if s1 == 0 and s2 == 0:
        return MeanDifference(diff, np.nan, np.nan, r, paired_sd, len(shared))
    var = s1 ** 2 / n1 + s2 ** 2 / n2 - 2 * rho * s1 * s2 * n12 / (n1 * n2)
    welch = (s1 ** 2 / n1 + s2 ** 2 / n2) ** 2 / ((s1 ** 2 / n1) ** 2 / (n1 - 1) + (s2 ** 2 / n2) ** 2 / (n2 - 1))
    unshared = (n1 - n12) + (n2 - n12)  # na + nb
    df = (n12 - 1) + (welch - n12 + 1) * unshared / (unshared + 2 * n12) if n12 else welch
    return MeanDifference(diff, float(np.sqrt(max(var, 0.0))), float(df), r, paired_sd, len(shared))


def count_reversals(worst: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Every pair of iteration counts of one curve compared: ``worst`` holds each trial's worst
    class (rows: seeds; columns: counts). For each pair ``lower < higher``, the change of the mean
    worst class from ``lower`` to ``higher`` (``diff``; negative: more iterations, worse worst
    class), by :func:`mean_difference` (the seeds both counts ran paired, the others
    independent), its ``confidence`` interval (one pair's, not widened for the several pairs),
    the two-sided t-test's p-value and its Holm adjustment over the pairs that have one
    (``p_holm``; family-wise over the curve's pairs). A pair whose ``p_holm`` is below
    ``1 - confidence`` is a change beyond chance: a fall (``diff < 0``) says that running more
    iterations, each count being its own run of the whole schedule, made the worst class worse.
    A pair with fewer than two trials on a side, or no spread, has no test (NaN)."""
    columns = ["lower", "higher", "diff", "low", "high", "p", "p_holm", "shared", "trials_lower", "trials_higher"]
    counts = sorted(worst.columns)
    rows = []
    for i, lower in enumerate(counts):
        for higher in counts[i + 1:]:
            d = mean_difference(worst[higher], worst[lower])
            p = 2 * stats.t.sf(abs(d.diff) / d.se, d.df) if np.isfinite(d.se) and d.se > 0 else np.nan
            rows.append([lower, higher, d.diff, *d.interval(confidence), p, np.nan, d.shared,
                         int(worst[lower].notna().sum()), int(worst[higher].notna().sum())])
    out = pd.DataFrame(rows, columns=columns)
    if len(out):
        out["p_holm"] = holm(out["p"].to_numpy())
    return out


def outside_band(values, low, high) -> np.ndarray:
    """Whether each of ``values`` lies outside the band ``[low, high]``. A value equal to an end
    up to rounding (a class's mean drop over trials is a multiple of one image's share divided by
    the trials, and so can land on a quantile of the pseudo-classes' drops exactly) is inside."""
    values = np.asarray(values, dtype=float)
    tol = 1e-9 * np.maximum(1.0, np.abs(values))
    return (values < np.asarray(low) - tol) | (values > np.asarray(high) + tol)


def interval_verdict(low: float, high: float) -> str:
    """A change's interval in words: ``higher`` or ``lower`` where it lies clear of 0, else
    ``not told apart``."""
    return "higher" if low > 0 else "lower" if high < 0 else "not told apart"


def model_contrasts(per_class: pd.DataFrame, base, alpha: float = 0.05) -> pd.DataFrame:
    """Each other model of a per-class frame with a ``model`` column (one cell's trials of
    several models, e.g. :func:`ptqlib.analysis.cells.models_frame`) against the model ``base``,
    on two per-trial statistics: the worst class's accuracy and the largest class drop against
    the model's own float accuracy (points). Per model and statistic: trials of each, both
    means, and the change (model minus ``base``) with its interval from :func:`mean_difference`
    (a seed draws the same calibration images for every model of a pool, so a seed both ran is
    paired), at ``1 - alpha / k`` for the ``k`` comparisons of the table (Bonferroni: the chance
    that any of them clears 0 by chance alone stays at most ``alpha``), and ``verdict``:
    ``higher``, ``lower`` (the interval clear of 0) or ``not told apart``. Empty without
    ``base`` or another model."""
    columns = ["model", "statistic", "trials", "base_trials", "mean", "base_mean", "change", "ci_low", "ci_high",
               "confidence", "verdict"]
    classes = per_class[per_class["class"] != AVERAGE]
    trials_per_seed = classes.groupby(["model", "seed"])["key"].nunique() if "key" in classes else None
    if trials_per_seed is not None and (trials_per_seed > 1).any():
        raise ValueError("model_contrasts takes one trial per model and seed; the frame has "
                         f"{int((trials_per_seed > 1).sum())} (model, seed) with several")
    per_trial = classes.groupby(["model", "seed"]).agg(worst_class=("acc", "min"), largest_drop=("drop", "max"))
    models = list(dict.fromkeys(per_class["model"]))
    others = [m for m in models if m != base]
    if base not in models or not others:
        return pd.DataFrame(columns=columns)
    statistics = ("worst_class", "largest_drop")
    confidence = 1 - alpha / (len(others) * len(statistics))
    rows = []
    for model in others:
        for statistic in statistics:
            a, b = per_trial.loc[model, statistic], per_trial.loc[base, statistic]
            d = mean_difference(a, b)
            low, high = d.interval(confidence)
            verdict = interval_verdict(low, high)
            rows.append([model, statistic, int(a.count()), int(b.count()), a.mean(), b.mean(), d.diff, low, high,
                         confidence, verdict])
    return pd.DataFrame(rows, columns=columns)


def contrast_lines(contrasts: pd.DataFrame, base) -> list[str]:
    """One line per row of a :func:`model_contrasts` table (the change, its interval and
    confidence, the trials, the verdict), or one saying there is nothing to compare."""
    if contrasts.empty:
        return [f"nothing to compare: {base} and at least one other model need trials of the cell"]
    return [f"{r.model} vs {base}, {r.statistic.replace('_', ' ')}: {r.change:+.2f} [{r.ci_low:+.2f}, "
            f"{r.ci_high:+.2f}] points at {r.confidence:.2%} ({r.trials} and {r.base_trials} trials): {r.verdict}"
            for r in contrasts.itertuples()]


def guessing_floor(images: int, outputs: int, alpha: float = 0.05) -> int:
    """The fewest right answers of ``images`` that guessing among ``outputs`` classes reaches with
    probability at most ``alpha`` (binomial, one-sided): a class with at least this many right is
    above guessing at ``alpha``."""
    if not (isinstance(images, (int, np.integer)) and images >= 1):
        raise ValueError(f"images must be a whole number of at least 1, got {images!r}")
    if not (isinstance(outputs, (int, np.integer)) and outputs >= 2):
        raise ValueError(f"outputs must be a whole number of at least 2, got {outputs!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie between 0 and 1, got {alpha!r}")
    k = np.arange(images + 1)
    reached = k[stats.binom.sf(k - 1, images, 1.0 / outputs) <= alpha]
    if not len(reached):
        raise ValueError(f"no count of {images} images is beyond guessing among {outputs} at alpha={alpha}: "
                         "more images, more outputs or a larger alpha")
    return int(reached.min())


def above_guessing(per_class: pd.DataFrame, outputs: int, images: int, by: str = "model",
                   alpha: float = 0.05) -> pd.DataFrame:
    """Per ``by`` group of a per-class frame (``seed``, ``class``, ``acc`` in %; classes of
    ``images`` test images each, the ``Average`` rows left out): whether each trial's accuracy is
    shown above what guessing among ``outputs`` classes gives (one-sided binomial at ``alpha``: a
    class needs :func:`guessing_floor` right answers, ``floor``; the average the same on all test
    images, ``avg_floor``). Columns: ``trials``, ``avg_mean``, ``avg_above`` (trials whose average
    is above guessing), ``classes``, ``at_guessing`` (classes shown above guessing in no more
    than half the trials) and their names, ``kept`` (no such class, and the average above
    guessing in more than half the trials), and the test's ``floor``, ``avg_floor``,
    ``images``, ``outputs`` and ``alpha``."""
    classes = per_class[per_class["class"] != AVERAGE]
    floor = guessing_floor(images, outputs, alpha)
    rows = []
    for level, group in classes.groupby(by, sort=False):
        acc = group.pivot(index="seed", columns="class", values="acc")
        right = np.rint(acc.to_numpy() * images / 100.0)
        avg_floor = guessing_floor(images * acc.shape[1], outputs, alpha)
        avg_above = int((right.sum(1) >= avg_floor).sum())
        at = [name for name, share in zip(acc.columns, (right >= floor).mean(0)) if share <= 0.5]
        rows.append({by: level, "trials": len(acc), "avg_mean": float(acc.mean(axis=1).mean()), "avg_above": avg_above,
                     "classes": acc.shape[1], "at_guessing": len(at), "at_guessing_classes": ", ".join(at),
                     "kept": not at and avg_above > len(acc) / 2, "floor": floor, "avg_floor": avg_floor,
                     "images": images, "outputs": outputs, "alpha": alpha})
    return pd.DataFrame(rows, columns=[by, "trials", "avg_mean", "avg_above", "classes", "at_guessing",
                                       "at_guessing_classes", "kept", "floor", "avg_floor", "images", "outputs",
                                       "alpha"])


def guessing_lines(table: pd.DataFrame, label: str = "", by: str = "model") -> list[str]:
    """:func:`above_guessing` in words, a line per group."""
    return [f"{label}{getattr(r, by)}: average {r.avg_mean:.2f} % (guessing: {100.0 / r.outputs:.1f} %), above "
            f"guessing in {r.avg_above} of {r.trials} trials; {r.at_guessing} of {r.classes} classes not shown above "
            f"guessing in most trials" + (f" ({r.at_guessing_classes})" if r.at_guessing else "")
            + f" (a class needs {r.floor} of its {r.images} images right, one-sided binomial at {r.alpha})"
            for r in table.itertuples()]


def drop_ci(per_class: pd.DataFrame, by: list[str] | None = None, confidence: float = 0.95,
            n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per class (and level of ``by``): mean accuracy drop against FP with a bootstrap CI over
    trials; ``significant`` when the interval excludes 0."""
    rows = []
    for keys, group in per_class.groupby([*(by or []), "class"], dropna=False, sort=False):
        low, high = bootstrap_mean_ci(group["drop"].to_numpy(), confidence, n_resamples, seed)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip([*(by or []), "class"], keys)), "trials": len(group),
                     "mean_drop": group["drop"].mean(), "ci_low": low, "ci_high": high})
    out = pd.DataFrame(rows)
    out["significant"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    return out


def largest_drop(per_class: pd.DataFrame, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """One cell's trials (per-class rows with ``seed``, ``class`` and ``drop``): the average's mean
    drop and the class that drops most on average, each with its bootstrap interval over trials
    (:func:`drop_ci`'s, so the same as the pages' drop tables), that class's largest drop in one
    trial, and how firmly it is the largest: the class next to it, the mean per-seed gap between
    the two with its bootstrap interval and Wilcoxon p, and the share of bootstrap resamples of
    the seeds in which it still drops most (``top_share``). Which of the two leads is chosen on
    these very trials, but that choice only sets the gap's sign, which a two-sided interval and
    test leave alone; the share, chosen the same way, leans towards the leader. Needs at least
    two classes; with one trial the intervals, the p-value and the share are NaN."""
    drops = per_class[per_class["class"] != AVERAGE].pivot_table(index="seed", columns="class", values="drop")
    if drops.shape[1] < 2 or len(drops) < 1:
        raise ValueError(f"largest_drop needs two classes and a trial, got {drops.shape[1]} and {len(drops)}")
    means = drops.mean().sort_values(ascending=False)
    top, runner = means.index[0], means.index[1]
    table = drop_ci(per_class[per_class["class"].isin([top])], confidence=confidence).set_index("class")
    gap = (drops[top] - drops[runner]).to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(drops), (resamples, len(drops)))
    boot = drops.to_numpy()[idx].mean(1)  # [resamples, classes]
    average = drops.mean(axis=1)
    return {"trials": len(drops), "average": float(average.mean()), "average_std": float(average.std()),
            "average_ci": bootstrap_mean_ci(average.to_numpy(), confidence),
            "class": top, "mean": float(means.iloc[0]), "ci": (table.loc[top, "ci_low"], table.loc[top, "ci_high"]),
            "max": float(drops[top].max()), "runner_up": runner, "runner_mean": float(means.iloc[1]),
            "gap": float(gap.mean()), "gap_ci": bootstrap_mean_ci(gap, confidence),
            "gap_p": np.nan if len(gap) < 2 else 1.0 if np.all(gap == 0) else float(stats.wilcoxon(gap).pvalue),
            "top_share": np.nan if len(gap) < 2 else float((boot.argmax(1) == list(drops.columns).index(top)).mean())}


def largest_drop_lines(d: dict) -> list[str]:
    """:func:`largest_drop` in words: the average's drop and the class that drops most."""
    apart = "told apart from" if d["gap_ci"][0] > 0 else "not told apart from"
    return [f"the average accuracy drops {d['average']:.2f} points [{d['average_ci'][0]:.2f}, "
            f"{d['average_ci'][1]:.2f}] (std over trials {d['average_std']:.2f});",
            f"class '{d['class']}' drops most on average: {d['mean']:.2f} points [{d['ci'][0]:.2f}, {d['ci'][1]:.2f}], "
            f"up to {d['max']:.2f} points in one trial; {apart} the next, '{d['runner_up']}' "
            f"({d['runner_mean']:.2f}): {d['gap']:+.2f} points more [{d['gap_ci'][0]:+.2f}, {d['gap_ci'][1]:+.2f}] "
            f"({p_value(d['gap_p'], 'Wilcoxon p')}); it drops most in {100 * d['top_share']:.0f} % of resamples of the "
            f"{d['trials']} calibration sets (a share, not a test);"]


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error over the tests given). A NaN (a test
    that could not be run) stays NaN and does not count among the tests."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    run = np.flatnonzero(~np.isnan(p))
    order = run[np.argsort(p[run])]
    out[order] = np.maximum.accumulate((len(run) - np.arange(len(run))) * p[order]).clip(max=1.0)
    return out


def paired_test(per_class: pd.DataFrame, factor: str, a, b, alpha: float = 0.05) -> pd.DataFrame:
    """Per class: is accuracy different between levels ``a`` and ``b`` of ``factor``, pairing
    trials by seed? Wilcoxon signed-rank test on the per-seed differences (``b - a``), Holm
    correction over the classes; only seeds present at both levels are used. ``ci_low`` and
    ``ci_high``: the mean difference's 95 % interval over the seeds (:func:`bootstrap_mean_ci`;
    one class's, not corrected for the several classes)."""
    rows = []
    for cls, group in per_class.groupby("class", sort=False):
        pivot = group.pivot_table(index="seed", columns=factor, values="acc")
        if a not in pivot.columns or b not in pivot.columns:
            raise ValueError(f"levels {a!r} and {b!r} of {factor} must both be in the results; "
                             f"found {list(pivot.columns)}")
        pivot = pivot[[a, b]].dropna()  # other levels' seeds do not limit the pairs
        diff = (pivot[b] - pivot[a]).to_numpy()
        p = 1.0 if np.all(diff == 0) or len(diff) < 2 else float(stats.wilcoxon(diff).pvalue)
        low, high = bootstrap_mean_ci(diff)
        rows.append({"class": cls, "pairs": len(diff), f"mean_{a}": pivot[a].mean(), f"mean_{b}": pivot[b].mean(),
                     "mean_diff": diff.mean(), "ci_low": low, "ci_high": high, "p": p})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out


def churn(preds: np.ndarray, fp_preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Prediction changes of one quantized model against the float model, in % of test images:
    ``flip_rate`` (any change), ``lost`` (right before, wrong after), ``gained`` (wrong before,
    right after); ``lost_share``: % of the flips that were right before."""
    flips = preds != fp_preds
    lost = flips & (fp_preds == labels)
    gained = flips & (preds == labels)
    n = len(labels)
    return {"flip_rate": 100.0 * flips.sum() / n, "lost": 100.0 * lost.sum() / n, "gained": 100.0 * gained.sum() / n,
            "lost_share": 100.0 * lost.sum() / max(flips.sum(), 1)}


def modal_predictions(preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent prediction per image over trials (``preds`` is ``[trials, images]``; ties go to
    the smaller label) and the share of trials that predicted it."""
    n_labels = int(preds.max()) + 1
    counts = np.zeros((n_labels, preds.shape[1]), dtype=np.int64)
    for row in preds:
        counts[row, np.arange(preds.shape[1])] += 1
    mode = counts.argmax(0)
    return mode, counts.max(0) / preds.shape[0]


def exemplars(preds: np.ndarray, fp_preds: np.ndarray) -> np.ndarray:
    """Indices of the quantization-identified exemplars: images whose modal prediction over the
    trials differs from the float model's."""
    mode, _ = modal_predictions(preds)
    return np.flatnonzero(mode != fp_preds)


def drop_ci_table(per_class: pd.DataFrame, factor: str, confidence: float = 0.95) -> pd.DataFrame:
    """Rows = classes + Average, columns = levels of ``factor``: ``"mean [low, high]"`` of the drop
    against FP with its bootstrap interval, starred where the interval excludes 0."""
    ci = drop_ci(with_average(per_class), by=[factor], confidence=confidence)
    text = pd.Series([f"{m:.2f} [{lo:.2f}, {hi:.2f}]{'*' if sig else ''}"
                      for m, lo, hi, sig in zip(ci["mean_drop"], ci["ci_low"], ci["ci_high"], ci["significant"])],
                     index=pd.MultiIndex.from_arrays([ci["class"], ci[factor]]))
    table = text.unstack(level=1)  # no helper column, so no clash with the factor's name
    order = [c for c in per_class["class"].unique() if c != AVERAGE] + [AVERAGE]
    return table.loc[order, [lv for lv in per_class[factor].unique() if lv in table.columns]]


def paired_gain(per_class: pd.DataFrame, factor: str, a, b, confidence: float = 0.95,
                interval: str = "bootstrap") -> pd.DataFrame:
    """Setting ``b`` against ``a`` on the seeds both have, for the average and for each trial's
    worst class: the mean per-seed difference (``b - a``, points) with an interval over the seeds
    (``interval``: ``bootstrap``, percentile, or ``t``, Student's, for a few costly seeds; see
    :func:`t_mean_ci`) and the Wilcoxon signed-rank p-value."""
    if interval not in ("bootstrap", "t"):
        raise ValueError(f"unknown interval {interval!r}; choose bootstrap or t")
    classes = per_class[per_class["class"] != AVERAGE]
    per_trial = classes.groupby([factor, "seed"], dropna=False)["acc"].agg(worst="min", average="mean").reset_index()
    wide = per_trial.pivot(index="seed", columns=factor, values=["average", "worst"])
    rows = []
    for stat in ("average", "worst"):
        if (stat, a) not in wide.columns or (stat, b) not in wide.columns:
            raise ValueError(f"levels {a!r} and {b!r} of {factor} must both be in the results")
        pair = wide[[(stat, a), (stat, b)]].dropna()
        diff = (pair[(stat, b)] - pair[(stat, a)]).to_numpy()
        low, high = bootstrap_mean_ci(diff, confidence) if interval == "bootstrap" else t_mean_ci(diff, confidence)
        p = 1.0 if len(diff) < 2 or np.all(diff == 0) else float(stats.wilcoxon(diff).pvalue)
        rows.append({"statistic": "worst class" if stat == "worst" else stat, "pairs": len(diff),
                     "mean_a": pair[(stat, a)].mean(), "mean_b": pair[(stat, b)].mean(),
                     "diff": diff.mean() if len(diff) else np.nan, "ci_low": low, "ci_high": high, "p": p})
    return pd.DataFrame(rows)


def level_contrasts(per_class: pd.DataFrame, factor: str, base, levels: list, alpha: float = 0.05) -> pd.DataFrame:
    """Each level of ``levels`` that has trials, other than ``base``, against ``base`` on the seeds
    both ran (:func:`paired_gain`), for the average and the worst class: the mean per-seed change
    (level minus ``base``) with its Student-t interval at ``1 - alpha / k`` for the ``k``
    comparisons of the table (Bonferroni: the chance that any of them clears 0 by chance alone
    stays at most ``alpha``), the Wilcoxon p-value and its Holm adjustment over the ``k``, and
    ``verdict``: ``higher``, ``lower`` (the widened interval clear of 0) or ``not told apart``.
    Empty without ``base`` or another level."""
    columns = ["level", "statistic", "pairs", "base_mean", "mean", "change", "ci_low", "ci_high", "confidence",
               "p", "p_holm", "verdict"]
    present = set(per_class[factor])
    others = [lv for lv in levels if lv != base and lv in present]
    if base not in present or not others:
        return pd.DataFrame(columns=columns)
    confidence = 1 - alpha / (2 * len(others))  # two statistics per level
    rows = []
    for level in others:
        gain = paired_gain(per_class, factor, base, level, confidence, interval="t")
        for r in gain.itertuples():
            rows.append([level, r.statistic, r.pairs, r.mean_a, r.mean_b, r.diff, r.ci_low, r.ci_high, confidence,
                         r.p, np.nan, interval_verdict(r.ci_low, r.ci_high)])
    out = pd.DataFrame(rows, columns=columns)
    out["p_holm"] = holm(out["p"].to_numpy())
    return out


def format_p(p: float) -> str:
    """A p-value as the pages print it: three decimals, "< 0.001" below that, "n/a" when undefined."""
    return "n/a" if not np.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_value(p: float, label: str = "p") -> str:
    """A p-value with its label, as a sentence reads it: "p = 0.046", "p < 0.001", "p n/a"."""
    text = format_p(p)
    return f"{label} {text}" if text[0] in "<n" else f"{label} = {text}"


def level_contrast_lines(contrasts: pd.DataFrame, base) -> list[str]:
    """One line per level of a :func:`level_contrasts` table: each statistic's change with its
    widened interval, verdict and Holm-adjusted Wilcoxon p; or one saying there is nothing to
    compare."""
    if contrasts.empty:
        return [f"nothing to compare: {base} and at least one other level need trials"]
    lines = []
    for level, group in contrasts.groupby("level", sort=False):
        conf = group["confidence"].iloc[0]
        head = f"{level} - {base} ({group['pairs'].min()} shared seeds, intervals at {100 * conf:.4g} %): "
        lines.append(head + "; ".join(
            f"{r.statistic} {r.change:+.2f} points [{r.ci_low:+.2f}, {r.ci_high:+.2f}], {r.verdict} "
            f"(Wilcoxon p, Holm over {len(contrasts)}: {format_p(r.p_holm)})" for r in group.itertuples()))
    return lines


def paired_tests(per_class: pd.DataFrame, factor: str, base, levels: list, alpha: float = 0.05) -> dict:
    """:func:`paired_test` of each level of ``levels`` (other than ``base``) against ``base``, by
    level, indexed by class; levels without trials, or a ``base`` without trials, are left out."""
    present = set(per_class[factor])
    return {lv: paired_test(per_class, factor, base, lv, alpha).set_index("class")
            for lv in levels if lv != base and {base, lv} <= present}


def significant_changes(test: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """From a :func:`paired_test` indexed by class: the mean differences of the classes
    significantly worse, and of those significantly better."""
    significant = test[test["significant"]]["mean_diff"]
    return significant[significant < 0], significant[significant > 0]


def significant_change_lines(tests: dict, base: str) -> list[str]:
    """:func:`paired_tests` in words, one line per level: the classes significantly worse and
    better than ``base``, each with its mean difference and interval, or ``none``."""
    lines = []
    for level, test in tests.items():
        worse, better = (", ".join(f"{c} {d:+.2f} [{test.loc[c, 'ci_low']:+.2f}, {test.loc[c, 'ci_high']:+.2f}]"
                                   for c, d in s.items()) or "none" for s in significant_changes(test))
        lines.append(f"{level} vs {base} ({test['pairs'].min()} seeds): significantly worse: {worse}; "
                     f"significantly better: {better}")
    return lines


def paired_gain_lines(per_class: pd.DataFrame, factor: str, base) -> list[str]:
    """Each other level of ``factor`` against ``base`` in words, one line per level: the mean
    per-seed change of the average and of the worst class with their bootstrap intervals over
    the shared seeds (:func:`paired_gain`), and how many classes lose mean accuracy, the largest
    loss and its class (:func:`~ptqlib.analysis.aggregate.gains_against`; a description: which
    of those losses chance explains is :func:`paired_tests`' question)."""
    lines = []
    for level, g in gains_against(per_class, factor, base).iterrows():
        pg = paired_gain(per_class, factor, base, level).set_index("statistic")
        avg, worst = pg.loc["average"], pg.loc["worst class"]
        lines.append(
            f"{level} vs {base} ({int(avg['pairs'])} shared seeds, 95 % bootstrap intervals over them): average "
            f"{avg['diff']:+.2f} [{avg['ci_low']:+.2f}, {avg['ci_high']:+.2f}] points, worst class "
            f"{worst['diff']:+.2f} [{worst['ci_low']:+.2f}, {worst['ci_high']:+.2f}]; {g['classes_losing']} of "
            f"{g['classes']} classes lose mean accuracy (largest loss {g['largest_loss']:+.2f}, "
            f"'{g['largest_loss_class']}'; which of them chance explains: the per-class paired tests)")
    return lines


def marked_differences(tests: dict) -> pd.DataFrame:
    """Per class (rows) and level (columns): the mean paired difference as ``+0.12``, starred
    where significant, from :func:`paired_tests`."""
    return pd.DataFrame({lv: test["mean_diff"].map("{:+.2f}".format) + test["significant"].map({True: "*", False: ""})
                         for lv, test in tests.items()})
