"""Simulated against integer evaluation: stored trials of one cell evaluated by fake quantization
(``engine`` fake) and by the int8 kernels of :mod:`ptqlib.quant.integer` (``engine`` int8),
paired by calibration seed.

A trial's calibration does not depend on the engine (the same seed draws the same calibration
set and gives the same scales and zero points), so an int8 trial and the fake trial of the same
configuration and seed are one quantized model evaluated twice. What is compared:

- **agreement** (:func:`agreement_table`): per seed, the share of test images whose predicted
  label is the same under both engines, and the accuracies. The claim that the simulation stands
  for the integer model is tested as a part of the verdicts module's kind
  (:func:`agreement_part`): the mean agreement over seeds, with a 95 % bootstrap interval over
  seeds, against a stated target (:data:`TARGET_AGREEMENT`);
- **per-class differences** (:func:`class_gap`): per class, the mean over seeds of the int8
  accuracy minus the fake one, with a paired bootstrap interval over seeds, beside the chance
  band of a single class: the same mean difference on pseudo-classes, the test images split at
  random into groups of the real classes' sizes (:class:`~ptqlib.analysis.verdicts.ClassData`,
  the same splits for both engines and every seed);
- **whether the differences concentrate on classes** (:func:`gap_chance_part`): the largest
  absolute class difference against the same largest value over pseudo-classes, a permutation
  test decided as the verdicts module decides its chance parts;
- **the simulation's own float noise** (:func:`noise_part`): where the cell also has trials of
  the ``fake-reordered`` engine (the same fake-quantized model summed in another float order),
  the images the int8 model predicts differently from fake quantization against the images
  the reordered fake model predicts differently, per seed: the claim "the int8 engine moves more
  predictions than float32 rounding alone does" is supported when the interval of the mean
  per-seed difference lies above 0, contradicted when it lies below;
- **which side of the disagreement is rounding** (:func:`exact_part`): where the cell also has
  trials of the ``fake-float64`` engine (the same fake-quantized model in float64: exact
  arithmetic within float64 rounding), the images float32 fake quantization predicts differently
  from exact arithmetic against those the int8 model predicts differently from it, per seed: the
  claim "float32 fake quantization strays from exact arithmetic more often than the int8 kernels
  do" is supported above 0, contradicted below;
- **speed** (:func:`bench_table`): the ``ptq bench`` runs that measured both engines, read from
  their JSON files, and (:func:`stored_seconds`) the median seconds the stored trials took.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ptqlib.analysis.files import bench_runs
from ptqlib.analysis.stats import p_value, t_mean_ci
from ptqlib.analysis.cells import Cell, LevelPredictions, level_selections, factor_predictions
from ptqlib.analysis.verdicts import (CHANCE_DRAWS, CONFIDENCE, MIN_TRIALS, NOT_ENOUGH, RESAMPLES, ClassData, Part,
                                      _quantiles, bootstrap_interval, chance_p, decide, decide_chance, expanded_tail,
                                      holm_family, resamples_for)
from ptqlib.study.store import ResultsStore

ENGINES = ["fake", "int8"]
REORDERED = "fake-reordered"  # the float-noise yardstick (ptqlib.quant.evaluation.Reordered)
EXACT = "fake-float64"  # exact arithmetic within float64 rounding (ptqlib.quant.evaluation.Float64)
TARGET_AGREEMENT = 99.9  # % of test images whose prediction the two engines share
CLAIM = "int8"  # the claim name the parts carry


def _empty() -> LevelPredictions:
    return LevelPredictions({}, {}, None, None, [])


def paired_predictions(store: ResultsStore, cell: Cell, trials: int,
                       engines: list[str] = ENGINES) -> LevelPredictions:
    """The predictions of ``cell`` under each of ``engines`` (levels, e.g. ``"fake"`` and
    ``"int8"``) on the first ``trials`` seeds that all have, in seed order, on the weights and
    data of the most recent FP reference of the cell's model and dataset; empty when an engine
    has no trial."""
    return _paired(factor_predictions(store, replace(cell, engine="fake"), "engine", engines, trials=2**31), engines,
                   trials)


def _paired(lp: LevelPredictions, engines: list[str], trials: int) -> LevelPredictions:
    """``lp`` restricted to ``engines`` and to the first ``trials`` seeds all of them have."""
    if not set(engines) <= set(lp.preds):
        return _empty()
    shared = lp.seeds[engines[0]]
    for e in engines[1:]:
        shared = np.intersect1d(shared, lp.seeds[e])
    shared = shared[:trials]
    if not len(shared):
        return _empty()
    preds = {e: lp.preds[e][np.searchsorted(lp.seeds[e], shared)] for e in engines}
    return LevelPredictions(preds, {e: shared for e in engines}, lp.labels, lp.fp_preds, lp.class_names)


def trials_of(lp: LevelPredictions) -> int:
    """Number of seed pairs in ``lp`` (0 when it is empty)."""
    return len(lp.seeds["fake"]) if "fake" in lp.seeds else 0


def agreement_table(lp: LevelPredictions) -> pd.DataFrame:
    """One row per seed: the share (%) of test images both engines predict alike, how many differ,
    each engine's accuracy (%), the int8 minus the fake accuracy (points), and the images only the
    int8 model gets right (``int8_only``) or only the fake one (``fake_only``)."""
    columns = ["seed", "images", "agreement", "differing", "fake_acc", "int8_acc", "acc_diff", "int8_only",
               "fake_only"]
    if not trials_of(lp):
        return pd.DataFrame(columns=columns)
    fake, int8 = lp.preds["fake"], lp.preds["int8"]
    same = fake == int8
    fake_ok, int8_ok = fake == lp.labels, int8 == lp.labels
    images = fake.shape[1]
    frame = pd.DataFrame({
        "seed": lp.seeds["fake"], "images": images, "agreement": 100.0 * same.mean(1),
        "differing": (~same).sum(1), "fake_acc": 100.0 * fake_ok.mean(1), "int8_acc": 100.0 * int8_ok.mean(1),
        "int8_only": (int8_ok & ~fake_ok).sum(1), "fake_only": (fake_ok & ~int8_ok).sum(1)})
    frame["acc_diff"] = frame["int8_acc"] - frame["fake_acc"]
    return frame[columns]


def agreement_part(lp: LevelPredictions, target: float = TARGET_AGREEMENT, resamples: int = RESAMPLES,
                   seed: int = 0) -> Part:
    """The claim "fake quantization predicts what the int8 model predicts on at least ``target``
    % of the test images": the mean agreement over seeds with a bootstrap interval over seeds,
    ``supported`` when the whole interval lies above ``target``, ``contradicted`` when it lies
    wholly below (:func:`~ptqlib.analysis.verdicts.decide`)."""
    name = f"agreement of fake and int8 predictions vs {target:g} %"
    n = trials_of(lp)
    if n < MIN_TRIALS:
        return Part(CLAIM, name, NOT_ENOUGH, None, None, None, n, target, ">", "%",
                    detail=f"{n} seed pairs (needs {MIN_TRIALS})")
    agree = agreement_table(lp)["agreement"].to_numpy()
    ci = bootstrap_interval(lambda idx: agree[idx].mean(-1), [n], paired=False, resamples=resamples, seed=seed)
    below = int((agree < target).sum())
    return Part(CLAIM, name, decide(ci, target, ">"), float(agree.mean()), ci, None, n, target, ">", "%",
                detail=f"lowest seed {agree.min():.2f} %; {below} of {n} seeds below {target:g} %")


def _class_diffs(data: ClassData, seeds: np.ndarray, draws: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``[trials, classes]`` int8 minus fake accuracy (points) of the real classes and, when
    ``draws``, ``[draws, classes]`` the mean over trials of the same on pseudo-classes."""
    real = data.acc("int8", seeds) - data.acc("fake", seeds)
    if not draws:
        return real, None
    (fake, int8), _ = data.pseudo(ENGINES, [seeds, seeds])
    return real, (int8 - fake).mean(1)


