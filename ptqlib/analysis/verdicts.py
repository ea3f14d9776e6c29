"""The study's claims as tests that can fail: each claim split into parts, each part an
estimate with an interval, a stated effect size and, for statements about classes, a chance band.

The claims are the study's (Yuan et al. 2023, quoted in ``book/method.md``). Every part states

- an **estimate**: a statistic of the stored trials (a ratio, a change in points);
- its **interval**: a 95 % percentile bootstrap over trials (calibration seeds), resampled in
  pairs where two settings ran on the same seeds, and read at the tails of Hesterberg's expanded
  percentile interval so that it keeps its coverage on few trials (:func:`bootstrap_interval`);
- a **stated effect size** (:class:`Effects`): what the claim's words are read to need ("much
  more" than the average: at least twice);
- for a statistic about classes, a **chance band**: the central 95 % of the same statistic on
  *pseudo-classes*, the test images split at random into groups of the real classes' sizes
  (:data:`CHANCE_DRAWS` splits; :class:`ClassData`). That is what the statistic would be if
  quantization errors fell on images regardless of their class. It comes from the stored
  per-image predictions; nothing is rerun. A statistic that takes a maximum over classes and
  levels is compared with the same maximum over pseudo-classes, so the band carries the
  multiple comparisons across classes and levels; per-class paired Wilcoxon tests are
  Holm-corrected over classes and levels.

A part is either about an **effect size** or about **chance**. An effect-size part is
``supported`` when its whole interval lies beyond the stated effect size in the claim's
direction, ``contradicted`` when the whole interval lies on the other side, and
``inconclusive`` when the interval straddles it (:func:`decide`). A chance part is a
permutation test against the pseudo-classes (:func:`decide_chance`): ``supported`` when at most
:data:`ALPHA` of the splits give a statistic at least as extreme as the real classes,
``contradicted`` when more than half do (the real classes show no more than a typical random
grouping of the images; with no class effect at all the p-value is uniform and this happens
about half the time, so it is weaker evidence than an effect-size part's contradiction), else
``inconclusive``. It rests on the estimate and its chance band,
both computed on the same trials: a bootstrap interval of a maximum over classes is biased
upward and would not be comparable with the band. Any part is ``not enough data`` when a cell
it needs has fewer than :data:`MIN_TRIALS` trials. A claim is supported when all its parts are
(claim 3: at some bit-width, its intervals widened and its chance parts Holm-adjusted over the
widths: :func:`bit_width_parts`), contradicted when
one of them is (claim 3: at every bit-width) (:func:`claim_verdicts`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from ptqlib.analysis.stats import expanded_tail, holm, outside_band, p_value, resamples_for
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, LevelPredictions, factor_predictions, level_cell, level_label
from ptqlib.data import pool_images

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_ENOUGH = VERDICTS = (
    "supported", "contradicted", "inconclusive", "not enough data")
MIN_TRIALS = 5  # fewer trials in a cell a part needs: "not enough data"
CONFIDENCE = 0.95
RESAMPLES = 2000  # bootstrap resamples of the trials (more where the expanded tails are small)
CHANCE_DRAWS = 1000  # random splits of the test images into pseudo-classes
ALPHA = 0.05  # level of the chance tests and of the Holm-corrected per-class tests
TYPICAL = 0.5  # a chance part is contradicted when more than this share of splits is as extreme

CLAIMS = {
    "1": "Individual classes drop much more than the average after PTQ, and vary much more across "
         "calibration sets.",
    "2": "The average is robust to noise, class bias and calibration size; individual classes are not. "
         "Beyond 32 calibration images, more data barely reduces a class's variance.",
    "3": "Lower bit-width can hit specific classes hard.",
    "4": "Gradient-based PTQ (AdaRound, BRECQ, QDrop) raises the average but is not more reliable per class; "
         "some classes do worse than with grid search.",
}


@dataclass(frozen=True)
class Effects:
    """The stated effect sizes: what each claim's words are read to need."""

    much_more: float = 2.0  # "much more" than the average: at least twice the average's
    robust_points: float = 1.0  # "robust": the average's mean accuracy moves by less than 1 point
    barely_reduces: float = 0.7  # "barely reduces": a std keeps at least 70 % of its value at 32 images
    reliable_points: float = 1.0  # "more reliable": the worst class gains 1 point or more beyond the average
    reliable_ratio: float = 0.8  # "more reliable": class spread or variability at most 80 % of grid search's


EFFECTS = Effects()


@dataclass(frozen=True)
class Part:
    """One tested part of a claim."""

    claim: str
    part: str  # e.g. "1a largest class drop vs the average's"
    verdict: str
    estimate: float | None
    ci: tuple[float, float] | None
    # central 95 % over pseudo-classes (for an effect-size part, for reference); None: no chance model
    chance: tuple[float, float] | None
    trials: int  # trials per level (the smallest level) the part rests on
    effect: float | None  # the stated effect size; None: a chance part
    direction: str  # ">": the claim needs the estimate above the effect (or chance); "<": below
    unit: str  # "x" (a ratio), "points", "%" or "images"
    p_chance: float | None = None  # share of pseudo-class splits at least as extreme as the estimate
    detail: str = ""
    # p_chance adjusted (Holm) over the family of tests the part is one of; its verdict reads it
    p_adjusted: float | None = None
    confidence: float = CONFIDENCE  # of ci: above 95 % where the part is one of several chances to pass

    @property
    def chance_passes(self) -> bool:
        """An effect-size part whose chance band lies wholly beyond its stated effect size in the
        claim's direction: pseudo-classes, blind to the class, pass its threshold too, so passing
        it says nothing about classes (its chance part does)."""
        if self.effect is None or self.chance is None or not np.isfinite(self.chance[0]):
            return False
        return self.chance[0] > self.effect if self.direction == ">" else self.chance[1] < self.effect

    def to_dict(self) -> dict:
        def number(v):  # JSON has no NaN: an undefined value is null
            return None if v is None or not np.isfinite(v) else float(v)

        d = asdict(self)
        d["chance_passes"] = self.chance_passes
        d["estimate"] = number(self.estimate)
        d["ci"] = None if self.ci is None else [number(v) for v in self.ci]
        d["chance"] = None if self.chance is None else [number(v) for v in self.chance]
        return d



def decide(ci: tuple[float, float], effect: float, direction: str) -> str:
    """An effect-size part: ``supported`` when the whole interval lies beyond ``effect`` in the
    claim's ``direction`` (``">"`` or ``"<"``), ``contradicted`` when it lies wholly on the other
    side, else ``inconclusive`` (also when the interval is undefined)."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    low, high = ci
    if np.isnan(low) or np.isnan(high):
        return INCONCLUSIVE
    if direction == ">":
        return SUPPORTED if low > effect else CONTRADICTED if high < effect else INCONCLUSIVE
    return SUPPORTED if high < effect else CONTRADICTED if low > effect else INCONCLUSIVE


def chance_p(estimate: float, null: np.ndarray, direction: str) -> float:
    """Share of pseudo-class splits whose statistic is at least as extreme as ``estimate`` (the
    permutation p-value, counting the real split as one of them)."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    null = np.asarray(null, dtype=float)
    extreme = null >= estimate if direction == ">" else null <= estimate
    return float((1 + extreme.sum()) / (1 + len(null)))


def decide_chance(p: float) -> str:
    """A chance part: ``supported`` when ``p`` < :data:`ALPHA`, ``contradicted`` when ``p`` >
    :data:`TYPICAL` (no more extreme than a typical random split), else ``inconclusive``."""
    if np.isnan(p):
        return INCONCLUSIVE
    return SUPPORTED if p < ALPHA else CONTRADICTED if p > TYPICAL else INCONCLUSIVE


def holm_family(parts: list[Part], undefined_count: bool = False) -> list[Part]:
    """``parts``, chance parts of one family of tests (one per cell or bit-width, any of which
    would support a claim), each with its p-value Holm-adjusted over those that have one
    (``p_adjusted``): with several tests, one p below :data:`ALPHA` comes by chance now and then,
    so a part is ``supported`` only where its adjusted p is below it. ``contradicted`` still reads
    the part's own p (more than :data:`TYPICAL` of the random groupings as extreme, a statement
    about this cell that several tests do not make likelier); else ``inconclusive``. Parts
    without a p-value are returned as they are; with ``undefined_count``, those that had their
    trials but an undefined statistic still count among the tests (as p = 1: a chance that
    could not pass), so that the family has one test per cell that was looked at."""
    def p_of(part: Part) -> float:
        if part.p_chance is not None:
            return part.p_chance
        return 1.0 if undefined_count and part.verdict != NOT_ENOUGH else np.nan

    adjusted = holm(np.array([p_of(p) for p in parts], dtype=float))
    out = []
    for p, a in zip(parts, adjusted):
        if not np.isfinite(a) or p.p_chance is None:
            out.append(p)
            continue
        verdict = SUPPORTED if a < ALPHA else CONTRADICTED if p.p_chance > TYPICAL else INCONCLUSIVE
        out.append(replace(p, p_adjusted=float(a), verdict=verdict))
    return out


def _quantiles(values: np.ndarray, confidence: float = CONFIDENCE, tail: float | None = None) -> tuple[float, float]:
    """Central ``confidence`` interval of ``values`` (no interpolation between draws), or the
    interval between the ``tail`` and ``1 - tail`` quantiles; NaN when the statistic is
    undefined in some of them."""
    tail = (1 - confidence) / 2 if tail is None else tail
    values = np.asarray(values, dtype=float)
    if np.isnan(values).any():  # an undefined statistic in some resamples: no interval
        return (np.nan, np.nan)
    return (float(np.quantile(values, tail, method="inverted_cdf")),
            float(np.quantile(values, 1 - tail, method="inverted_cdf")))