def class_gap(lp: LevelPredictions, data: ClassData | None = None, confidence: float = CONFIDENCE,
              resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per class: the mean over seeds of each engine's accuracy (%), of the int8 minus
    the fake accuracy (``diff``, points) with a paired percentile bootstrap interval over seeds
    (``diff_low``/``diff_high``, read at :func:`~ptqlib.analysis.verdicts.expanded_tail`), the
    mean share (%) of the class's images whose prediction
    differs, and the chance band of a single class (``chance_low``/``chance_high``: the central
    ``confidence`` of the mean difference over every pseudo-class of every split). ``outside``:
    the class's mean difference lies outside the band. ``data``: a :class:`ClassData` of ``lp``
    (built when not given; pass one to reuse its pseudo-class splits)."""
    columns = ["class", "images", "trials", "fake_acc", "int8_acc", "diff", "diff_low", "diff_high", "differing",
               "chance_low", "chance_high", "outside"]
    n = trials_of(lp)
    if not n:
        return pd.DataFrame(columns=columns)
    data = data or ClassData(lp)
    seeds = lp.seeds["fake"]
    real, null = _class_diffs(data, seeds, draws=n >= 2)
    rng = np.random.default_rng(seed)
    if n >= 2:  # read as bootstrap_interval reads it
        tail = expanded_tail(n, confidence)
        boot = real[rng.integers(0, n, (resamples_for(tail, resamples), n))].mean(1)
        low = np.quantile(boot, tail, axis=0, method="inverted_cdf")  # [classes]
        high = np.quantile(boot, 1 - tail, axis=0, method="inverted_cdf")
    else:  # one seed: no spread to resample
        low = high = np.full(real.shape[1], np.nan)
    band = _quantiles(null.ravel(), confidence) if null is not None else (np.nan, np.nan)
    differ = lp.preds["fake"] != lp.preds["int8"]  # [trials, images]
    classes = np.unique(lp.labels)
    diff = real.mean(0)
    frame = pd.DataFrame({
        "class": data.names, "images": data.sizes, "trials": n,
        "fake_acc": data.acc("fake", seeds).mean(0), "int8_acc": data.acc("int8", seeds).mean(0),
        "diff": diff, "diff_low": low, "diff_high": high,
        "differing": [100.0 * differ[:, lp.labels == c].mean() for c in classes],
        "chance_low": band[0], "chance_high": band[1],
        "outside": (diff < band[0]) | (diff > band[1])})
    return frame[columns]


GAP_PART = "largest class difference (int8 - fake) vs chance"


def gap_chance_part(lp: LevelPredictions, data: ClassData | None = None) -> Part:
    """The claim "the engines' accuracy differences fall on some classes more than on random
    groups of as many images": the largest absolute mean class difference (points) against the
    same largest value over pseudo-classes (permutation p-value; ``supported`` when p < 0.05,
    ``contradicted`` when p > 0.5: :func:`~ptqlib.analysis.verdicts.decide_chance`)."""
    name = GAP_PART
    n = trials_of(lp)
    if n < MIN_TRIALS:
        return Part(CLAIM, name, NOT_ENOUGH, None, None, None, n, None, ">", "points",
                    detail=f"{n} seed pairs (needs {MIN_TRIALS})")
    data = data or ClassData(lp)
    real, null = _class_diffs(data, lp.seeds["fake"], draws=True)
    mean = real.mean(0)
    k = int(np.abs(mean).argmax())
    estimate = float(abs(mean[k]))
    null_max = np.abs(null).max(-1)
    p = chance_p(estimate, null_max, ">")
    return Part(CLAIM, name, decide_chance(p), estimate, None, _quantiles(null_max), n, None, ">", "points",
                p_chance=p, detail=f"class '{data.names[k]}': {mean[k]:+.2f} points")


def noise_part(lp: LevelPredictions) -> Part:
    """The claim "the int8 engine moves more predictions away from fake quantization's than
    float32 rounding alone does": per seed, the images predicted differently by the int8 model
    minus those predicted differently by the reordered fake model (both against fake
    quantization), their mean with a Student-t interval over seeds
    (:func:`~ptqlib.analysis.stats.t_mean_ci`), ``supported`` above 0,
    ``contradicted`` below. ``lp``: :func:`paired_predictions` of the engines fake, int8 and
    :data:`REORDERED`."""
    name = "int8 vs float-noise disagreement (images)"
    n = trials_of(lp) if REORDERED in lp.preds else 0
    if n < MIN_TRIALS:
        return Part(CLAIM, name, NOT_ENOUGH, None, None, None, n, 0.0, ">", "images",
                    detail=f"{n} seeds with all three engines (needs {MIN_TRIALS})")
    fake = lp.preds["fake"]
    int8 = (lp.preds["int8"] != fake).sum(1)
    noise = (lp.preds[REORDERED] != fake).sum(1)
    diff = (int8 - noise).astype(float)
    ci = t_mean_ci(diff)  # few seeds with heavy tails: the percentile bootstrap would be too narrow
    return Part(CLAIM, name, decide(ci, 0.0, ">"), float(diff.mean()), ci, None, n, 0.0, ">", "images",
                detail=f"int8 differs from fake on {int8.mean():.1f} images a seed, the reordered fake model "
                       f"on {noise.mean():.1f}")


def exact_part(lp: LevelPredictions) -> Part:
    """The claim "float32 fake quantization strays from exact arithmetic more often than the int8
    kernels do": per seed, the images fake quantization predicts differently from the float64
    model (:data:`EXACT`) minus those the int8 model predicts differently from it, their mean
    with a Student-t interval over seeds, ``supported`` above 0 (the disagreement of the two
    engines is then mostly the simulation's float32 rounding), ``contradicted`` below (mostly the
    int8 kernels' requantization). ``lp``: :func:`paired_predictions` of the engines fake, int8
    and :data:`EXACT`."""
    name = "fake minus int8 disagreement with exact arithmetic (images)"
    n = trials_of(lp) if EXACT in lp.preds else 0
    if n < MIN_TRIALS:
        return Part(CLAIM, name, NOT_ENOUGH, None, None, None, n, 0.0, ">", "images",
                    detail=f"{n} seeds with fake, int8 and {EXACT} trials (needs {MIN_TRIALS})")
    exact = lp.preds[EXACT]
    fake = (lp.preds["fake"] != exact).sum(1)
    int8 = (lp.preds["int8"] != exact).sum(1)
    diff = (fake - int8).astype(float)
    ci = t_mean_ci(diff)  # few seeds with heavy tails: the percentile bootstrap would be too narrow
    return Part(CLAIM, name, decide(ci, 0.0, ">"), float(diff.mean()), ci, None, n, 0.0, ">", "images",
                detail=f"exact arithmetic differs from fake on {fake.mean():.1f} images a seed, from int8 "
                       f"on {int8.mean():.1f}")


@dataclass
class Comparison:
    """Everything the report shows of one cell: its seed pairs, the per-seed and per-class tables
    and the four tested parts (agreement, class concentration, float noise, exact arithmetic)."""

    label: str
    lp: LevelPredictions
    agreement: pd.DataFrame
    classes: pd.DataFrame
    parts: list[Part]

    @property
    def trials(self) -> int:
        return trials_of(self.lp)


def compare(store: ResultsStore, cell: Cell, trials: int, label: str | None = None,
            chance_draws: int = CHANCE_DRAWS, target: float = TARGET_AGREEMENT) -> Comparison:
    """:func:`paired_predictions` of ``cell`` and the tables and parts computed from them."""
    every = [*ENGINES, REORDERED, EXACT]  # read once, paired three times
    stored = factor_predictions(store, replace(cell, engine="fake"), "engine", every, trials=2**31)
    lp = _paired(stored, ENGINES, trials)
    noise, exact = _paired(stored, [*ENGINES, REORDERED], trials), _paired(stored, [*ENGINES, EXACT], trials)
    data = ClassData(lp, chance_draws) if trials_of(lp) else None
    return Comparison(label or cell.model, lp, agreement_table(lp), class_gap(lp, data),
                      [agreement_part(lp, target), gap_chance_part(lp, data), noise_part(noise), exact_part(exact)])


def across_cells(comparisons: list[Comparison]) -> list[Comparison]:
    """``comparisons`` with each cell's class-concentration part (:func:`gap_chance_part`)
    decided on its p-value Holm-adjusted over the cells given that have one (its
    ``p_adjusted``): the chance test runs once per cell, so with several cells one p below 0.05
    comes by chance now and then."""
    chance = [c.parts[1] for c in comparisons]
    assert all(p.part == GAP_PART for p in chance), "the second part of a comparison is its chance part"
    return [replace(c, parts=[c.parts[0], part, *c.parts[2:]]) for c, part in zip(comparisons, holm_family(chance))]


def summary(comparisons: list[Comparison]) -> pd.DataFrame:
    """One row per cell: seed pairs, the mean and lowest agreement (%), seeds below the target,
    the mean accuracies and their difference with its bootstrap interval, the largest class
    difference with its chance band and p-value, the int8 minus the float-noise disagreement
    (images a seed, on the seeds with all three engines) with its interval, the fake minus the
    int8 disagreement with exact arithmetic (images a seed, on the seeds with a ``fake-float64``
    trial) with its interval, and the four parts' verdicts (the class-concentration one with its
    adjusted p, ``p_chance_holm``, where :func:`across_cells` gave it one)."""
    rows = []
    for c in comparisons:
        agree_part, chance_part, noise, exact = c.parts
        row = {"cell": c.label, "trials": c.trials}
        if c.trials:
            a = c.agreement
            diff = a["acc_diff"].to_numpy()
            ci = bootstrap_interval(lambda idx: diff[idx].mean(-1), [len(diff)], paired=False)
            row.update({"agreement": a["agreement"].mean(), "lowest": a["agreement"].min(),
                        "below_target": int((a["agreement"] < TARGET_AGREEMENT).sum()),
                        "differing": a["differing"].mean(), "images": int(a["images"].iloc[0]),
                        "fake_acc": a["fake_acc"].mean(), "int8_acc": a["int8_acc"].mean(),
                        "acc_diff": diff.mean(), "acc_diff_low": ci[0], "acc_diff_high": ci[1]})
        band = chance_part.chance or (np.nan, np.nan)
        row.update({"agreement_verdict": agree_part.verdict,  # NaN: a part without enough seed pairs
                    "max_class_diff": np.nan if chance_part.estimate is None else chance_part.estimate,
                    "chance_low": band[0], "chance_high": band[1],
                    "p_chance": np.nan if chance_part.p_chance is None else chance_part.p_chance,
                    "p_chance_holm": np.nan if chance_part.p_adjusted is None else chance_part.p_adjusted,
                    "class_verdict": chance_part.verdict,
                    "noise_trials": noise.trials, "noise_diff": np.nan if noise.estimate is None else noise.estimate,
                    "noise_low": noise.ci[0] if noise.ci else np.nan, "noise_high": noise.ci[1] if noise.ci else np.nan,
                    "noise_verdict": noise.verdict, "noise_detail": noise.detail,
                    "exact_trials": exact.trials,
                    "exact_diff": np.nan if exact.estimate is None else exact.estimate,
                    "exact_low": exact.ci[0] if exact.ci else np.nan,
                    "exact_high": exact.ci[1] if exact.ci else np.nan, "exact_verdict": exact.verdict,
                    "exact_detail": exact.detail})
        rows.append(row)
    return pd.DataFrame(rows)


_YARDSTICKS = (  # summary prefix, what it is measured against, its engine, the claim its part tests
    ("noise", "float noise", REORDERED, "int8 moves more predictions than reordering the float sums"),
    ("exact", "exact arithmetic", EXACT, "the float32 simulation strays from exact arithmetic more often than int8"),
)


def yardstick_lines(row: pd.Series) -> list[str]:
    """One line per yardstick of a :func:`summary` row: the part's estimate (images a seed) with
    its interval and verdict, what is missing when it has too few seeds, or that the cell has no
    trials of the yardstick's engine."""
    lines = []
    for prefix, against, engine, claim in _YARDSTICKS:
        trials, diff = row[f"{prefix}_trials"], row[f"{prefix}_diff"]
        if not trials:
            lines.append(f"Against {against}: no {engine} trial of this cell shares a seed with its fake and int8 trials.")
        elif not np.isfinite(diff):
            lines.append(f"Against {against}: {row[f'{prefix}_detail']}.")
        else:
            lines.append(f"Against {against} ({trials} seeds with a {engine} trial): {row[f'{prefix}_detail']}; "
                         f"{diff:+.1f} images a seed (95 % interval {row[f'{prefix}_low']:+.1f} to "
                         f"{row[f'{prefix}_high']:+.1f}); '{claim}': {row[f'{prefix}_verdict']}.")
    return lines


def summary_lines(summary_table: pd.DataFrame) -> list[str]:
    """Each cell of a :func:`summary` table in words: the agreement and its verdict, both
    accuracies and their difference with its interval, the largest class difference against
    chance (its p and the p Holm-adjusted over the cells) and its verdict, then, indented, the
    two yardsticks (:func:`yardstick_lines`)."""
    tested = int(summary_table["p_chance"].notna().sum()) if len(summary_table) else 0
    lines = []
    for _, row in summary_table.iterrows():
        lines.append(
            f"{row['cell']} ({row['trials']} seeds, {row['images']} test images): agreement {row['agreement']:.3f} % "
            f"(lowest seed {row['lowest']:.2f} %, {row['below_target']} seeds below {TARGET_AGREEMENT:g} %; "
            f"{row['differing']:.1f} images differ on average): {row['agreement_verdict']}. Accuracy "
            f"{row['fake_acc']:.2f} % fake, {row['int8_acc']:.2f} % int8 ({row['acc_diff']:+.3f} points, "
            f"95 % interval {row['acc_diff_low']:+.3f} to {row['acc_diff_high']:+.3f}); largest class difference "
            f"{row['max_class_diff']:.3f} points, chance {row['chance_low']:.3f} to {row['chance_high']:.3f} "
            f"({p_value(row['p_chance'])}; {p_value(row['p_chance_holm'], 'Holm-adjusted p')} over the {tested} "
            f"cells tested): "
            f"'concentrated on classes': {row['class_verdict']}.")
        lines += ["    " + line for line in yardstick_lines(row)]
    return lines

def stored_seconds(store: ResultsStore, cell: Cell, trials: int) -> pd.DataFrame:
    """Per engine: the number of stored trials of ``cell`` (first ``trials`` seeds) and the median
    seconds a trial spent calibrating (the int8 conversion included) and evaluating, as the store
    recorded them (each trial's own run, under whatever else ran on the machine then)."""
    rows = []
    for engine, where in level_selections(store, replace(cell, engine="fake"), "engine", ENGINES):
        stored = store.trials(**where)
        if stored.empty:
            continue
        first = stored[stored["seed"].isin(sorted(stored["seed"].unique())[:trials])]
        rows.append({"model": cell.model, "engine": engine, "trials": len(first),
                     "calib_s": first["calib_s"].median(), "eval_s": first["eval_s"].median()})
    return pd.DataFrame(rows, columns=["model", "engine", "trials", "calib_s", "eval_s"])


BENCH_COLUMNS = ["model", "dataset", "w_bits", "a_bits", "threads", "test_images", "fp_eval_s", "quant_eval_s",
                 "int8_eval_s", "trial_s", "int8_trial_s", "int8_eval_over_fp_eval", "int8_trial_over_fp_eval",
                 "int8_agreement", "file"]


def bench_table(folder: str | Path = "results/bench") -> pd.DataFrame:
    """The ``ptq bench`` runs in ``folder`` (``*.json``) that measured the int8 engine: one row
    each, with the float pass, the fake-quantized and int8 evaluations and whole trials (seconds),
    the int8 engine's ratios to the float pass and its agreement (share of images)."""
    rows = [{**{k: record.get(k) for k in BENCH_COLUMNS}, "file": path.name}
            for path, record in bench_runs(folder, has="int8_eval_s")]
    return pd.DataFrame(rows, columns=BENCH_COLUMNS)


def plot_class_gap(classes: pd.DataFrame, ax=None, title: str = ""):
    """Per class: the mean int8 minus fake accuracy with its bootstrap interval over seeds, over
    the chance band of a single class (shaded)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    x = np.arange(len(classes))
    if len(classes) and np.isfinite(classes["chance_low"].iloc[0]):
        ax.axhspan(classes["chance_low"].iloc[0], classes["chance_high"].iloc[0], color="0.85",
                   label="chance band (pseudo-classes)")
    ax.axhline(0, color="0.4", lw=0.8)
    err = np.vstack([classes["diff"] - classes["diff_low"], classes["diff_high"] - classes["diff"]])
    colors = np.where(classes["outside"].astype(bool), "C3", "C0")
    ax.errorbar(x, classes["diff"], yerr=err, fmt="none", ecolor="0.3", capsize=3)
    ax.scatter(x, classes["diff"], c=colors, zorder=3)
    ax.set_xticks(x, classes["class"], rotation=60, ha="right")
    ax.set_ylabel("int8 - fake accuracy (points)")
    ax.set_title(title)
    return ax