def bootstrap_interval(statistic: Callable[..., np.ndarray], sizes: list[int], paired: bool,
                       resamples: int = RESAMPLES, seed: int = 0,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap ``confidence`` interval of ``statistic(*indices)`` at the tails of the
    expanded percentile interval of the smallest sample (:func:`expanded_tail`): each argument is an index
    array ``[..., n]`` into the trials of one sample (``statistic`` works on any leading shape).
    ``paired``: the samples share their trials (same seeds), so one draw of indices serves all.
    At least 20 resamples fall beyond each end where :data:`MAX_RESAMPLES` allows (from 4 trials
    down the tails are too small for that, and the interval is close to the range of the
    resampled statistic); NaN for a sample of one trial, which has no spread to resample."""
    if min(sizes) < 2:
        return (np.nan, np.nan)
    tail = expanded_tail(min(sizes), confidence)
    resamples = resamples_for(tail, resamples)
    rng = np.random.default_rng(seed)
    if paired:
        if len(set(sizes)) != 1:
            raise ValueError(f"paired samples must have as many trials each, got {sizes}")
        idx = rng.integers(0, sizes[0], (resamples, sizes[0]))
        draws = [idx] * len(sizes)
    else:
        draws = [rng.integers(0, n, (resamples, n)) for n in sizes]
    return _quantiles(statistic(*draws), tail=tail)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den <= 0``: a ratio to an average that does not drop (or a
    std of zero) is undefined, and a part resting on it is inconclusive."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --- per-class accuracy of real and pseudo-classes ------------------------------------------

class ClassData:
    """Which test images each stored trial of one factor got right, per level, and the
    per-class accuracies of real classes and of pseudo-classes drawn from them."""

    def __init__(self, lp: LevelPredictions, chance_draws: int = CHANCE_DRAWS, seed: int = 0) -> None:
        if lp.labels is None:  # no level has trials
            lp = LevelPredictions({}, {}, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), [])
        classes = np.unique(lp.labels)
        y = np.searchsorted(classes, lp.labels)
        self.sizes = np.bincount(y)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.order = np.argsort(y, kind="stable")  # images grouped by class
        self.correct = {lv: (p == lp.labels).astype(np.float32) for lv, p in lp.preds.items()}
        self.fp_correct = (lp.fp_preds == lp.labels).astype(np.float32)
        self.seeds = lp.seeds
        self.names = list(lp.class_names)
        self.chance_draws, self.seed = chance_draws, seed
        self._pseudo: dict = {}

    @property
    def levels(self) -> list:
        return list(self.correct)

    def trials(self, level) -> int:
        return len(self.seeds[level]) if level in self.seeds else 0

    def _group(self, correct: np.ndarray, images: np.ndarray) -> np.ndarray:
        return 100.0 * np.add.reduceat(correct[..., images], self.offsets, axis=-1) / self.sizes

    def acc(self, level, seeds: np.ndarray | None = None) -> np.ndarray:
        """``[trials, classes]`` accuracy (%) of the real classes; ``seeds``: only these, in order."""
        correct = self.correct[level]
        if seeds is not None:
            correct = correct[np.searchsorted(self.seeds[level], seeds)]
        return self._group(correct, self.order)

    def fp_acc(self) -> np.ndarray:
        return self._group(self.fp_correct, self.order)

    def pseudo(self, levels: list, seeds: list[np.ndarray | None] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """The same splits of the images into pseudo-classes applied to every level:
        ``[draws, trials, classes]`` accuracies per level and ``[draws, classes]`` for FP."""
        seeds = seeds or [None] * len(levels)
        key = tuple((lv, None if s is None else tuple(s)) for lv, s in zip(levels, seeds))
        if key not in self._pseudo:
            rows = [self.correct[lv] if s is None else self.correct[lv][np.searchsorted(self.seeds[lv], s)]
                    for lv, s in zip(levels, seeds)]
            stacked = np.concatenate(rows)  # [all trials, images]
            # images right (or wrong) in every trial add the same to whichever group holds them
            varying = (stacked != stacked[:1]).any(0)
            moving, steady = np.ascontiguousarray(stacked[:, varying]), stacked[0, ~varying]
            position_group = np.repeat(np.arange(len(self.sizes)), self.sizes)
            rng = np.random.default_rng(self.seed)
            acc = np.empty((self.chance_draws, len(stacked), len(self.sizes)))
            fp = np.empty((self.chance_draws, len(self.sizes)))
            for d in range(self.chance_draws):
                group = np.empty(len(position_group), dtype=np.int64)
                group[rng.permutation(len(group))] = position_group  # the group of each image
                onehot = np.zeros((int(varying.sum()), len(self.sizes)), dtype=np.float32)
                onehot[np.arange(len(onehot)), group[varying]] = 1.0
                counts = moving @ onehot + np.bincount(group[~varying], steady, len(self.sizes))
                acc[d] = 100.0 * counts / self.sizes
                fp[d] = 100.0 * np.bincount(group, self.fp_correct, len(self.sizes)) / self.sizes
            bounds = np.cumsum([0, *map(len, rows)])
            self._pseudo[key] = ([acc[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])], fp)
        return self._pseudo[key]


# --- the statistics (any leading shape; trials on axis -2, classes on axis -1) ---------------

def largest_drop_ratio(acc: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """The largest class's mean drop against FP over the average's mean drop."""
    drops = (fp[..., None, :] - acc).mean(-2)  # [..., classes]
    return ratio(drops.max(-1), drops.mean(-1))


def class_std_ratio(acc: np.ndarray) -> np.ndarray:
    """The median class's std over trials over the std of the average."""
    return ratio(np.median(acc.std(-2, ddof=1), -1), acc.mean(-1).std(-1, ddof=1))


def average_move(base: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """The largest absolute change of the average's mean accuracy against ``base`` (paired trials)."""
    return np.max([np.abs((o - base).mean(-1).mean(-1)) for o in others], axis=0)


def class_move(base: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """The largest absolute change of a class's mean accuracy against ``base`` (paired trials)."""
    return np.max([np.abs((o - base).mean(-2)).max(-1) for o in others], axis=0)


def std_kept(small: np.ndarray, large: np.ndarray, classes: bool) -> np.ndarray:
    """The std over trials at the large size over that at the small size: of the median class
    (``classes``) or of the average."""
    if classes:
        return ratio(np.median(large.std(-2, ddof=1), -1), np.median(small.std(-2, ddof=1), -1))
    return ratio(large.mean(-1).std(-1, ddof=1), small.mean(-1).std(-1, ddof=1))


def average_gain(grid: np.ndarray, method: np.ndarray) -> np.ndarray:
    return (method - grid).mean(-1).mean(-1)


def worst_gain_beyond_average(grid: np.ndarray, method: np.ndarray) -> np.ndarray:
    """Mean gain of each trial's worst class minus the mean gain of the average (paired)."""
    return (method.min(-1) - grid.min(-1)).mean(-1) - average_gain(grid, method)


def drop_spread_ratio(grid: np.ndarray, method: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Spread (std across classes) of the classes' mean drops, method over grid search."""
    def spread(acc):
        return (fp[..., None, :] - acc).mean(-2).std(-1, ddof=1)
    return ratio(spread(method), spread(grid))


def class_variability_ratio(grid: np.ndarray, method: np.ndarray) -> np.ndarray:
    """The median class's std over trials, method over grid search."""
    return ratio(np.median(method.std(-2, ddof=1), -1), np.median(grid.std(-2, ddof=1), -1))


def smallest_class_change(grid: np.ndarray, method: np.ndarray) -> np.ndarray:
    """The most negative change of a class's mean accuracy, method against grid search (paired)."""
    return (method - grid).mean(-2).min(-1)


def class_wilcoxon(base: np.ndarray, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Paired Wilcoxon signed-rank test of every class at every level against ``base``:
    mean changes ``[levels, classes]`` and their Holm-corrected p-values (over all of them)."""
    diffs = np.stack([o - base for o in others])  # [levels, trials, classes]
    p = np.ones(diffs.shape[0] * diffs.shape[2])
    flat = diffs.transpose(0, 2, 1).reshape(len(p), -1)
    for i, d in enumerate(flat):
        if len(d) >= 2 and np.any(d != 0):
            p[i] = sps.wilcoxon(d).pvalue
    return diffs.mean(1), holm(p).reshape(diffs.shape[0], diffs.shape[2])


def wilcoxon_floor(pairs: int, tests: int) -> float:
    """A lower bound on the Holm-corrected p-values :func:`class_wilcoxon` can give with ``pairs``
    paired trials and ``tests`` tests: the exact two-sided signed-rank test's smallest p,
    ``2 / 2**pairs`` (every difference of one sign, none zero), times ``tests``. SciPy's test (1.13
    and later) gives no smaller p: with zero differences or ties it runs the exact permutation test
    up to 13 pairs, whose smallest p is at least as large, and the normal approximation above, whose
    smallest p (about ``2 Phi(-sqrt(pairs))``) is too. Above :data:`ALPHA` no change can be shown."""
    return min(1.0, tests * 2.0 ** (1 - pairs))


def wilcoxon_count(significant: int, total: int, pairs: int, noun: str, adjective: str) -> str:
    """"``significant`` of ``total`` ``noun`` ``adjective``" by the Holm-corrected paired Wilcoxon
    tests, or, where ``pairs`` paired trials are too few for any to be (:func:`wilcoxon_floor`),
    that none can be."""
    floor = wilcoxon_floor(pairs, total)
    if floor > ALPHA and significant == 0:
        return (f"no {noun} can be shown {adjective} with {pairs} paired trials (paired Wilcoxon, Holm over "
                f"{total}: its smallest p is {floor:.2g})")
    return f"{significant} of {total} {noun} {adjective} (paired Wilcoxon, Holm, {ALPHA:g})"


# --- parts -------------------------------------------------------------------------------------

def _part(claim: str, name: str, stat: Callable[..., np.ndarray], samples: list[np.ndarray], paired: bool,
          effect: float | None, direction: str, unit: str, null: np.ndarray | None = None,
          detail: str = "", ci_stat: Callable[..., np.ndarray] | None = None,
          confidence: float = CONFIDENCE) -> Part:
    """Estimate ``stat`` on ``samples`` (``[trials, classes]`` each) and its bootstrap interval
    over trials. Without a stated ``effect``, a chance part, decided by :func:`decide_chance`
    against ``null`` (the statistic on each pseudo-class split of the same trials); with one, an
    effect-size part, decided by :func:`decide`, and given ``null``, with its chance band for
    reference (:attr:`Part.chance_passes`).
    ``ci_stat``: the statistic bootstrapped instead of ``stat``, e.g. for a maximum over classes
    the chosen class held fixed (resampling a maximum inflates it, so its interval would miss
    the estimate)."""
    if effect is None and null is None:
        raise ValueError(f"part {name!r} needs a stated effect size or a chance model")
    n = [len(s) for s in samples]
    if min(n) < MIN_TRIALS:
        return Part(claim, name, NOT_ENOUGH, None, None, None, min(n), effect, direction, unit,
                    detail=f"fewer than {MIN_TRIALS} trials in a cell (trials: {', '.join(map(str, n))})")
    estimate = float(stat(*samples))
    ci_stat = ci_stat or stat
    ci = bootstrap_interval(lambda *idx: ci_stat(*[s[i] for s, i in zip(samples, idx)]), n, paired,
                            confidence=confidence)
    chance = p_chance = None
    if np.isnan(estimate):
        verdict, detail = INCONCLUSIVE, f"{detail}; the statistic is undefined (a ratio to no drop)".lstrip("; ")
    elif effect is None:
        chance, p_chance = _quantiles(null), chance_p(estimate, null, direction)
        verdict = decide_chance(p_chance)
    else:
        verdict = decide(ci, effect, direction)
        chance = None if null is None else _quantiles(null)
    return Part(claim, name, verdict, estimate, ci, chance, min(n), effect, direction, unit, p_chance, detail,
                confidence=confidence)


def _missing(claim: str, name: str, effect, direction: str, unit: str, why: str, trials: int) -> Part:
    """A part without enough data: ``trials``, the (paired) trials it would read so far."""
    return Part(claim, name, NOT_ENOUGH, None, None, None, trials, effect, direction, unit, detail=why)


def _common_seeds(data: ClassData, levels: list) -> np.ndarray:
    common = None
    for lv in levels:
        s = data.seeds.get(lv, np.array([], dtype=int))
        common = s if common is None else np.intersect1d(common, s)
    return common


def drop_parts(claim: str, label: str, data: ClassData, level, effects: Effects = EFFECTS,
               confidence: float = CONFIDENCE) -> list[Part]:
    """The largest class drop against the average's (at least ``much_more`` times; its interval
    at ``confidence``) and against chance, at ``level`` of ``data``."""
    names = (f"{label} largest class drop vs the average's", f"{label} largest class drop vs chance")
    if data.trials(level) < MIN_TRIALS:
        why = f"{data.trials(level)} trials (fewer than {MIN_TRIALS})"
        return [_missing(claim, n, e, ">", "x", why, data.trials(level))
                for n, e in zip(names, (effects.much_more, None))]
    acc, fp = data.acc(level), data.fp_acc()
    (pseudo,), pseudo_fp = data.pseudo([level])
    drops = (fp - acc).mean(0)
    worst = int(np.argmax(drops))
    detail = f"'{data.names[worst]}' drops {drops[worst]:.2f} points, the average {drops.mean():.2f}"
    stat = lambda a: largest_drop_ratio(a, fp)  # noqa: E731

    def selected(a):  # the class that drops most, held fixed
        d = (fp - a).mean(-2)
        return ratio(d[..., worst], d.mean(-1))

    null = largest_drop_ratio(pseudo, pseudo_fp)  # pseudo-classes against their own FP accuracy
    return [_part(claim, names[0], stat, [acc], False, effects.much_more, ">", "x", null=null, detail=detail,
                  ci_stat=selected, confidence=confidence),
            _part(claim, names[1], stat, [acc], False, None, ">", "x", null=null, detail=detail, ci_stat=selected)]


def variability_parts(claim: str, label: str, data: ClassData, level, effects: Effects = EFFECTS) -> list[Part]:
    """The median class's std over calibration sets against the average's (at least
    ``much_more`` times) and against chance."""
    names = (f"{label} class std over calibration sets vs the average's", f"{label} class std vs chance")
    if data.trials(level) < MIN_TRIALS:
        why = f"{data.trials(level)} trials (fewer than {MIN_TRIALS})"
        return [_missing(claim, n, e, ">", "x", why, data.trials(level))
                for n, e in zip(names, (effects.much_more, None))]
    acc = data.acc(level)
    (pseudo,), _ = data.pseudo([level])
    detail = (f"median class std {np.median(acc.std(0, ddof=1)):.2f} points, "
              f"std of the average {acc.mean(1).std(ddof=1):.2f}")
    null = class_std_ratio(pseudo)
    return [_part(claim, names[0], class_std_ratio, [acc], False, effects.much_more, ">", "x", null=null,
                  detail=detail),
            _part(claim, names[1], class_std_ratio, [acc], False, None, ">", "x", null=null, detail=detail)]


def factor_parts(claim: str, factor: str, data: ClassData, base, levels: list,
                 effects: Effects = EFFECTS) -> list[Part]:
    """Claim 2 for one factor, paired on the seeds every level has: the average moves by less
    than ``robust_points`` at every level; the class that moves most moves by more than that;
    and the largest class move is beyond chance."""
    e = effects.robust_points
    names = (f"2 {factor}: the average moves < {e:g} point", f"2 {factor}: some class moves > {e:g} point",
             f"2 {factor}: some class moves beyond chance")
    present = [lv for lv in levels if data.trials(lv) >= MIN_TRIALS]
    seeds = _common_seeds(data, [base, *present]) if present else np.array([])
    if data.trials(base) < MIN_TRIALS or not present or len(seeds) < MIN_TRIALS:
        why = "trials per level: " + ", ".join(f"{lv}: {data.trials(lv)}" for lv in [base, *levels])
        return [_missing(claim, names[0], e, "<", "points", why, len(seeds)),
                _missing(claim, names[1], e, ">", "points", why, len(seeds)),
                _missing(claim, names[2], None, ">", "points", why, len(seeds))]
    samples = [data.acc(lv, seeds) for lv in [base, *present]]
    pseudo, _ = data.pseudo([base, *present], [seeds] * (1 + len(present)))
    changes, p_holm = class_wilcoxon(samples[0], samples[1:])
    at, k = np.unravel_index(np.argmax(np.abs(changes)), changes.shape)
    significant = int((p_holm < ALPHA).sum())
    avg_changes = [(s - samples[0]).mean() for s in samples[1:]]
    avg_at = int(np.argmax(np.abs(avg_changes)))
    shown = partial(level_label, factor)
    levels_text = ", ".join(map(shown, present))
    most = (f"'{data.names[k]}' at {factor}={shown(present[at])}: {changes[at, k]:+.2f} points; "
            + wilcoxon_count(significant, changes.size, len(seeds), "class-level changes", "significant"))

    def selected_move(base_acc, *others):  # the class and level that move most, held fixed
        return np.abs((others[at][..., k] - base_acc[..., k]).mean(-1))

    return [_part(claim, names[0], average_move, samples, True, e, "<", "points",
                  detail=f"largest at {factor}={shown(present[avg_at])}: {avg_changes[avg_at]:+.2f} points "
                         f"(levels {levels_text} against {shown(base)})"),
            _part(claim, names[1], selected_move, samples, True, e, ">", "points", null=class_move(*pseudo),
                  detail=f"the most moved: {most}"),
            _part(claim, names[2], class_move, samples, True, None, ">", "points", null=class_move(*pseudo),
                  detail=f"largest: {most}", ci_stat=selected_move)]


def size_variance_parts(claim: str, data: ClassData, small, large, effects: Effects = EFFECTS) -> list[Part]:
    """Claim 2, calibration size: the std over calibration sets at ``large`` images keeps at least
    ``barely_reduces`` of its value at ``small`` images, for the median class and for the average."""
    parts = []
    for who, classes in (("a class's", True), ("the average's", False)):
        name = f"2 calib_size: {who} std at {large} vs {small} images (kept >= {effects.barely_reduces:.0%})"
        if min(data.trials(small), data.trials(large)) < MIN_TRIALS:
            parts.append(_missing(claim, name, effects.barely_reduces, ">", "x",
                                  f"trials: {small}: {data.trials(small)}, {large}: {data.trials(large)}",
                                  min(data.trials(small), data.trials(large))))
            continue
        a, b = data.acc(small), data.acc(large)
        std = (np.median(a.std(0, ddof=1)), np.median(b.std(0, ddof=1))) if classes else \
            (a.mean(1).std(ddof=1), b.mean(1).std(ddof=1))
        parts.append(_part(claim, name, lambda x, y, c=classes: std_kept(x, y, c), [a, b], False,
                           effects.barely_reduces, ">", "x",
                           detail=f"{std[0]:.2f} points at {small} images, {std[1]:.2f} at {large}"))
    return parts


SIZES_FROM = 32  # claim 2 on calibration size speaks of sizes from 32 images up ("beyond 32")


def factor_tests(factor: str, data: ClassData, base, levels: list, effects: Effects = EFFECTS) -> list[Part]:
    """The parts of the study's claims that one factor page tests, on its own levels (the
    conclusions page tests the study's): claim 2's average and class moves for ``noise`` and
    ``bias_class`` (``base``: the level the others are compared with); for ``calib_size`` the
    same on the sizes from :data:`SIZES_FROM` up, and the std kept from the smallest of them to
    the largest; claim 3's largest class drop at each level for ``w_bits``. Empty for another
    factor."""
    if factor in ("noise", "bias_class"):
        return factor_parts("2", factor, data, base, [lv for lv in levels if lv != base], effects)
    if factor == "calib_size":
        sizes = sorted(lv for lv in levels if lv >= SIZES_FROM)
        parts = factor_parts("2", factor, data, base, [lv for lv in sizes if lv != base], effects)
        return parts + (size_variance_parts("2", data, sizes[0], sizes[-1], effects) if len(sizes) > 1 else [])
    if factor == "w_bits":
        return bit_width_parts(data, levels, effects)
    return []


def bit_width_parts(data: ClassData, widths: list, effects: Effects = EFFECTS) -> list[Part]:
    """Claim 3 at each bit-width of ``widths`` (:func:`drop_parts`): the claim holds where some
    width has all its parts supported, so each width is one more chance to pass, and both parts
    are corrected for it, over the same ``k`` widths that have enough trials: the effect-size
    part's interval is widened to ``1 - 0.05 / k`` (Bonferroni), the chance parts Holm-adjusted
    over the k (:func:`holm_family`; a width whose statistic is undefined, a ratio to an average
    that does not drop, counts as a test that could not pass)."""
    k = sum(data.trials(b) >= MIN_TRIALS for b in widths)
    confidence = 1 - (1 - CONFIDENCE) / max(k, 1)
    parts = [p for b in widths for p in drop_parts("3", f"3 W{b}A{b}", data, b, effects, confidence)]
    chance = [i for i, p in enumerate(parts) if p.effect is None]
    for i, adjusted in zip(chance, holm_family([parts[i] for i in chance], undefined_count=True)):
        parts[i] = adjusted
    return parts


def reconstruction_parts(claim: str, data: ClassData, method: str, effects: Effects = EFFECTS) -> list[Part]:
    """Claim 4 for one method against grid search, paired on the seeds both have."""
    e = effects
    specs = [  # (name, statistic, effect or None for a chance part, direction, unit)
        (f"4 {method}: average gain over grid search", average_gain, 0.0, ">", "points"),
        (f"4 {method}: worst-class gain beyond the average's (< {e.reliable_points:g} point)",
         worst_gain_beyond_average, e.reliable_points, "<", "points"),
        (f"4 {method}: spread of class drops vs grid search (kept >= {e.reliable_ratio:.0%})",
         "spread", e.reliable_ratio, ">", "x"),
        (f"4 {method}: class std over calibration sets vs grid search (kept >= {e.reliable_ratio:.0%})",
         class_variability_ratio, e.reliable_ratio, ">", "x"),
        (f"4 {method}: some class does worse than with grid search", "selected", 0.0, "<", "points"),
        (f"4 {method}: the class losing most to grid search is beyond chance", smallest_class_change, None, "<",
         "points"),
    ]
    seeds = _common_seeds(data, ["grid", method])
    if data.trials("grid") < MIN_TRIALS or data.trials(method) < MIN_TRIALS or len(seeds) < MIN_TRIALS:
        why = f"paired trials: {len(seeds)} (grid {data.trials('grid')}, {method} {data.trials(method)})"
        return [_missing(claim, name, eff, d, u, why, len(seeds)) for name, _, eff, d, u in specs]
    grid, meth = data.acc("grid", seeds), data.acc(method, seeds)
    fp = data.fp_acc()
    pseudo, _ = data.pseudo(["grid", method], [seeds, seeds])
    changes, p_holm = class_wilcoxon(grid, [meth])
    worse = int(((p_holm[0] < ALPHA) & (changes[0] < 0)).sum())
    k = int(np.argmin(changes[0]))
    # both accuracies of that class: a class grid search predicts for most images (a collapsed
    # low-bit model) loses to any working model, which says more about grid search than about it
    detail = (f"'{data.names[k]}' {changes[0, k]:+.2f} points ({grid[:, k].mean():.1f} % with grid search, "
              f"{meth[:, k].mean():.1f} % with {method}); ") + wilcoxon_count(
        worse, changes.size, len(seeds), "classes", "significantly worse")
    named = {"spread": lambda g, m: drop_spread_ratio(g, m, fp),
             "selected": lambda g, m: (m[..., k] - g[..., k]).mean(-1)}  # the class losing most, held fixed
    parts = []
    for name, stat, eff, direction, unit in specs:
        stat = named.get(stat, stat) if isinstance(stat, str) else stat
        chance = eff is None
        about_one_class = chance or stat is named["selected"]
        # a chance part's null; the selected class's part gets the same band, for reference
        null = smallest_class_change(*pseudo) if about_one_class else None
        parts.append(_part(claim, name, stat, [grid, meth], True, eff, direction, unit,
                           null=null, detail=detail if about_one_class else "",
                           ci_stat=named["selected"] if chance else None))
    return parts


# --- the study's design and every claim --------------------------------------------------------

@dataclass(frozen=True)
class Design:
    """The cells the claims are tested on, for one model and dataset."""

    cell: Cell
    trials: int = 50
    bias_classes: tuple[str, ...] = ("airplane", "bird", "cat", "ship")
    bias_size: int | None = None  # calibration images of the bias cells (None: the cell's)
    bias_pool: str | None = None  # the pool the bias cells draw from (None: the cell's)
    noise_levels: tuple[float, ...] = (0.01, 0.05, 0.1)
    sizes: tuple[int, ...] = (32, 256, 1024)
    bit_widths: tuple[int, ...] = (8, 6, 4)
    methods: tuple[str, ...] = ("adaround", "brecq", "qdrop")
    recon_size: int = 1024
    recon_iters: int = 500
    recon_variant: str = "joint"  # the reconstruction variant claim 4 is tested on
    effects: Effects = field(default_factory=Effects)

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials must be a positive integer, got {self.trials!r}")
        if len(self.sizes) < 2:
            raise ValueError(f"sizes must hold at least two calibration sizes to compare, got {list(self.sizes)}")


IMAGENET_BIAS = ("n01440764", "n02979186", "n03028079", "n03445777")  # tench, cassette player, church, golf ball


def design_for(model: str, dataset: str, **overrides) -> Design:
    """The study's cells for ``model`` on ``dataset``: W4A4 MSE with 256 images on CIFAR-10;
    W6A6 on ImageNet (chosen where W8A8 was seen to lose next to nothing on average; the
    bitwidth_lite0 page), and the bias cells at 128 images from the
    10-class pool (``train``, 100 images a class; the 1000-class pool holds one image of each
    class, too few for a biased draw). The largest calibration size (also the reconstruction
    cells') is the pool's: 1024 on the 1000-class pool (topped up from the 10-class one,
    ``ptqlib.data.load_calibration_pool``), as on CIFAR-10; 1000 on the 10-class pool, which
    holds 1000 images. ``overrides``: fields of :class:`Cell` (``w_bits=6``, ``pool="train"``) or of
    :class:`Design` (``trials=20``)."""
    cell_fields = {k: overrides.pop(k) for k in list(overrides)
                   if k in Cell.__dataclass_fields__ and k not in ("model", "dataset")}
    if dataset.startswith("imagenet"):
        defaults = {"w_bits": 6, "a_bits": 6}
        largest = 1024 if pool_images(dataset, cell_fields.get("pool")) == "sample1000" else 1000
        extra = dict(bias_classes=IMAGENET_BIAS, bias_size=128, bias_pool="train", sizes=(32, 256, largest),
                     bit_widths=(8, 6), recon_size=largest)
    else:
        defaults, extra = {"w_bits": 4, "a_bits": 4}, {}
    unknown = set(overrides) - set(Design.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown design settings {sorted(unknown)}; allowed: fields of Cell or Design")
    return Design(cell=Cell(model, dataset, **{**defaults, **cell_fields}), **{**extra, **overrides})


def all_parts(store: ResultsStore, design: Design, chance_draws: int = CHANCE_DRAWS) -> list[Part]:
    """Every part of the four claims, from the store (no trial is run)."""
    d, e, cell = design, design.effects, design.cell

    def stored(c: Cell, factor: str, levels: list) -> ClassData:
        return load(store, c, factor, levels, d.trials, chance_draws)

    parts = []
    default = stored(cell, "noise", [0.0, *d.noise_levels])
    parts += drop_parts("1", "1a", default, 0.0, e) + variability_parts("1", "1b", default, 0.0, e)
    parts += factor_parts("2", "noise", default, 0.0, list(d.noise_levels), e)
    bias_cell = replace(cell, calib_size=d.bias_size or cell.calib_size, pool=d.bias_pool or cell.pool)
    bias = stored(bias_cell, "bias_class", [None, *d.bias_classes])
    parts += factor_parts("2", "bias_class", bias, None, list(d.bias_classes), e)
    sizes = stored(cell, "calib_size", sorted({*d.sizes, cell.calib_size}))
    parts += factor_parts("2", "calib_size", sizes, cell.calib_size,
                          [s for s in d.sizes if s != cell.calib_size], e)
    parts += size_variance_parts("2", sizes, min(d.sizes), max(d.sizes), e)
    parts += bit_width_parts(stored(cell, "w_bits", list(d.bit_widths)), list(d.bit_widths), e)
    return parts + reconstruction_claim(store, design, chance_draws)


def recon_cell(design: Design) -> Cell:
    """The design's reconstruction cell: its cell at the reconstruction size, iterations and variant."""
    d = design
    return replace(d.cell, calib_size=d.recon_size, iters=d.recon_iters, variant=d.recon_variant)


def reconstruction_claim(store: ResultsStore, design: Design, chance_draws: int = CHANCE_DRAWS) -> list[Part]:
    """The parts of claim 4: each reconstruction method of ``design`` against grid search, on the
    design's reconstruction cell (:func:`recon_cell`), its first ``trials`` seeds."""
    d = design
    recon = load(store, recon_cell(d), "optimizer", ["grid", *d.methods], d.trials, chance_draws)
    return [p for m in d.methods for p in reconstruction_parts("4", recon, m, d.effects)]


def claim4_trials(design: Design) -> list[dict]:
    """The trials :func:`reconstruction_claim` reads, as flat settings with a seed
    (``ptqlib.study.settings.trial_config``), seed by seed: grid search, then each method."""
    cell = recon_cell(design)
    return [asdict(level_cell(cell, "optimizer", m)) | {"seed": seed}
            for seed in range(design.trials) for m in ["grid", *design.methods]]


def staged_trials(designs: list[Design], stages: tuple[int, ...]) -> list[dict]:
    """The trials of ``designs`` (:func:`claim4_trials`) in stages, so that every design reaches a
    number of seeds before any goes further: first the seeds below ``stages[0]`` of every design,
    then those below ``stages[1]``, and so on, then the rest; within a stage design by design in
    the given order, seed by seed (grid search, then each method)."""
    if list(stages) != sorted(set(stages)) or any(s < 1 for s in stages):
        raise ValueError(f"stages must be increasing seed counts of at least 1, got {list(stages)}")

    def stage(seed: int) -> int:
        return next((i for i, limit in enumerate(stages) if seed < limit), len(stages))

    keyed = [(stage(t["seed"]), i, t) for i, design in enumerate(designs) for t in claim4_trials(design)]
    return [t for _, _, t in sorted(keyed, key=lambda k: k[:2])]  # stable: seed order kept within a design


def rerun_designs(cell: Cell, methods: list[str], count: int, rerun_cells: dict[str, dict], seeds: int,
                  rerun_trials: int) -> list[tuple[str, Design]]:
    """The study's reconstruction cells at ``count`` iterations per unit as claim-4 designs, in
    the configuration of ``cell`` (its variant and other reconstruction settings): ``cell`` itself
    with ``seeds`` trials (named ""), then each of ``rerun_cells`` (a name and its changes to
    ``cell``; a change of model or dataset drops the cell's weights, a change of dataset its pool)
    with ``rerun_trials``; each reads grid search and ``methods`` on the same seeds."""
    designs = []
    for name, changes in {"": {}, **rerun_cells}.items():
        resets = {"weights": None} if "model" in changes or "dataset" in changes else {}
        resets |= {"pool": None} if "dataset" in changes else {}
        c = replace(cell, **(resets | changes))
        fields = {k: v for k, v in asdict(c).items() if k not in ("model", "dataset")}
        designs.append((name, design_for(c.model, c.dataset, **fields, trials=seeds if not changes else rerun_trials,
                                         methods=tuple(methods), recon_size=c.calib_size, recon_iters=int(count),
                                         recon_variant=c.variant)))
    return designs


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return NOT_ENOUGH
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == NOT_ENOUGH for v in verdicts):
        return NOT_ENOUGH
    return INCONCLUSIVE


def _group(part: str) -> str:
    """The group a part's name belongs to: its method ("4 qdrop", the name before its colon) or
    its bit-width ("3 W2A2", the name before " largest"); other names are their own group."""
    return part.split(":")[0].split(" largest")[0]


def claim_verdicts(parts: list[Part]) -> dict[str, str]:
    """One verdict per claim from its parts: all parts (claim 3: all parts of some bit-width)."""
    out = {}
    for claim in CLAIMS:
        mine = [p for p in parts if p.claim == claim]
        if claim != "3":
            out[claim] = _combine([p.verdict for p in mine])
            continue
        by_width: dict[str, list[str]] = {}
        for p in mine:
            by_width.setdefault(_group(p.part), []).append(p.verdict)
        widths = [_combine(v) for v in by_width.values()]
        if SUPPORTED in widths:
            out[claim] = SUPPORTED
        elif widths and all(w == CONTRADICTED for w in widths):
            out[claim] = CONTRADICTED
        elif widths and all(w == NOT_ENOUGH for w in widths):
            out[claim] = NOT_ENOUGH
        else:
            out[claim] = INCONCLUSIVE
    return out


# --- chance bands for the factor pages --------------------------------------------------------

def load(store: ResultsStore, cell: Cell, factor: str, levels: list, trials: int,
         chance_draws: int = CHANCE_DRAWS) -> ClassData:
    """The stored predictions of ``factor``'s cells (the first ``trials`` seeds of each level)."""
    return ClassData(factor_predictions(store, cell, factor, levels, trials), chance_draws)


def _level_bands(data: ClassData, level, confidence: float) -> dict[str, tuple[np.ndarray, np.ndarray, tuple]]:
    """At ``level``, per statistic (``mean_drop``, ``std``): the real classes' values
    ``[classes]``, the pseudo-classes' ``[draws, classes]`` and the chance band of a single
    class, the central ``confidence`` of the pseudo-classes' values over every split."""
    acc, fp = data.acc(level), data.fp_acc()
    (pseudo,), pseudo_fp = data.pseudo([level])
    out = {}
    for name, real, null in (("mean_drop", (fp - acc).mean(0), pseudo_fp - pseudo.mean(1)),
                             ("std", acc.std(0, ddof=1), pseudo.std(1, ddof=1))):
        out[name] = (real, null, _quantiles(null.ravel(), confidence))
    return out


def class_bands(data: ClassData, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per level and class (with its test images): the mean drop against FP and the std over trials, beside the chance
    band of a single class, i.e. the central ``confidence`` of the same numbers over every
    pseudo-class of every split (``drop_low``/``drop_high``, ``std_low``/``std_high``). A class
    outside its band is affected more (or less) than a random group of as many images."""
    rows = []
    for level in data.levels:
        if data.trials(level) < 2:
            continue
        bands = _level_bands(data, level, confidence)
        (drops, _, (d_low, d_high)), (stds, _, (s_low, s_high)) = bands["mean_drop"], bands["std"]
        for k, name in enumerate(data.names):
            rows.append({"level": level, "class": name, "images": int(data.sizes[k]), "trials": data.trials(level),
                         "mean_drop": drops[k], "std": stds[k],
                         "drop_low": d_low, "drop_high": d_high, "std_low": s_low, "std_high": s_high})
    return pd.DataFrame(rows, columns=["level", "class", "images", "trials", "mean_drop", "std", "drop_low",
                                       "drop_high", "std_low", "std_high"])


def band_count_test(datas: list[ClassData], statistic: str = "mean_drop",
                    confidence: float = CONFIDENCE) -> dict:
    """How many classes, over every level of every ``datas`` (e.g. one per model) with two trials
    or more, lie outside their chance band (:func:`class_bands`; ``statistic``: ``mean_drop`` or
    ``std``), against the same count on the pseudo-classes of each split: a permutation test
    that keeps the dependence between the classes of one calibration set and between levels
    (each split groups the images alike at every level, and in every data set, which must share
    their test labels and seed). ``outside``, ``of``, ``chance`` (the
    mean count over the splits), ``chance_high`` (its 95th percentile), ``p`` (the share of
    splits, the real one counted, with as many outside or more) and ``draws``."""
    if statistic not in ("mean_drop", "std"):
        raise ValueError(f"statistic must be 'mean_drop' or 'std', got {statistic!r}")
    draws = {d.chance_draws for d in datas}
    if len(draws) > 1:
        raise ValueError(f"the data must have as many chance draws each, got {sorted(draws)}")
    # split d groups the images alike at every level and in every data set only because each
    # draws its splits from the same seed on the same test labels: then the counts add up split
    # by split; on other labels or seeds the splits would be independent and the sum too narrow
    if any(d.seed != datas[0].seed or not np.array_equal(d.order, datas[0].order) for d in datas[1:]):
        raise ValueError("band_count_test adds the data sets' splits up: they need the same test labels and seed")
    outside, of, null = 0, 0, np.zeros(draws.pop() if draws else 0)
    for data in datas:
        for level in data.levels:
            if data.trials(level) < 2:
                continue
            real, pseudo, (low, high) = _level_bands(data, level, confidence)[statistic]
            outside += int(outside_band(real, low, high).sum())
            of += len(real)
            null = null + outside_band(pseudo, low, high).sum(1)
    if not of:
        return {"outside": 0, "of": 0, "chance": np.nan, "chance_high": np.nan, "p": np.nan, "draws": len(null)}
    return {"outside": outside, "of": of, "chance": float(null.mean()), "chance_high": float(np.quantile(null, 0.95)),
            "p": float((1 + (null >= outside).sum()) / (1 + len(null))), "draws": len(null)}


def band_test_line(datas: list[ClassData], statistic: str = "mean_drop", what: str = "dots") -> str:
    """:func:`band_count_test` in words."""
    c = band_count_test(datas, statistic)
    if not c["of"]:
        return f"no {what}: no level with two trials or more"
    smallest = c["p"] <= 1 / (1 + c["draws"])
    p = f"= {c['p']:.4f}, the smallest {c['draws']} splits allow" if smallest else f"= {c['p']:.3f}"
    return (f"{c['outside']} of {c['of']} {what} outside their band; random groups of images put {c['chance']:.1f} "
            f"outside on average, at most {c['chance_high']:.0f} in 95 % of {c['draws']} splits (permutation p {p})")


# --- reading the verdicts ---------------------------------------------------------------------

def _percent(confidence: float) -> str:
    """``0.95`` -> ``"95 %"``, ``0.975`` -> ``"97.5 %"``."""
    return f"{100 * confidence:.4g} %"

def describe(part: Part) -> str:
    """A part's numbers in words: estimate, interval, chance band and its p-value, trials."""
    if part.estimate is None:
        return f"{part.part}: {part.detail}"
    unit = {"x": "x", "%": " %", "images": " images"}.get(part.unit, " points")
    if not np.isfinite(part.estimate):  # _part says why in the detail
        return f"{part.part}: undefined, {part.trials} trials; {part.detail}"
    text = f"{part.part}: {part.estimate:.2f}{unit}"
    if part.ci is not None and not np.isnan(part.ci[0]):
        text += f" ({_percent(part.confidence)} interval {part.ci[0]:.2f} to {part.ci[1]:.2f})"
    if part.chance is not None and part.effect is None:
        adjusted = "" if part.p_adjusted is None else f"; {p_value(part.p_adjusted, 'Holm-adjusted p')}"
        text += f", chance {part.chance[0]:.2f} to {part.chance[1]:.2f} ({p_value(part.p_chance)}{adjusted})"
    elif part.chance is not None:
        text += f", chance alone {part.chance[0]:.2f} to {part.chance[1]:.2f}"
        if part.chance_passes:
            text += f" (beyond {part.effect:g} too: this threshold cannot tell classes from random groups)"
    text += f", {part.trials} trials"
    return f"{text}; {part.detail}" if part.detail else text


def verdict_lines(parts: list[Part], indent: str = "") -> list[str]:
    """One line per part: its verdict, then :func:`describe`."""
    return [f"{indent}- {p.verdict}: {describe(p)}" for p in parts]


def parts_frame(parts: list[Part]) -> pd.DataFrame:
    """One row per part: claim, part, verdict, estimate, interval, chance band, p, trials,
    whether random groups of images pass the part too (:attr:`Part.chance_passes`), the part's
    detail (e.g. which class a one-class part is about); and the adjusted p where some part has
    one. A part's numbers (estimate, interval, chance band) are text with the same fixed
    decimals: enough for three significant figures of the largest of them, and never fewer than
    two (61.92 [61.77, 62.12]; a 0.0512x spread ratio and its interval do not collapse to
    [0.05, 0.06])."""
    def decimals(part):
        values = [v for v in (part.estimate, *(part.ci or ()), *(part.chance or ()))
                  if v is not None and np.isfinite(v)]
        largest = max((abs(v) for v in values), default=0.0)
        return 2 if largest == 0 else max(2, 2 - math.floor(math.log10(largest)))

    def number(v, d):
        return f"{round(v, d) + 0.0:.{d}f}"  # + 0.0: a value that rounds to zero prints without a sign

    def span(pair, d):
        return "" if pair is None or not np.all(np.isfinite(pair)) else f"[{number(pair[0], d)}, {number(pair[1], d)}]"

    def rounded(p):
        return None if p is None else round(p, 3)

    frame = pd.DataFrame([{"claim": p.claim, "part": p.part, "verdict": p.verdict,
                           "estimate": "" if p.estimate is None or not np.isfinite(p.estimate)
                           else number(p.estimate, decimals(p)),
                           "interval": span(p.ci, decimals(p)),
                           "effect": "chance" if p.effect is None else f"{p.direction} {p.effect:g}",
                           "chance band": span(p.chance, decimals(p)), "p (chance)": rounded(p.p_chance),
                           "p (adjusted)": rounded(p.p_adjusted), "trials": p.trials,
                           "random groups pass": "yes" if p.chance_passes else "",
                           "detail": p.detail} for p in parts])
    if frame.empty or frame["p (adjusted)"].isna().all():
        return frame.drop(columns="p (adjusted)", errors="ignore")
    return frame


def paired_trials(parts: list[Part], methods: tuple[str, ...]) -> str:
    """"adaround 50, brecq 50, ...": the fewest trials any claim-4 part of each method reads."""
    return ", ".join(f"{m} {min((p.trials for p in parts if p.part.startswith(f'4 {m}:')), default=0)}"
                     for m in methods)


def scope(parts: list[Part], verdict: str) -> str:
    """What a claim's ``verdict`` rests on, where some of its ``parts`` lack trials and the others
    decide it anyway (one contradicted part; claim 3: one bit-width): "", or that it is decided
    on the parts that have trials and which groups of parts (:func:`_group`) had none."""
    lacking = [p for p in parts if p.verdict == NOT_ENOUGH]
    if verdict not in (SUPPORTED, CONTRADICTED) or not lacking:
        return ""
    groups = ", ".join(dict.fromkeys(_group(p.part) for p in lacking))
    return f" (decided on the parts that have trials; not enough data for {groups})"


def findings(parts: list[Part], subject: str, claims: tuple[str, ...] | None = None) -> str:
    """Markdown: for each claim (of ``claims``; default all), the study's words, this
    replication's verdict on ``subject`` (e.g. "ResNet-20 on CIFAR-10"), and every part with its
    verdict and numbers, the parts that hold first (a part that random groups of images pass too
    says so: :attr:`Part.chance_passes`)."""
    claims = (claims,) if isinstance(claims, str) else claims
    unknown = sorted(set(claims or ()) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown claims {unknown}; choose among {', '.join(CLAIMS)}")
    verdicts = claim_verdicts(parts)
    words = {SUPPORTED: "holds", CONTRADICTED: "does not hold", INCONCLUSIVE: "open", NOT_ENOUGH: "not enough data"}
    lines = []
    for claim, text in CLAIMS.items():
        if claims is not None and claim not in claims:
            continue
        mine = sorted((p for p in parts if p.claim == claim), key=lambda p: VERDICTS.index(p.verdict))
        lines += [f"**Claim {claim}.** *\"{text}\"* On {subject}: **{verdicts[claim]}**"
                  f"{scope(mine, verdicts[claim])}.", ""]
        as_chance = "holds, as random groups would too"
        lines += [f"- *{as_chance if p.chance_passes and p.verdict == SUPPORTED else words[p.verdict]}*: {describe(p)}"
                  for p in mine]
        lines.append("")
    return "\n".join(lines)


def side_by_side(store: ResultsStore, designs: dict[str, Design], chance_draws: int = CHANCE_DRAWS) -> pd.DataFrame:
    """Rows: the parts; columns: the designs (e.g. one per model); cells: ``verdict``,
    ``estimate``, its ``interval``, the ``chance band``, whether ``random groups pass`` it too and
    the ``trials`` it rests on, in a two-level column index. Parts are matched by name."""
    frames = {}
    for label, design in designs.items():
        frame = parts_frame(all_parts(store, design, chance_draws)).set_index(["claim", "part"])
        frames[label] = frame[["verdict", "estimate", "interval", "chance band", "random groups pass", "trials"]]
    table = pd.concat(frames, axis=1)
    for label in frames:  # a part another design lacks: blank, not NaN
        table[(label, "trials")] = table[(label, "trials")].astype("Int64")
    return table


def headline(parts: list[Part]) -> str:
    """Markdown, one line per claim: its verdict and the names of the parts that hold (apart, those
    that random groups of images pass too: :attr:`Part.chance_passes`) and that do not."""
    verdicts = claim_verdicts(parts)
    lines = []
    for claim, text in CLAIMS.items():
        mine = [p for p in parts if p.claim == claim]
        holds = [p.part for p in mine if p.verdict == SUPPORTED and not p.chance_passes]
        as_chance = [p.part for p in mine if p.verdict == SUPPORTED and p.chance_passes]
        fails = [p.part for p in mine if p.verdict == CONTRADICTED]
        rest = len(mine) - len(holds) - len(as_chance) - len(fails)
        line = f"- **Claim {claim}** (*{text}*): **{verdicts[claim]}**{scope(mine, verdicts[claim])}."
        if holds:
            line += f" Holds: {'; '.join(holds)}."
        if as_chance:
            line += f" Holds, as random groups of images would too: {'; '.join(as_chance)}."
        if fails:
            line += f" Does not hold: {'; '.join(fails)}."
        if rest:
            line += f" {rest} part{'s' if rest > 1 else ''} open or without enough data."
        lines.append(line)
    return "\n".join(lines)
