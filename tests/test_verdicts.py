"""The verdicts as tests that can fail: synthetic trials with a known truth.

Predictions are simulated per image: an image the float model gets right is lost by a trial
with some probability. When that probability ignores the image's class, pseudo-classes and
real classes behave alike and no "beyond chance" part may come out supported; a planted class
effect must come out supported; a planted reconstruction that repairs the worst class must
contradict claim 4.
"""
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as sps

from ptqlib.analysis import verdicts as V
from ptqlib.analysis.stats import holm
from ptqlib.study.settings import columns as config_columns
from ptqlib.study.store import ResultsStore, pack_preds, row_key
from ptqlib.analysis.cells import Cell, LevelPredictions, level_cell

K, PER_CLASS, TRIALS = 10, 300, 30
LABELS = np.repeat(np.arange(K), PER_CLASS)
NAMES = [f"c{k}" for k in range(K)]


def _fp(rng):
    return np.where(rng.random(len(LABELS)) < 0.9, LABELS, (LABELS + 1) % K)  # 90 % right


def _trials(rng, fp, loss, trials=TRIALS):
    """``[trials, images]`` predictions: an image the FP model gets right is lost with
    probability ``loss(t)`` (``[images]``) in trial ``t``; a lost image is predicted wrong."""
    preds = np.repeat(fp[None], trials, 0)
    for t in range(trials):
        lost = (fp == LABELS) & (rng.random(len(LABELS)) < loss(t))
        preds[t, lost] = (LABELS[lost] + 1) % K
    return preds


def _data(levels: dict, fp, draws=300) -> V.ClassData:
    seeds = {lv: np.arange(len(p)) for lv, p in levels.items()}
    return V.ClassData(LevelPredictions(levels, seeds, LABELS, fp, NAMES), chance_draws=draws)


def _fragile(rng, share=0.2):
    """Per image: fragile (lost half the time) or robust (lost 1 % of the time), regardless of class."""
    return np.where(rng.random(len(LABELS)) < share, 0.5, 0.01)


# --- helpers against hand answers and scipy -------------------------------------------------------

def test_decide_is_three_valued_around_the_effect_size():
    assert V.decide((2.1, 3.0), 2.0, ">") == V.SUPPORTED
    assert V.decide((1.0, 1.9), 2.0, ">") == V.CONTRADICTED
    assert V.decide((1.9, 2.1), 2.0, ">") == V.INCONCLUSIVE
    assert V.decide((-0.5, 0.5), 1.0, "<") == V.SUPPORTED
    assert V.decide((1.5, 2.0), 1.0, "<") == V.CONTRADICTED
    assert V.decide((np.nan, np.nan), 1.0, ">") == V.INCONCLUSIVE
    with pytest.raises(ValueError, match="direction"):
        V.decide((0, 1), 1.0, ">=")


def test_chance_is_a_permutation_test():
    null = np.arange(99.0)  # 99 splits: 0, 1, ..., 98
    # 5 splits at least as large as 94, plus the real one: (1 + 5) / 100
    assert V.chance_p(94.0, null, ">") == pytest.approx(0.06)
    assert V.chance_p(200.0, null, ">") == pytest.approx(0.01)
    assert V.chance_p(-1.0, null, "<") == pytest.approx(0.01)
    assert V.decide_chance(0.01) == V.SUPPORTED
    assert V.decide_chance(0.06) == V.INCONCLUSIVE
    assert V.decide_chance(0.6) == V.CONTRADICTED


def test_bootstrap_interval_of_a_mean_agrees_with_scipy():
    x = np.random.default_rng(1).normal(3.0, 2.0, 40)
    ours = V.bootstrap_interval(lambda i: x[i].mean(-1), [len(x)], paired=False, resamples=20000)
    level = 1 - 2 * V.expanded_tail(len(x))  # scipy's percentile interval at the expanded level
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=20000, confidence_level=level,
                        rng=np.random.default_rng(2)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.05)
    # the textbook t interval for the mean, for scale
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert ours == pytest.approx((x.mean() - half, x.mean() + half), abs=0.1)


def test_expanded_tails_keep_the_coverage_the_plain_percentile_interval_loses_on_few_trials():
    assert V.expanded_tail(10) == pytest.approx(0.00855, abs=1e-5)  # Hesterberg's: sqrt(10/9) t(0.975, 9)
    assert 0.021 < V.expanded_tail(50) < 0.025 and V.expanded_tail(1000) == pytest.approx(0.025, abs=2e-4)
    with pytest.raises(ValueError, match="at least 2 trials, got 1"):
        V.expanded_tail(1)
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 1.0, (300, 7))  # 7 seeds, true mean 0
    covered, plain = [], []
    for k, x in enumerate(samples):
        lo, hi = V.bootstrap_interval(lambda i: x[i].mean(-1), [7], paired=False, seed=k)
        covered.append(lo <= 0 <= hi)
        idx = np.random.default_rng(k).integers(0, 7, (2000, 7))
        p_lo, p_hi = np.quantile(x[idx].mean(-1), [0.025, 0.975])
        plain.append(p_lo <= 0 <= p_hi)
    assert np.mean(covered) >= 0.92  # about the stated 95 %
    assert np.mean(plain) < 0.91  # where the plain percentile interval falls short


def test_paired_bootstrap_resamples_the_same_seeds():
    a = np.arange(20.0)
    b = a + 1.0  # a constant paired difference: every paired resample gives exactly 1
    assert V.bootstrap_interval(lambda i, j: (b[j] - a[i]).mean(-1), [20, 20], paired=True) == (1.0, 1.0)
    low, high = V.bootstrap_interval(lambda i, j: (b[j] - a[i]).mean(-1), [20, 20], paired=False)
    assert low < 0 < 2 < high  # unpaired, the spread of a and b swamps the difference


def test_holm_against_a_hand_computation():
    # sorted p: 0.01 * 4 = 0.04, 0.02 * 3 = 0.06, 0.03 * 2 = 0.06, 0.5 * 1 = 0.5
    assert holm(np.array([0.03, 0.01, 0.5, 0.02])) == pytest.approx([0.06, 0.04, 0.5, 0.06])


def test_class_accuracies_and_pseudo_classes_keep_the_class_sizes():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    preds = _trials(rng, fp, lambda t: 0.1)
    data = _data({0: preds}, fp, draws=20)
    acc = data.acc(0)
    for k in range(K):
        assert acc[:, k] == pytest.approx(100 * (preds[:, LABELS == k] == k).mean(1))
    (pseudo,), pseudo_fp = data.pseudo([0])
    assert pseudo.shape == (20, TRIALS, K) and pseudo_fp.shape == (20, K)
    # the average over equal-sized pseudo-classes is the overall accuracy, whatever the split
    assert pseudo.mean(-1) == pytest.approx(np.repeat(acc.mean(-1)[None], 20, 0))


def test_ratio_to_no_drop_is_undefined():
    assert np.isnan(V.ratio(1.0, 0.0)) and np.isnan(V.ratio(1.0, -0.2)) and V.ratio(3.0, 1.5) == 2.0


# --- claims 1 and 3: classes against chance -----------------------------------------------------------

def test_errors_that_ignore_classes_never_pass_as_class_effects():
    """Per-image fragility and per-trial noise, both blind to the class: the class std is about
    sqrt(10) times the average's, which the bare "at least 2x" rule calls supported, but it is
    what pseudo-classes give, so no part against chance may come out supported."""
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    fragile = _fragile(rng)
    data = _data({0: _trials(rng, fp, lambda t: fragile)}, fp)
    drop, chance_drop = V.drop_parts("1", "1a", data, 0)
    std, chance_std = V.variability_parts("1", "1b", data, 0)
    assert std.verdict == V.SUPPORTED and std.estimate > 2.5  # the bare ratio rule cannot fail
    assert chance_std.verdict != V.SUPPORTED and chance_drop.verdict != V.SUPPORTED
    # the effect-size part carries the band its chance part tests against, and says chance passes it too
    assert std.chance == chance_std.chance and std.chance_passes and std.p_chance is None
    assert "this threshold cannot tell classes from random groups" in V.describe(std)
    assert "Holds, as random groups of images would too: 1b class std over calibration sets" in V.headline(
        [drop, chance_drop, std, chance_std])
    assert "- *holds, as random groups would too*: 1b class std over calibration sets" in V.findings(
        [drop, chance_drop, std, chance_std], "toy")
    assert chance_std.chance[0] < chance_std.estimate < chance_std.chance[1] and chance_std.p_chance >= V.ALPHA


def test_a_planted_class_effect_is_supported():
    """Class 3 is fragile (lost 30 % of the time, the others 3 %): its drop is beyond chance and
    much more than the average's (claims 1a and 3). Separately, each trial's calibration set
    moves whole classes up or down: the class std is beyond chance (claim 1b)."""
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    planted = np.where(LABELS == 3, 0.30, 0.03)
    data = _data({4: _trials(rng, fp, lambda t: planted)}, fp)
    drops = V.drop_parts("3", "3 W4A4", data, 4)
    assert [p.verdict for p in drops] == [V.SUPPORTED] * 2, [(p.part, p.estimate, p.ci, p.chance) for p in drops]
    assert "'c3' drops" in drops[0].detail and drops[1].p_chance < 0.01
    assert not drops[0].chance_passes and "cannot tell" not in V.describe(drops[0])
    assert "Holds: 3 W4A4 largest class drop vs the average's; 3 W4A4 largest class drop vs chance." in V.headline(drops)
    assert V.claim_verdicts(drops)["3"] == V.SUPPORTED
    shift = rng.normal(1.0, 0.5, (TRIALS, K)).clip(0.1)  # per trial and class
    moved = _data({0: _trials(rng, fp, lambda t: 0.1 * shift[t][LABELS])}, fp)
    stds = V.variability_parts("1", "1b", moved, 0)
    assert [p.verdict for p in stds] == [V.SUPPORTED] * 2, [(p.part, p.estimate, p.ci, p.chance) for p in stds]


def test_a_class_std_that_only_follows_the_average_is_not_much_more_than_the_averages():
    """Each trial's calibration set lifts or sinks every class alike (4 % to 40 % of the images
    lost): the classes vary across calibration sets about as much as the average does, so the
    "at least twice the average's" part fails."""
    rng = np.random.default_rng(5)
    fp = _fp(rng)
    level = rng.uniform(0.04, 0.4, TRIALS)
    data = _data({0: _trials(rng, fp, lambda t: np.full(len(LABELS), level[t]))}, fp)
    std, _ = V.variability_parts("1", "1b", data, 0)
    assert std.verdict == V.CONTRADICTED and std.ci[1] < 2 and std.estimate >= 1

def test_claim_3_chance_parts_are_adjusted_over_the_bit_widths():
    def chance(name, p):
        return V.Part("3", name, V.decide_chance(p), 2.0, (1.0, 3.0), (0.5, 1.5), 10, None, ">", "x", p_chance=p)

    family = [chance("3 W8A8 largest class drop vs chance", 0.03), chance("3 W4A4 largest class drop vs chance", 0.2),
              chance("3 W2A2 largest class drop vs chance", 0.004)]
    got = V.holm_family(family)
    assert [p.p_adjusted for p in got] == pytest.approx([0.06, 0.2, 0.012])
    assert [p.verdict for p in got] == [V.INCONCLUSIVE, V.INCONCLUSIVE, V.SUPPORTED]  # 0.03 alone would pass
    # adjusting makes support harder, not contradiction easier: three inconclusive widths stay so
    calm = V.holm_family([chance("3 W8A8 largest class drop vs chance", 0.2),
                          chance("3 W6A6 largest class drop vs chance", 0.25),
                          chance("3 W4A4 largest class drop vs chance", 0.3)])
    assert [p.p_adjusted for p in calm] == pytest.approx([0.6, 0.6, 0.6])
    assert [p.verdict for p in calm] == [V.INCONCLUSIVE] * 3 and V.claim_verdicts(calm)["3"] == V.INCONCLUSIVE
    assert V.holm_family([chance("a", 0.7), chance("b", 0.01)])[0].verdict == V.CONTRADICTED  # its own p > 0.5
    missing = V._missing("3", "3 W6A6 largest class drop vs chance", None, ">", "x", "no trials", 0)
    assert V.holm_family([missing, family[0]])[0] is missing
    assert V.holm_family([missing, family[0]])[1].p_adjusted == pytest.approx(0.03)  # one test: nothing to adjust
    undefined = replace(chance("3 W8A8 largest class drop vs chance", 0.5), p_chance=None, estimate=np.nan,
                        verdict=V.INCONCLUSIVE)  # looked at, statistic undefined: counted as p = 1 on request
    assert V.holm_family([undefined, family[0]])[1].p_adjusted == pytest.approx(0.03)
    counted = V.holm_family([undefined, missing, family[0]], undefined_count=True)
    assert counted[2].p_adjusted == pytest.approx(0.06) and counted[0] is undefined and counted[1] is missing
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    planted = np.where(LABELS == 3, 0.30, 0.03)
    data = _data({4: _trials(rng, fp, lambda t: planted), 8: _trials(rng, fp, lambda t: _fragile(rng))}, fp)
    parts = V.bit_width_parts(data, [8, 4])
    assert [p.part for p in parts] == [p.part for b in (8, 4) for p in V.drop_parts("3", f"3 W{b}A{b}", data, b)]
    raw = [p for b in (8, 4) for p in V.drop_parts("3", f"3 W{b}A{b}", data, b) if p.effect is None]
    assert [p.p_adjusted for p in parts if p.effect is None] == pytest.approx(list(holm(np.array(
        [p.p_chance for p in raw]))))
    assert parts[3].verdict == V.SUPPORTED and V.claim_verdicts(parts)["3"] == V.SUPPORTED
    # the effect-size parts' intervals widened for the two widths: 97.5 %, around the 95 % ones
    plain = V.drop_parts("3", "3 W4A4", data, 4)[0]
    assert parts[2].confidence == 0.975 and plain.confidence == 0.95 and "(97.5 % interval" in V.describe(parts[2])
    assert parts[2].ci[0] <= plain.ci[0] and parts[2].ci[1] >= plain.ci[1] and parts[2].ci != plain.ci
    assert V.factor_tests("w_bits", data, 8, [8, 4]) == parts

def test_a_small_class_effect_is_not_much_more_than_the_average():
    """Class 3 loses 1.3x the average: beyond chance with many images, but not "much more"."""
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    loss = np.where(LABELS == 3, 0.13, 0.097)
    data = _data({0: _trials(rng, fp, lambda t: loss, trials=40)}, fp)
    vs_average, _ = V.drop_parts("1", "1a", data, 0)
    assert vs_average.verdict == V.CONTRADICTED and vs_average.ci[1] < 2


# --- claim 2: factors ------------------------------------------------------------------------------

def test_factor_moving_one_class_against_chance():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    fragile = _fragile(rng)
    clean = _trials(rng, fp, lambda t: fragile)
    same = _trials(rng, fp, lambda t: fragile)
    hurt = _trials(rng, fp, lambda t: np.where(LABELS == 5, 0.3, fragile))  # planted: class 5 loses
    null = _data({0.0: clean, 0.1: same}, fp)
    avg, moves, cls = V.factor_parts("2", "noise", null, 0.0, [0.1])
    assert avg.verdict == V.SUPPORTED and cls.verdict != V.SUPPORTED and moves.verdict != V.SUPPORTED
    planted = _data({0.0: clean, 0.1: hurt}, fp)
    avg, moves, cls = V.factor_parts("2", "noise", planted, 0.0, [0.1])
    assert cls.verdict == moves.verdict == V.SUPPORTED and "'c5' at noise=0.1" in cls.detail
    assert avg.verdict != V.SUPPORTED  # class 5 losing ~25 points moves the average by ~2.5


def test_size_variance_kept_or_reduced():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    wide = rng.normal(1.0, 0.6, (TRIALS, K)).clip(0.05)
    narrow = rng.normal(1.0, 0.1, (TRIALS, K)).clip(0.05)
    small = _trials(rng, fp, lambda t: 0.1 * wide[t][LABELS])
    same = _trials(rng, fp, lambda t: 0.1 * wide[t][LABELS])
    less = _trials(rng, fp, lambda t: 0.1 * narrow[t][LABELS])
    kept = V.size_variance_parts("2", _data({32: small, 1024: same}, fp), 32, 1024)
    assert kept[0].verdict in (V.SUPPORTED, V.INCONCLUSIVE) and kept[0].ci[1] > 0.7
    reduced = V.size_variance_parts("2", _data({32: small, 1024: less}, fp), 32, 1024)
    assert reduced[0].verdict == V.CONTRADICTED and reduced[0].ci[1] < 0.7


def test_a_factor_page_tests_the_parts_of_its_factor():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    fragile = _fragile(rng)
    runs = {lv: _trials(rng, fp, lambda t: fragile, trials=8) for lv in (1, 32, 256, 1024)}
    data = _data(runs, fp, draws=50)
    sizes = V.factor_tests("calib_size", data, 256, [1, 32, 256, 1024])
    names = [p.part for p in sizes]
    assert names[:3] == [p.part for p in V.factor_parts("2", "calib_size", data, 256, [32, 1024])]
    assert "levels 32, 1024 against 256" in sizes[0].detail  # 1 image is below the claim's sizes
    assert [p.detail for p in sizes[3:]] == [p.detail for p in V.size_variance_parts("2", data, 32, 1024)]
    bits = V.factor_tests("w_bits", _data({8: runs[1], 6: runs[32]}, fp, draws=50), 8, [8, 6])
    assert [p.part.split(" largest")[0] for p in bits] == ["3 W8A8"] * 2 + ["3 W6A6"] * 2
    noise = V.factor_tests("noise", _data({0.0: runs[1], 0.1: runs[32]}, fp, draws=50), 0.0, [0.0, 0.1])
    assert [p.claim for p in noise] == ["2"] * 3 and "levels 0.1 against 0" in noise[0].detail
    assert V.factor_tests("metric", data, "mse", ["mse"]) == []


# --- claim 4: reconstruction ------------------------------------------------------------------------

def test_a_reconstruction_that_repairs_the_worst_class_contradicts_claim_4():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    grid_loss = np.where(LABELS == 2, 0.35, 0.08)
    grid = _trials(rng, fp, lambda t: grid_loss)
    repaired = _trials(rng, fp, lambda t: np.full(len(LABELS), 0.04))  # every class better than the best
    data = _data({"grid": grid, "brecq": repaired}, fp)
    parts = {p.part.split(": ")[1].split(" (")[0]: p for p in V.reconstruction_parts("4", data, "brecq")}
    assert parts["average gain over grid search"].verdict == V.SUPPORTED
    assert parts["worst-class gain beyond the average's"].verdict == V.CONTRADICTED
    assert parts["spread of class drops vs grid search"].verdict == V.CONTRADICTED
    assert parts["some class does worse than with grid search"].verdict == V.CONTRADICTED  # all gain
    # (the class gaining least gains less than chance would give, since class 2 gains most: the
    # chance part is about how uneven the changes are, the part above about an actual loss)
    assert V.claim_verdicts(list(parts.values()))["4"] == V.CONTRADICTED


def test_a_reconstruction_that_only_lifts_the_average_supports_claim_4():
    rng = np.random.default_rng(1)
    fp = _fp(rng)
    grid = _trials(rng, fp, lambda t: np.where(LABELS == 2, 0.2, 0.1))
    # every class gains a little except class 2, which gets worse
    better = _trials(rng, fp, lambda t: np.where(LABELS == 2, 0.3, 0.05))
    data = _data({"grid": grid, "qdrop": better}, fp)
    parts = V.reconstruction_parts("4", data, "qdrop")
    verdicts = {p.part.split(": ")[1].split(" (")[0]: p.verdict for p in parts}
    assert verdicts["average gain over grid search"] == V.SUPPORTED
    assert verdicts["worst-class gain beyond the average's"] == V.SUPPORTED
    assert verdicts["some class does worse than with grid search"] == V.SUPPORTED
    assert verdicts["the class losing most to grid search is beyond chance"] == V.SUPPORTED
    # the table names that class with its accuracy under both, so a reader can tell a loss of
    # the method's from grid search predicting the class for most images
    on_grid, on_qdrop = data.acc("grid")[:, 2].mean(), data.acc("qdrop")[:, 2].mean()
    assert on_qdrop < on_grid
    detail = V.parts_frame(parts)["detail"].iloc[-1]
    assert detail.startswith(f"'c2' {on_qdrop - on_grid:+.2f} points ({on_grid:.1f} % with grid search, "
                             f"{on_qdrop:.1f} % with qdrop); "), detail


def test_a_reconstruction_that_steadies_the_classes_or_loses_images_blind_to_class_fails_those_parts():
    """Two more ways claim 4's parts fail. A method whose trials move every class alike, where grid
    search's calibration sets move classes up and down one by one, keeps far less than 80 % of grid
    search's class std. A method that loses images regardless of their class has a class losing
    most to grid search, but no more than pseudo-classes would: not beyond chance."""
    rng = np.random.default_rng(2)
    fp = _fp(rng)
    shift = rng.normal(1.0, 0.6, (TRIALS, K)).clip(0.05)  # per trial and class
    grid = _trials(rng, fp, lambda t: 0.15 * shift[t][LABELS])
    steady = _trials(rng, fp, lambda t: np.full(len(LABELS), 0.15))
    parts = {p.part.split(": ")[1].split(" (")[0]: p
             for p in V.reconstruction_parts("4", _data({"grid": grid, "brecq": steady}, fp), "brecq")}
    std = parts["class std over calibration sets vs grid search"]
    assert std.verdict == V.CONTRADICTED and std.ci[1] < 0.8
    same = _trials(rng, fp, lambda t: 0.15 * shift[t][LABELS])  # the same class moves: kept
    kept = {p.part.split(": ")[1].split(" (")[0]: p
            for p in V.reconstruction_parts("4", _data({"grid": grid, "brecq": same}, fp), "brecq")}
    assert kept["class std over calibration sets vs grid search"].verdict == V.SUPPORTED
    fragile = _fragile(rng)
    blind_grid = _trials(rng, fp, lambda t: fragile)
    blind = _trials(rng, fp, lambda t: np.clip(fragile * 1.3, 0, 1))  # loses more, whatever the class
    parts = {p.part.split(": ")[1].split(" (")[0]: p
             for p in V.reconstruction_parts("4", _data({"grid": blind_grid, "qdrop": blind}, fp), "qdrop")}
    beyond = parts["the class losing most to grid search is beyond chance"]
    assert beyond.verdict != V.SUPPORTED and beyond.p_chance >= V.ALPHA
    assert parts["average gain over grid search"].verdict == V.CONTRADICTED  # it loses on average

def test_bootstrap_intervals_of_one_to_four_trials_stay_finite_and_small():
    x = np.array([1.0, 3.0, 2.0, 5.0])
    assert np.isnan(V.bootstrap_interval(lambda i: x[:1][i].mean(-1), [1], paired=False)).all()  # no spread
    for n in (2, 3, 4):  # expanded tails too small for 20 resamples each: capped, about the resampled range
        low, high = V.bootstrap_interval(lambda i: x[:n][i].mean(-1), [n], paired=False)
        assert x[:n].min() <= low <= x[:n].mean() <= high <= x[:n].max()
    assert V.bootstrap_interval(lambda i: x[:2][i].mean(-1), [2], paired=False) == (1.0, 3.0)


def test_per_class_wilcoxon_says_when_too_few_pairs_could_show_any_class_worse():
    assert V.wilcoxon_floor(7, 10) == pytest.approx(10 * 2 / 2 ** 7)  # 0.156: above 0.05
    assert V.wilcoxon_floor(10, 10) == pytest.approx(0.0195, abs=1e-4) and V.wilcoxon_floor(2, 10) == 1.0
    # the floor is what scipy's exact test gives when every difference has one sign, and no less
    # with zero differences or ties (exact permutations up to 13 pairs, the normal approximation above)
    assert sps.wilcoxon(np.arange(1.0, 8.0)).pvalue == pytest.approx(V.wilcoxon_floor(7, 1))
    for d in ([0.0, 0.0, 1, 2, 3, 4, 5, 6, 7], [1.0] * 9, [1.0] * 20 + [0.0], np.r_[np.arange(1.0, 40.0), 5.0]):
        assert sps.wilcoxon(d).pvalue >= V.wilcoxon_floor(len(d), 1) * (1 - 1e-9), d
    rng = np.random.default_rng(1)
    fp = _fp(rng)
    grid = _trials(rng, fp, lambda t: np.where(LABELS == 2, 0.2, 0.1))
    worse2 = _trials(rng, fp, lambda t: np.where(LABELS == 2, 0.5, 0.05))  # class 2 loses 30 % of its images
    few = V.reconstruction_parts("4", _data({"grid": grid[:7], "qdrop": worse2[:7]}, fp, draws=50), "qdrop")
    many = V.reconstruction_parts("4", _data({"grid": grid[:10], "qdrop": worse2[:10]}, fp, draws=50), "qdrop")
    assert "no classes can be shown significantly worse with 7 paired trials" in few[-1].detail
    assert "smallest p is 0.16" in few[-1].detail
    assert "1 of 10 classes significantly worse" in many[-1].detail  # 10 pairs can show it
    assert many[-2].detail == many[-1].detail and not many[0].detail  # the two parts about one class carry it


def test_a_part_without_enough_data_says_how_many_paired_trials_it_has():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    data = _data({"grid": _trials(rng, fp, lambda t: 0.1, trials=3), "brecq": _trials(rng, fp, lambda t: 0.1, trials=3)},
                 fp, draws=20)
    parts = V.reconstruction_parts("4", data, "brecq")
    assert {p.verdict for p in parts} == {V.NOT_ENOUGH} and {p.trials for p in parts} == {3}
    assert V.paired_trials(parts, ("brecq",)) == "brecq 3"


def test_too_few_trials_is_not_enough_data():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    data = _data({0: _trials(rng, fp, lambda t: 0.1, trials=3)}, fp)
    assert {p.verdict for p in V.drop_parts("1", "1a", data, 0)} == {V.NOT_ENOUGH}
    assert V.claim_verdicts(V.drop_parts("1", "1a", data, 0))["1"] == V.NOT_ENOUGH


# --- end to end: a store, the design, the command ----------------------------------------------------------

def _store(tmp_path, rng) -> tuple[ResultsStore, np.ndarray]:
    store = ResultsStore(tmp_path / "s.sqlite")
    fp = _fp(rng)
    per_class = {n: 100 * float((fp[LABELS == k] == k).mean()) for k, n in enumerate(NAMES)}
    ctx = SimpleNamespace(model_name="resnet20", dataset="toy", weights_fp="w", data_fp="d", weights_arg=None,
                          fp_avg=90.0, fp_per_class=per_class, fp_preds=torch.from_numpy(fp), fp_ece=1.0,
                          test=SimpleNamespace(labels=torch.from_numpy(LABELS)))
    store.add_fp(ctx)
    return store, fp


def _write(store, cell, preds):
    for seed, p in enumerate(preds):
        cfg = cell.trial_config()
        cfg = type(cfg)(**{**vars(cfg), "seed": seed})
        per_class = {n: 100 * float((p[LABELS == k] == k).mean()) for k, n in enumerate(NAMES)}
        store.add_trial({"key": row_key(cfg, "w", "d"), "config_key": cfg.key(), "config": json.dumps(cfg.to_dict()),
                         **config_columns(cfg), "avg": float(np.mean(list(per_class.values()))),
                         "worst_class": min(per_class, key=per_class.get), "worst_acc": min(per_class.values()),
                         "per_class": json.dumps(per_class), "calib_counts": "{}", "noise_images": 0,
                         "preds": pack_preds(torch.from_numpy(p)), "calib_s": 1.0, "eval_s": 1.0,
                         "version": "test", "data_fp": "d", "weights_fp": "w", "created": 0.0})


def test_verdicts_command_reads_a_store(tmp_path, capsys):
    from ptqlib.app.cli import main

    rng = np.random.default_rng(0)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy")
    loss = np.where(LABELS == 3, 0.3, 0.05)
    _write(store, cell, _trials(rng, fp, lambda t: loss, trials=8))
    _write(store, level_cell(cell, "w_bits", 8), _trials(rng, fp, lambda t: np.full(len(LABELS), 0.01), trials=8))
    assert main(["verdicts", "--model", "resnet20", "--data", "toy", "--store", str(store.path), "--json",
                 "--chance-draws", "50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"claim", "part", "verdict", "estimate", "ci", "chance", "trials"} <= set(rows[0])
    assert {r["verdict"] for r in rows} <= set(V.VERDICTS)
    by_part = {r["part"]: r for r in rows}
    first = by_part["1a largest class drop vs chance"]
    assert first["verdict"] == V.SUPPORTED and first["trials"] == 8 and len(first["chance"]) == 2
    assert by_part["4 brecq: average gain over grid search"]["verdict"] == V.NOT_ENOUGH
    assert by_part["2 noise: the average moves < 1 point"]["chance"] is None
    assert main(["verdicts", "--model", "resnet20", "--data", "toy", "--store", str(store.path),
                 "--chance-draws", "50"]) == 0
    text = capsys.readouterr().out
    assert "claim 1: " in text and "  supported       1a largest class drop vs chance: " in text
    assert "(p = " in text and " trials" in text  # each part as the pages describe it


def test_verdicts_command_rejects_bad_input(tmp_path, capsys):
    from ptqlib.app.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["verdicts", "--model", "resnet20", "--data", "toy", "--store", str(tmp_path / "x.sqlite"),
              "--trials", "0"])
    assert exc.value.code == 2 and "--trials" in capsys.readouterr().err
    assert main(["verdicts", "--model", "nosuch", "--data", "toy", "--store", str(tmp_path / "x.sqlite")]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["verdicts", "--model", "resnet20", "--data", "toy", "--store", str(tmp_path / "x.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- what the book shows -------------------------------------------------------------------------

def test_class_bands_put_a_planted_class_outside_and_random_ones_inside():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    fragile = _fragile(rng)
    loss = np.where(LABELS == 3, 0.3, fragile)
    bands = V.class_bands(_data({4: _trials(rng, fp, lambda t: loss)}, fp))
    # the pseudo-classes share class 3's losses, so the other classes sit at or below the band
    above = bands["mean_drop"] > bands["drop_high"]
    assert list(bands.loc[above, "class"]) == ["c3"]
    assert bands["trials"].eq(TRIALS).all() and (bands["drop_low"] < bands["drop_high"]).all()


def test_the_count_of_classes_outside_their_band_is_tested_against_the_same_count_on_random_groups():
    from ptqlib.analysis.stats import outside_band

    rng = np.random.default_rng(1)
    fp = _fp(rng)
    fragile = _fragile(rng)
    planted = np.where(np.isin(LABELS, [1, 3, 5]), 0.3, fragile)  # three classes hit hard
    data = _data({4: _trials(rng, fp, lambda t: planted), 8: _trials(rng, fp, lambda t: fragile)}, fp, draws=200)
    got = V.band_count_test([data])
    bands = V.class_bands(data)
    assert got["outside"] == int(outside_band(bands["mean_drop"], bands["drop_low"], bands["drop_high"]).sum())
    assert got["of"] == 20 and got["draws"] == 200 and got["outside"] >= 3
    assert got["p"] < 0.05 and got["chance"] < got["outside"]
    assert V.band_count_test([data], "std")["of"] == 20
    line = V.band_test_line([data], what="classes")
    assert line.startswith(f"{got['outside']} of 20 classes outside their band; random groups of images put ")
    # two data sets (e.g. two models): counts and the null add up split by split
    both = V.band_count_test([data, data])
    assert (both["outside"], both["of"]) == (2 * got["outside"], 40) and both["chance"] == pytest.approx(2 * got["chance"])
    # errors blind to class: the count is what random groups give, at most about 5 % of the time beyond it
    blind = [V.band_count_test([_data({0: _trials(np.random.default_rng(10 + i), fp, lambda t: fragile, trials=8)},
                                      fp, draws=100)])["p"] for i in range(100)]
    assert np.mean(np.array(blind) < 0.05) <= 0.09
    other = V.ClassData(LevelPredictions({0: _trials(rng, fp, lambda t: fragile)}, {0: np.arange(TRIALS)}, LABELS, fp,
                                         NAMES), chance_draws=200, seed=1)
    with pytest.raises(ValueError, match="same test labels and seed"):
        V.band_count_test([data, other])
    with pytest.raises(ValueError, match="'mean_drop' or 'std'"):
        V.band_count_test([data], "drop")
    assert V.band_test_line([], what="classes") == "no classes: no level with two trials or more"

def test_an_undefined_estimate_is_described_as_such():
    part = V.Part("3", "3 W8A8 largest class drop vs the average's", V.INCONCLUSIVE, np.nan, (np.nan, np.nan), None,
                  50, 2.0, ">", "x", detail="the statistic is undefined (a ratio to no drop)")
    assert V.describe(part) == ("3 W8A8 largest class drop vs the average's: undefined, 50 trials; "
                                "the statistic is undefined (a ratio to no drop)")
    assert V.verdict_lines([part], indent="  ") == ["  - inconclusive: " + V.describe(part)]


def test_findings_quote_each_claim_with_its_verdict_and_numbers():
    rng = np.random.default_rng(0)
    fp = _fp(rng)
    data = _data({0: _trials(rng, fp, lambda t: np.where(LABELS == 3, 0.3, 0.03))}, fp)
    parts = V.drop_parts("1", "1a", data, 0) + V.variability_parts("1", "1b", data, 0)
    text = V.findings(parts, "a toy model")
    assert V.CLAIMS["1"] in text and V.CLAIMS["4"] in text
    verdict = V.claim_verdicts(parts)["1"]
    assert f"On a toy model: **{verdict}**" in text and "95 % interval" in text and "chance" in text
    assert "not enough data" in text  # claim 4 has no parts here
    only = V.findings(parts, "a toy model", claims=("1",))
    assert only.startswith("**Claim 1.**") and V.CLAIMS["4"] not in only and "1a largest class drop" in only
    assert V.findings(parts, "a toy model", claims="1") == only  # one claim by its name
    with pytest.raises(ValueError, match=r"unknown claims \['12'\]"):
        V.findings(parts, "a toy model", claims="12")
    assert V.paired_trials(parts, ("brecq",)) == "brecq 0"  # no claim-4 part: no trial
    line = V.headline(parts).splitlines()[0]
    assert line.startswith("- **Claim 1**") and "1a largest class drop vs chance" in line


def test_side_by_side_and_its_matrix(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from ptqlib.analysis.plotting import verdict_matrix

    rng = np.random.default_rng(0)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy")
    _write(store, cell, _trials(rng, fp, lambda t: np.where(LABELS == 3, 0.3, 0.05), trials=6))
    design = V.design_for("resnet20", "toy")
    table = V.side_by_side(store, {"toy": design, "other": replace(design, cell=replace(cell, model="resnet32"))},
                           chance_draws=30)
    verdicts = table.xs("verdict", axis=1, level=1)
    assert verdicts.loc[("1", "1a largest class drop vs chance"), "toy"] == V.SUPPORTED
    assert verdicts["other"].eq(V.NOT_ENOUGH).all()
    assert table.loc[("1", "1a largest class drop vs chance"), ("toy", "trials")] == 6
    assert str(table[("toy", "trials")].dtype) == "Int64" and "random groups pass" in table["toy"].columns
    assert table[("toy", "interval")].str.startswith("[").any()
    ax = verdict_matrix(table)
    assert len(ax.get_yticklabels()) == len(table)
    assert "(6)" in [t.get_text() for t in ax.texts][0]  # each estimate with the trials it rests on


def test_the_matrix_says_why_an_inconclusive_part_has_no_estimate():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd

    from ptqlib.analysis.plotting import verdict_matrix

    index = pd.MultiIndex.from_tuples([("3", "3 W8A8 largest class drop vs the average's"), ("1", "1a x")])
    table = pd.concat({"m": pd.DataFrame({"verdict": [V.INCONCLUSIVE, V.NOT_ENOUGH], "estimate": [np.nan, np.nan]},
                                         index=index)}, axis=1)
    texts = [t.get_text() for t in verdict_matrix(table).texts]
    assert texts == ["undefined"]  # the part without enough data stays blank
    marked = pd.concat({"m": pd.DataFrame({"verdict": [V.SUPPORTED, V.SUPPORTED], "estimate": [2.9, 3.1],
                                           "random groups pass": ["yes", ""], "trials": [50, 7]}, index=index)}, axis=1)
    ax = verdict_matrix(marked)
    assert [t.get_text() for t in ax.texts] == ["2.90\u2020 (50)", "3.10 (7)"]
    assert "\u2020 random groups pass it too" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_iteration_curve_pairs_each_count_with_the_largest_and_the_converged_count(tmp_path):
    import pandas as pd

    from ptqlib.analysis.aggregate import converged_iters
    from ptqlib.analysis.cells import iteration_curve

    rng = np.random.default_rng(0)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024, variant="reference")
    for iters, trials in ((500, 4), (2000, 3)):  # seed 3 exists only at 500 iterations
        _write(store, replace(cell, optimizer="brecq", iters=iters),
               _trials(rng, fp, lambda t: np.full(len(LABELS), 0.1 if iters == 500 else 0.05), trials=trials))
    curve = iteration_curve(store, cell, ["brecq", "qdrop"], [500, 2000], trials=50)
    assert list(curve["iters"]) == [500, 2000] and list(curve["trials"]) == [4, 3]  # every seed of each count
    assert curve["shared"].iloc[0] == 3 and np.isnan(curve["shared"].iloc[1])  # against the largest: shared seeds
    assert curve["avg_mean"].iloc[1] > curve["avg_mean"].iloc[0]
    assert curve["worst_diff"].iloc[0] < 0 and curve["diff_low"].iloc[0] <= curve["worst_diff"].iloc[0]
    assert np.isnan(curve["diff_low"].iloc[1])  # the largest count against itself
    assert curve["paired_sd"].iloc[0] >= 0 and curve["seeds_needed"].iloc[0] >= 2  # or inf: beyond the tolerance
    assert curve["diff_df"].iloc[0] > 2  # 3 pairs and a seed alone: more than the paired test's 2
    joint = iteration_curve(store, replace(cell, variant="joint"), ["brecq"], [500, 2000], trials=50)
    assert joint.empty  # the variant is part of the selection
    # a count with fewer than min_reference_trials trials is shown but is not the yardstick
    _write(store, replace(cell, optimizer="brecq", iters=5000),
           _trials(rng, fp, lambda t: np.full(len(LABELS), 0.05), trials=1))
    curve = iteration_curve(store, cell, ["brecq"], [500, 2000, 5000], trials=50)
    assert list(curve["reference"]) == [2000] * 3 and list(curve["trials"]) == [4, 3, 1]
    assert curve["shared"].iloc[0] == 3 and np.isnan(curve["diff_low"].iloc[2])  # one trial: no interval
    assert converged_iters(curve.assign(diff_low=[-0.1, np.nan, -0.1], diff_high=[0.1, np.nan, 0.1]))["brecq"] == 500
    curve = iteration_curve(store, cell, ["brecq"], [500, 2000, 5000], trials=50, min_reference_trials=1)
    assert list(curve["reference"]) == [5000] * 3
    nan = np.nan
    hand = pd.DataFrame({"method": ["a"] * 4 + ["b"] + ["c"] * 2, "iters": [500, 2000, 5000, 20000, 500, 2000, 5000],
                         "diff_low": [-3.6, -0.6, -0.2, nan, nan, -1.0, nan],
                         "diff_high": [-2.5, -0.1, 0.1, nan, nan, 0.9, nan]})
    got = converged_iters(hand)  # a: 5000's interval lies within 0.3 points of 20000's worst class
    assert got["a"] == 5000 and np.isnan(got["b"])
    assert np.isnan(got["c"])  # a mean change near 0 with a wide interval is not convergence
    assert converged_iters(hand, tolerance=0.7)["a"] == 2000


def test_iteration_curves_stack_a_pages_curves_and_choose_counts_on_the_named_ones(tmp_path):
    import pandas as pd

    from ptqlib.analysis.aggregate import chosen_iters, count_choices, gap_lines
    from ptqlib.analysis.cells import curve_cell, iteration_curve, iteration_curves, reference_curves

    rng = np.random.default_rng(0)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024)
    series = {"ref": {"variant": "reference"}, "ref current": {"variant": "reference", "fp_weights": "current"},
              "joint": {"variant": "joint", "methods": ["qdrop"]}}
    assert curve_cell(cell, series["ref current"]) == replace(cell, variant="reference", fp_weights="current")
    assert reference_curves(cell, series) == ["ref", "ref current"]
    assert reference_curves(replace(cell, variant="reference"), {"a": {}, "b": {"variant": "joint"}}) == ["a"]
    empty = iteration_curves(store, cell, series, ["brecq"], [500, 2000], 10)  # nothing stored yet
    assert empty.empty and "worst_diff" in empty.columns and "variant" in empty.columns
    for iters in (500, 2000):
        for method in ("brecq", "qdrop"):
            _write(store, replace(cell, optimizer=method, iters=iters, variant="reference"),
                   _trials(rng, fp, lambda t: np.full(len(LABELS), 0.1 if iters == 500 else 0.05), trials=4))
    curves = iteration_curves(store, cell, series, ["brecq"], [500, 2000], 10)
    assert list(curves["variant"].unique()) == ["ref"]  # "ref current" and "joint" have no trials
    pd.testing.assert_frame_equal(curves.drop(columns="variant"),
                                  iteration_curve(store, curve_cell(cell, series["ref"]), ["brecq"], [500, 2000], 10))
    choices = count_choices(curves, ["ref"], 2000, 1.0, 4, [500, 2000], 0.05)
    assert list(choices.index) == [("ref", "brecq")] and list(choices.columns) == ["chosen", "why"]
    assert choices.loc[("ref", "brecq"), "why"] == chosen_iters(curves, 2000, 1.0, 4, [500, 2000], 0.05).loc[
        "brecq", "why"]
    assert count_choices(curves, ["joint"], 2000, 1.0, 4, [500, 2000], 0.05).empty
    assert count_choices(pd.DataFrame(), ["ref"], 2000, 1.0, 4, [500, 2000], 0.05).empty
    (line,) = gap_lines(curves, "ref", 500)
    r = curves.iloc[0]
    assert line.startswith(f"ref curve, brecq: worst class at 500 minus at 2000 iterations {r.worst_diff:+.2f} "
                           f"[{r.diff_low:+.2f}, {r.diff_high:+.2f}] points (95 %")
    assert gap_lines(curves, "joint", 500) == [] and gap_lines(pd.DataFrame(), "ref", 500) == []


def test_curve_reversals_compare_every_pair_of_a_curves_counts_and_say_which_change_is_beyond_chance(tmp_path):
    import pandas as pd

    from ptqlib.analysis.aggregate import reversal_lines
    from ptqlib.analysis.cells import curve_reversals, factor_frame
    from ptqlib.analysis.stats import count_reversals

    rng = np.random.default_rng(0)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024)
    series = {"ref": {"variant": "reference"}, "joint": {"variant": "joint", "methods": ["qdrop"]}}
    empty = curve_reversals(store, cell, series, ["brecq"], [500, 2000], 10)
    assert empty.empty and {"variant", "method", "p_holm"} <= set(empty.columns) and reversal_lines(empty) == []
    for iters, error in ((500, 0.1), (2000, 0.6), (5000, 0.1)):  # 2000 iterations: a dip
        _write(store, replace(cell, optimizer="brecq", iters=iters, variant="reference"),
               _trials(rng, fp, lambda t: np.full(len(LABELS), error), trials=6))
    _write(store, replace(cell, optimizer="qdrop", iters=500, variant="joint"),
           _trials(rng, fp, lambda t: np.full(len(LABELS), 0.1), trials=1))
    got = curve_reversals(store, cell, series, ["brecq"], [500, 2000, 5000], 4)
    assert list(got[["variant", "method"]].drop_duplicates().itertuples(index=False, name=None)) == [
        ("ref", "brecq")]  # the joint qdrop curve has one count
    frame = factor_frame(store, replace(cell, optimizer="brecq", variant="reference"), "iters", [500, 2000, 5000], 4)
    worst = frame[frame["class"] != "Average"].groupby(["iters", "seed"])["acc"].min().unstack("iters")
    assert len(worst) == 4  # the first four seeds of each count
    pd.testing.assert_frame_equal(got.drop(columns=["variant", "method"]), count_reversals(worst))
    (line,) = reversal_lines(got)
    fall = got[(got["lower"] == 500) & (got["higher"] == 2000)].iloc[0]
    assert line.startswith("ref brecq, 3 pairs of counts") and fall.p_holm < 0.05
    assert f"worse with more iterations: 500 -> 2000 {fall['diff']:+.2f}" in line
    assert "better with more iterations: 2000 -> 5000" in line
    calm = got.assign(p_holm=got["p_holm"] + 0.5)
    assert reversal_lines(calm)[0].endswith(f"no change beyond chance either way (smallest Holm-adjusted p = "
                                            f"{calm['p_holm'].min():.3f})")
    assert reversal_lines(got.assign(p_holm=np.nan)) == [
        "ref brecq: no pair of counts with a test (two trials each, and some spread)"]
    # the adjustment runs over every pair of every curve: a second curve makes the family larger
    _write(store, replace(cell, optimizer="qdrop", iters=500, variant="reference"),
           _trials(rng, fp, lambda t: np.full(len(LABELS), 0.1), trials=6))
    _write(store, replace(cell, optimizer="qdrop", iters=2000, variant="reference"),
           _trials(rng, fp, lambda t: np.full(len(LABELS), 0.1), trials=6))
    two = curve_reversals(store, cell, series, ["brecq", "qdrop"], [500, 2000, 5000], 4)
    assert len(two) == 4 and list(two["p_holm"]) == pytest.approx(list(holm(two["p"].to_numpy())))
    assert "Holm over the 4 pairs of all curves" in reversal_lines(two)[0]

def test_level_labels():
    from ptqlib.analysis.cells import level_label

    assert level_label("bias_class", None) == level_label("bias_class", float("nan")) == "balanced"
    assert level_label("bias_class", "n01440764") == "tench" and level_label("noise", 0.1) == "0.1"


def test_paired_effects_measure_one_setting_at_a_time_and_list_what_is_missing(tmp_path):
    from ptqlib.analysis.cells import paired_effects

    rng = np.random.default_rng(3)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024, iters=500, variant="reference")
    for metric, loss in (("mse", 0.2), ("lp2.4", 0.05)):  # the second setting loses far fewer images
        _write(store, replace(cell, optimizer="brecq", weight_metric=metric),
               _trials(rng, fp, lambda t: np.full(len(LABELS), loss), trials=6))
    _write(store, replace(cell, optimizer="qdrop"), _trials(rng, fp, lambda t: np.full(len(LABELS), 0.1), trials=6))
    table, missing = paired_effects(store, cell, {"weights": ["weight_metric", "mse", "lp2.4", ["brecq", "qdrop"]]},
                                    trials=50)
    assert missing == ["weights (qdrop)"]
    worst = table.loc[("weights (lp2.4 - mse)", "brecq", "worst class")]
    assert worst["pairs"] == 6 and worst["b - a"] > 5 and worst["ci_low"] > 0 and worst["b"] > worst["a"]
    empty, missing = paired_effects(store, replace(cell, model="resnet32"), {"w": ["weight_metric", "mse", "lp2.4",
                                                                                   ["brecq"]]}, trials=50)
    assert empty.empty and missing == ["w (brecq)"]
    _, missing = paired_effects(store, cell, {"weights": ["weight_metric", "mse", "lp2.4", ["brecq"]]}, trials=2)
    assert missing == ["weights (brecq: 2 shared seeds)"]  # too few for an interval


def test_chosen_iters_tests_counts_from_the_top_down_on_a_fixed_number_of_trials():
    import pandas as pd
    from scipy import stats

    from ptqlib.analysis.aggregate import chosen_iters

    def curve(method, reference, *counts):  # counts: (iters, trials, diff, se, df)
        rows = [dict(method=method, iters=i, trials=n, reference=reference, worst_diff=d, diff_se=se, diff_df=df)
                for i, n, d, se, df in counts]
        return pd.DataFrame(rows)

    nan = np.nan
    target = (20000, 10, nan, nan, nan)
    close, far = (0.0, 0.2, 18), (-2.0, 0.3, 18)
    hand = pd.concat([
        curve("a", 20000, (500, 10, *far), (2000, 10, *close), (5000, 10, *close), target),  # stops at 500
        curve("b", 20000, (500, 10, *close), (2000, 10, 1.5, 0.3, 18), (5000, 10, *close), target),
        curve("c", 5000, (500, 10, *close), (5000, 10, nan, nan, nan)),  # nothing at 20000
        curve("d", 20000, (500, 10, *close), (5000, 3, *close), target),  # 5000 waits for trials
        curve("e", 20000, (500, 10, *close), (20000, 9, nan, nan, nan)),
        curve("f", 20000, (500, 10, 0.2, 0.4, 10), target),  # within 1 at 5 %, not at 2.5 %
        curve("h", 40000, (500, 10, *close), target, (40000, 10, nan, nan, nan))], ignore_index=True)
    assert 0.2 + stats.t.ppf(0.95, 10) * 0.4 < 1.0 < 0.2 + stats.t.ppf(0.975, 10) * 0.4  # what f rests on
    got = chosen_iters(hand)
    # a: 5000 and 2000 pass, 500 falls short by 2 points and ends the sequence
    assert got.loc["a", "chosen"] == 2000
    assert got.loc["a", "why"].startswith("2000: shown within 1.0 points of 20000: 5000: +0.00 [-0.35, +0.35] (90 %), "
                                          "within 0.35; 2000: +0.00")
    assert got.loc["a", "why"].endswith("not within 1.0")
    # b: 2000 is better than the target by more than the margin: the sequence stops there, 500 is not tested
    assert got.loc["b", "chosen"] == 5000 and "500:" not in got.loc["b", "why"]
    assert np.isnan(got.loc["d", "chosen"]) and got.loc["d", "why"].endswith("5000: 3 of 10 trials, waiting")
    assert got.loc["d", "why"].startswith("no count below 20000 shown within 1.0 points yet")
    assert got.loc["f", "chosen"] == 500  # one test at the full 5 %: the 90 % interval
    assert np.isnan(got.loc["c", "chosen"]) and "20000 iterations: 0 of 10 trials" in got.loc["c", "why"]
    assert np.isnan(got.loc["e", "chosen"]) and "9 of 10 trials" in got.loc["e", "why"]
    assert np.isnan(got.loc["h", "chosen"]) and "reference count is 40000, not 20000" in got.loc["h", "why"]
    assert got["reached"].tolist() == [True, True, False, True, False, True, False]
    assert chosen_iters(hand, margin=3.0).loc["a", "chosen"] == 500
    # 5000's 0.35 is not within 0.3: no smaller count passed, so the method runs at the target itself
    strict = chosen_iters(hand, margin=0.3).loc["a"]
    assert strict["chosen"] == 20000 and strict["why"].startswith("20000: no count below it shown within 0.3 points")
    only_target = hand.assign(iters=hand["iters"].where(hand["method"] != "a", 20000)).drop_duplicates(
        ["method", "iters"])
    assert chosen_iters(only_target, counts=[20000]).loc["a", "chosen"] == 20000  # no smaller count asked for
    # without counts, a curve whose smaller counts have no trials yet waits for them
    assert np.isnan(chosen_iters(only_target).loc["a", "chosen"])
    assert chosen_iters(only_target).loc["a", "why"] == "no count below 20000 in the curve yet"
    # a count of the sequence that the curve lacks makes it wait there: the counts above it stand
    waiting = chosen_iters(hand, counts=[500, 2000, 3000, 5000]).loc["a"]
    assert waiting["chosen"] == 5000 and waiting["why"].endswith("3000: 0 of 10 trials, waiting")
    assert waiting["why"].startswith("5000 so far") and not waiting["final"]
    assert got["final"].tolist() == [True, True, False, False, False, True, False]
    with pytest.raises(ValueError, match="more than 5 trials at a count"):
        chosen_iters(hand, trials=5)
    # ten trials that are not seeds 0-9 (a gap filled later would change the sample): not tested yet
    gap = hand.assign(first_seeds=~((hand["method"] == "a") & (hand["iters"] == 5000)))
    assert np.isnan(chosen_iters(gap).loc["a", "chosen"])
    assert chosen_iters(gap).loc["a", "why"].endswith("5000: its seeds are not 0 to 9, waiting")


def test_chosen_iters_on_a_stored_curve_chooses_the_count_that_matches_and_not_on_too_few_trials(tmp_path):
    from ptqlib.analysis.aggregate import chosen_iters
    from ptqlib.analysis.cells import iteration_curve

    rng = np.random.default_rng(5)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024, variant="reference")
    loss = {500: 0.3, 2000: 0.05, 20000: 0.05}  # 500 iterations lose far more images than 2000 and 20000
    for iters in loss:
        _write(store, replace(cell, optimizer="qdrop", iters=iters),
               _trials(rng, fp, lambda t: np.full(len(LABELS), loss[iters]), trials=8))
    curve = iteration_curve(store, cell, ["qdrop"], [500, 2000, 20000], trials=8)
    first = curve.iloc[0]
    assert first["worst_diff"] < -10 and first["diff_high"] < 0 and first["equivalent_within"] > 10
    assert first["diff_df"] == 7 and first["shared"] == 8  # every seed shared: the paired test
    assert curve["first_seeds"].all()
    got = chosen_iters(curve, margin=2.0, trials=8).loc["qdrop"]
    assert got["chosen"] == 2000 and got["reached"]
    # the same comparison on three trials is too wide for the same margin
    few = iteration_curve(store, cell, ["qdrop"], [500, 2000, 20000], trials=3)
    assert few.iloc[1]["equivalent_within"] > 2.0
    assert chosen_iters(few, margin=2.0, trials=3).loc["qdrop", "chosen"] == 20000  # 2000 not shown: the target


def test_study_iters_waits_for_every_method_and_every_curve_at_the_target_and_takes_the_largest_count():
    import pandas as pd

    from ptqlib.analysis.aggregate import study_iters

    # a: 5000; b: two curves, the larger count; c: no count; e: one of its two curves at the target
    # qualifies no count; f: 2000 so far and g: 5000 so far, a smaller count waits for trials;
    # h: 500 on one curve, its second curve short of the target (it may still ask for the target)
    choices = pd.DataFrame({"method": ["a", "b", "b", "c", "e", "e", "f", "g", "h", "h"],
                            "chosen": [5000.0, 500.0, 2000.0, np.nan, 500.0, np.nan, 2000.0, 5000.0, 500.0, np.nan],
                            "reached": [True, True, True, True, True, True, True, True, True, False],
                            "final": [True, True, True, False, True, True, False, False, True, False]}).set_index("method")
    count, line = study_iters(choices, ["a", "b", "c"], 20000)
    assert np.isnan(count) and "no qualifying count for c" in line and "a 5000" in line and "b 2000" in line
    count, line = study_iters(choices, ["a", "b"], 20000)
    assert count == 5000 and "5000 iterations per unit" in line
    assert study_iters(choices, ["b"], 20000)[0] == 2000  # not 500: its other curve needs 2000
    count, line = study_iters(choices, ["b", "e"], 20000)
    assert np.isnan(count) and "for e" in line
    count, line = study_iters(choices, ["a", "d"], 20000)  # a method without any curve is pending too
    assert np.isnan(count) and "for d" in line
    count, line = study_iters(choices, ["f"], 20000)  # not decided while its sequence waits
    assert np.isnan(count) and "no qualifying count for f" in line
    # f ends at 2000 or below and a has 5000: the largest is 5000 whatever f's smaller counts give
    count, line = study_iters(choices, ["a", "f"], 20000)
    assert count == 5000 and line.endswith("(per method: a 5000; f at most 2000, its smaller counts cannot change the count)")
    assert study_iters(choices, ["b", "f"], 20000)[0] == 2000  # at most 2000 against 2000: decided
    assert np.isnan(study_iters(choices, ["b", "g"], 20000)[0])  # g may end at 5000, above b's 2000
    # a method with no count at all (c: 20000 may still be its count) is bounded only by the target
    assert np.isnan(study_iters(choices, ["a", "c"], 20000)[0])
    assert np.isnan(study_iters(choices, ["a", "h"], 20000)[0])  # h's second curve may still need 20000
    top = pd.DataFrame({"method": ["q"], "chosen": [20000.0], "reached": [True], "final": [True]}).set_index("method")
    assert study_iters(pd.concat([choices, top]), ["q", "c", "d"], 20000)[0] == 20000  # nothing can exceed it


def test_curve_lines_name_the_converged_count_and_the_counts_that_differ():
    import pandas as pd

    from ptqlib.analysis.aggregate import curve_lines
    from ptqlib.analysis.stats import seeds_for_equivalence

    nan = np.nan
    curve = pd.DataFrame({"variant": ["v"] * 3 + ["w"], "method": ["m"] * 3 + ["m"],
                          "iters": [500, 2000, 5000, 500], "trials": [10, 10, 10, 4], "reference": [5000] * 3 + [500],
                          "worst_diff": [-1.5, 0.05, nan, nan], "diff_low": [-2.0, -0.2, nan, nan],
                          "diff_high": [-1.0, 0.25, nan, nan], "shared": [10, 10, nan, nan],
                          "paired_sd": [0.8, 0.1, nan, nan], "seeds_needed": [np.inf, 8, nan, nan]})
    v, w = curve_lines(curve, tolerance=0.3)
    assert v.startswith("v m: worst class against 5000 iterations: 500: -1.50 [-2.00, -1.00] (10 against 10 trials")
    assert "-> converged at 2000" in v and v.endswith("differs from 5000 (interval clear of 0, one uncorrected test each; the pairs of counts below are "
                                                   "corrected for all) at 500 (-1.50)")
    assert w == "w m: a single count (500): no convergence to read"
    assert "-> no smaller count shown within 0.1 points" in curve_lines(curve, tolerance=0.1)[0]
    assert "500: -1.50 [-2.00, -1.00] (10 against 10 trials, 10 shared; its estimated change alone is beyond 0.3" in v
    assert "2000: +0.05 [-0.20, +0.25] (10 against 10 trials, 10 shared)" in v  # within: nothing to add
    narrow = curve_lines(curve, tolerance=0.1)[0]  # 2000 is not within 0.1: the seeds it would take at 0.1
    seeds = seeds_for_equivalence(0.05, 0.1, 0.1)
    assert seeds > 8 and f"2000: +0.05 [-0.20, +0.25] (10 against 10 trials, 10 shared; ~{seeds:.0f} seeds run" in narrow


def test_on_fixed_sample_needs_the_trials_and_seeds_zero_up():
    import pandas as pd

    from ptqlib.analysis.aggregate import on_fixed_sample

    curve = pd.DataFrame({"trials": [10, 10, 9], "first_seeds": [True, False, True]})
    assert on_fixed_sample(curve, 10).tolist() == [True, False, False]
    assert on_fixed_sample(curve.drop(columns="first_seeds"), 10).tolist() == [True, True, False]


def test_decision_backlog_walks_the_sequence_as_the_decision_does():
    import pandas as pd

    from ptqlib.analysis.aggregate import backlog_lines, decision_backlog

    def row(method, iters, trials, minutes, diff=np.nan, se=np.nan, first=True):
        return dict(method=method, iters=iters, trials=trials, first_seeds=first, minutes=minutes,
                    worst_diff=diff, diff_se=se, diff_df=18)

    curve = pd.DataFrame([
        # a: the target and 5000 lack trials: 5000 is tested whatever happens, 2000 only if 5000 passes
        row("a", 500, 10, 2.0, 0.0, 0.2), row("a", 5000, 7, 15.0), row("a", 20000, 7, 60.0),
        # b: 5000 is ready and fails (2 points off): the decision is made, nothing is needed
        row("b", 500, 3, 2.0), row("b", 5000, 10, 15.0, 2.0, 0.2), row("b", 20000, 10, 60.0),
        # c: 5000 passes, 2000 lacks trials and has a gap in its seeds: an upper bound, needed
        row("c", 2000, 10, 4.0, first=False), row("c", 5000, 10, 15.0, 0.0, 0.2), row("c", 20000, 10, 60.0),
        # d: everything in, 5000 and 2000 and 500 pass
        *[row("d", i, 10, 1.0, 0.0, 0.2) for i in (500, 2000, 5000)], row("d", 20000, 10, 60.0)])
    counts = [500, 2000, 5000, 20000]
    # each method alone first: how its own sequence is walked
    got = pd.concat([decision_backlog(curve[curve["method"] == m], counts, 20000, 10, 1.0) for m in "abcd"])
    a = got[got["method"] == "a"].set_index("iters")
    assert a["missing"].to_dict() == {20000: 3, 5000: 3, 2000: 10}  # 500 is complete
    assert a["needed"].to_dict() == {20000: True, 5000: True, 2000: False}
    assert a.loc[20000, "hours"] == 3.0 and a.loc[5000, "hours"] == 0.75 and np.isnan(a.loc[2000, "hours"])
    assert (got["method"] == "b").sum() == 0  # 5000 failed: 2000 and 500 are not needed
    c = got[got["method"] == "c"].set_index("iters")
    assert c.loc[2000, "missing"] == 10 and not c.loc[2000, "exact"] and c.loc[2000, "needed"]
    assert c.loc[500, "missing"] == 10 and not c.loc[500, "needed"]
    lines = backlog_lines(got, ["a", "b", "c", "d"])
    assert lines[0] == ("a: the decision waits for 3 at 20000 (about 3.0 h), 3 at 5000 (about 0.8 h); then, if the "
                        "counts above pass, 10 at 2000; about 3.8 hours of calibration at the stored median times "
                        "(one trial at a time) (counts without a timed trial not counted)")
    assert lines[1] == "b: no trial left that the study-wide count needs" and lines[3].startswith("d: no trial left")
    assert lines[2].startswith("c: the decision waits for up to 10 at 2000 (about 0.7 h); then, if the counts above "
                               "pass, 10 at 500")
    with pytest.raises(ValueError, match="more than 5 trials at a count"):
        decision_backlog(curve, counts, 20000, 5)
    # together: b has decided on 20000, the largest count there is, so no other trial can change the study's
    assert decision_backlog(curve, counts, 20000, 10, 1.0).empty
    # unless b is not one of the study's methods: only the methods asked for set the floor
    assert set(decision_backlog(curve, counts, 20000, 10, 1.0, methods=["a", "c"])["method"]) == {"a", "c"}
    # a method without any trial lacks every count
    assert decision_backlog(curve, counts, 20000, 10, 1.0, methods=["a", "z"]).query("method == 'z'")["iters"].tolist() == [
        20000, 5000, 2000, 500]
    with pytest.raises(ValueError, match=r"counts above the target 5000 \(\[20000\]\)"):
        decision_backlog(curve, [500, 2000, 5000], 5000, 10, 1.0)  # the curve has 20000
    with pytest.raises(ValueError, match=r"counts above the target 20000 \(\[40000\]\)"):
        decision_backlog(pd.DataFrame(), [500, 40000], 20000)  # asked for, nothing stored yet
    # e decides on 5000 (2000 fails): a still needs 20000 and 5000 (failing there leaves it at 20000), not
    # 2000 (it ends at 5000 or below whatever 2000 gives); c ends at 5000 or below: it needs nothing
    e = pd.DataFrame([row("e", 20000, 10, 60.0), row("e", 5000, 10, 15.0, 0.0, 0.2), row("e", 2000, 10, 4.0, 2.0, 0.2)])
    floored = decision_backlog(pd.concat([curve[curve["method"].isin(["a", "c"])], e]), counts, 20000, 10, 1.0)
    assert floored[["method", "iters"]].values.tolist() == [["a", 20000], ["a", 5000]]


def test_the_backlog_is_empty_exactly_when_the_decision_is_made_for_a_method_and_for_a_study():
    import pandas as pd

    from ptqlib.analysis.aggregate import chosen_iters, decision_backlog, study_iters

    rng = np.random.default_rng(11)
    counts = [500, 2000, 5000, 20000]
    rows = []
    for m in range(150):  # random curves: counts missing, short of trials, with gaps, passing or failing
        for iters in counts:
            if iters != 20000 and rng.random() < 0.15:
                continue
            trials = int(rng.choice([10, 10, 10, 7]))
            rows.append(dict(method=f"m{m}", iters=iters, trials=trials, reference=20000,
                             first_seeds=bool(rng.random() > 0.1), minutes=1.0,
                             worst_diff=float(rng.choice([0.0, 0.5, 2.0])), diff_se=0.2, diff_df=18))
    curve = pd.DataFrame(rows)
    chosen = chosen_iters(curve, counts=counts)
    backlog = pd.concat([decision_backlog(curve[curve["method"] == m], counts) for m in chosen.index])
    made = chosen["chosen"].notna() & chosen["final"]
    waiting = set(backlog["method"])
    assert made.any() and (~made).any()
    assert set(chosen.index[~made]) == waiting  # the decision waits exactly where trials are still needed
    needed = backlog[backlog["needed"]].groupby("method")["iters"].max()
    for method, why in chosen.loc[~made, "why"].items():  # and the largest count it needs is the one it names
        assert why.startswith(f"{needed[method]} iterations") or f"{needed[method]}: " in why
    # a study of a few methods at a time: its backlog is empty exactly when its count is decided
    decided = 0
    for first in range(0, 150, 3):
        methods = [f"m{i}" for i in range(first, first + 3)]
        part = curve[curve["method"].isin(methods)]
        count, _ = study_iters(chosen_iters(part, counts=counts), methods, 20000)
        assert (count == count) == decision_backlog(part, counts).empty, methods
        if first % 30 == 0:  # the same study read from the whole curve: the other methods' trials change nothing
            assert (count == count) == decision_backlog(curve, counts, methods=tuple(methods)).empty, methods
        decided += count == count
    assert 0 < decided < 50


def test_study_count_decides_on_the_stored_curve_and_rerun_seeds_keep_to_the_budget(tmp_path):
    import pandas as pd

    from ptqlib.analysis.cells import rerun_seeds, study_count

    rng = np.random.default_rng(5)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024, variant="reference")
    loss = {500: 0.3, 2000: 0.05, 20000: 0.05}
    for iters in loss:
        _write(store, replace(cell, optimizer="qdrop", iters=iters),
               _trials(rng, fp, lambda t: np.full(len(LABELS), loss[iters]), trials=8))
    count, line, curve = study_count(store, cell, ["qdrop"], [500, 2000, 20000], 8, 20000, 2.0, 0.05)
    assert count == 2000 and line.startswith("study-wide count: 2000") and set(curve["iters"]) == {500, 2000, 20000}
    count, line, _ = study_count(store, cell, ["qdrop", "brecq"], [500, 2000, 20000], 8, 20000, 2.0, 0.05)
    assert np.isnan(count) and "no qualifying count for brecq" in line  # a method without trials waits
    assert np.isnan(study_count(store, replace(cell, model="resnet56"), ["qdrop"], [500], 8, 20000, 2.0, 0.05)[0])
    with pytest.raises(ValueError, match=r"counts \[20000\] are above the target count 2000"):
        study_count(store, cell, ["qdrop"], [500, 2000, 20000], 8, 2000, 2.0, 0.05)

    # a has its first 10 seeds at 2000, b none: 40 x 4 + 50 x 8 minutes = 560 minutes still to run
    timed = pd.DataFrame({"method": ["a", "b", "a"], "iters": [2000, 2000, 500], "minutes": [4.0, 8.0, 1.0],
                          "trials": [10, 0, 10]})
    assert rerun_seeds(timed, 2000, ["a", "b"], 50, 20, 9.3) == (
        20, "20 seeds: the trials 50 would still need take about 9.3 hours, more than the budget of 9.3")
    assert rerun_seeds(timed, 2000, ["a", "b"], 50, 20, 9.4) == (
        50, "50 seeds: the trials still to run take about 9.3 hours, within 9.4")
    assert rerun_seeds(timed, 500, ["a", "b"], 50, 20, 10.0)[0] == 20  # b has no timed trial at 500


def test_rerun_designs_and_claim4_trials_are_the_trials_the_claim_reads(tmp_path):
    from ptqlib.analysis.verdicts import claim4_trials, reconstruction_claim, rerun_designs
    from ptqlib.study.settings import trial_config

    rng = np.random.default_rng(9)
    store, fp = _store(tmp_path, rng)
    cell = Cell("resnet20", "toy", calib_size=1024, variant="reference", fp_weights="kept")
    rerun = {"W2A4": {"w_bits": 2}, "deep": {"model": "resnet56"}}
    designs = dict(rerun_designs(cell, ["brecq"], 2000, rerun, 6, 4))
    assert [d.trials for d in designs.values()] == [6, 4, 4] and designs[""].recon_iters == 2000
    assert designs["W2A4"].cell.w_bits == 2 and designs["W2A4"].cell.a_bits == 4
    mine = dict(rerun_designs(replace(cell, weights="mine.pt"), ["brecq"], 2000, rerun, 6, 4))
    assert mine["deep"].cell.weights is None and mine["W2A4"].cell.weights == "mine.pt"  # resnet20's weights stay
    assert {d.cell.fp_weights for d in designs.values()} == {"kept"} and {d.recon_variant for d in designs.values()} == {"reference"}
    trials = claim4_trials(designs[""])
    assert [t["optimizer"] for t in trials[:2]] == ["grid", "brecq"] and len(trials) == 12
    assert {trial_config(**t).recon.iters for t in trials if t["optimizer"] != "grid"} == {2000}
    # write exactly those trials (a seed's predictions for each): the claim reads all six seeds of each
    design = designs[""]
    for optimizer in ("grid", "brecq"):
        level = Cell(**{k: v for k, v in trials[0].items() if k != "seed"}) if optimizer == "grid" else \
            Cell(**{k: v for k, v in trials[1].items() if k != "seed"})
        _write(store, level, _trials(rng, fp, lambda t: np.full(len(LABELS), 0.05), trials=design.trials))
    parts = reconstruction_claim(store, design, chance_draws=50)
    assert parts and {p.trials for p in parts} == {6}


def test_staged_trials_bring_every_design_to_each_stage_before_any_goes_further():
    import pytest

    from ptqlib.analysis.verdicts import claim4_trials, rerun_designs, staged_trials

    cell = Cell("resnet20", "toy", calib_size=1024, variant="reference")
    designs = [d for _, d in rerun_designs(cell, ["brecq"], 2000, {"W2A4": {"w_bits": 2}, "deep": {"model": "resnet56"}}, 8, 6)]
    order = staged_trials(designs, (2, 6))
    assert sorted(map(str, order)) == sorted(str(t) for d in designs for t in claim4_trials(d))  # the same trials
    cells = [(t["model"], t["w_bits"]) for t in order]
    seeds = [t["seed"] for t in order]
    # seeds 0-1 of the three cells (grid and brecq each), then 2-5 of the three, then the first cell's 6-7
    assert cells[:12] == [("resnet20", 4)] * 4 + [("resnet20", 2)] * 4 + [("resnet56", 4)] * 4
    assert seeds[:12] == [0, 0, 1, 1] * 3
    assert set(seeds[12:12 + 3 * 8]) == {2, 3, 4, 5} and seeds[12:20] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert cells[-4:] == [("resnet20", 4)] * 4 and seeds[-4:] == [6, 6, 7, 7]
    assert [t["optimizer"] for t in order[:2]] == ["grid", "brecq"]
    assert staged_trials(designs, ()) == [t for d in designs for t in claim4_trials(d)]  # no stage: design by design
    for bad in ((6, 2), (0, 4), (3, 3)):
        with pytest.raises(ValueError, match="increasing seed counts"):
            staged_trials(designs, bad)


def test_a_verdict_decided_without_some_parts_says_what_it_rests_on():
    def part(name, verdict):
        return V.Part("4", name, verdict, 1.0, (0.5, 1.5), None, 12, 1.0, "<", "points")

    parts = [part("4 brecq: average gain over grid search", V.SUPPORTED),
             part("4 brecq: worst-class gain beyond the average's", V.CONTRADICTED),
             part("4 qdrop: average gain over grid search", V.NOT_ENOUGH),
             part("4 qdrop: worst-class gain beyond the average's", V.NOT_ENOUGH)]
    assert V.claim_verdicts(parts)["4"] == V.CONTRADICTED
    note = " (decided on the parts that have trials; not enough data for 4 qdrop)"
    assert V.scope(parts, V.CONTRADICTED) == note
    assert f"**contradicted**{note}." in V.findings(parts, "a toy model", claims=("4",))
    assert note in V.headline(parts)
    assert V.scope(parts[:2], V.CONTRADICTED) == ""  # every part had trials
    assert V.scope(parts, V.NOT_ENOUGH) == "" and V.scope(parts, V.INCONCLUSIVE) == ""
    widths = [V.Part("3", f"3 W{b}A{b} largest class drop vs chance", v, 1.0, (0.5, 1.5), None, 12, None, ">", "x")
              for b, v in ((4, V.SUPPORTED), (2, V.NOT_ENOUGH))]
    assert V.scope(widths, V.SUPPORTED) == " (decided on the parts that have trials; not enough data for 3 W2A2)"


def test_a_chance_part_is_contradicted_about_half_the_time_without_class_effect_and_not_with_one():
    """What "contradicted" on a chance part is worth: over repeated synthetic studies whose errors
    ignore the class, the permutation p-value is about uniform, so the part is supported about
    5 % of the time and contradicted about half; with a planted class effect (one class lost
    10 % of the time, the others 3 %) it is never contradicted."""
    def verdicts(loss_of, studies=20):
        out = []
        for seed in range(studies):
            rng = np.random.default_rng(100 + seed)
            fp = _fp(rng)
            loss = loss_of(rng)
            data = _data({0: _trials(rng, fp, lambda t: loss, trials=8)}, fp, draws=200)
            out.append(V.drop_parts("1", "1a", data, 0)[1].verdict)
        return out

    blind = verdicts(lambda rng: np.full(len(LABELS), 0.05))
    assert blind.count(V.SUPPORTED) <= 3 and 4 <= blind.count(V.CONTRADICTED) <= 16, blind
    planted = verdicts(lambda rng: np.where(LABELS == 3, 0.10, 0.03))
    assert V.CONTRADICTED not in planted and planted.count(V.SUPPORTED) >= 15, planted


def test_parts_frame_keeps_small_ratios_readable():
    ratio = V.Part("4", "spread", V.CONTRADICTED, 0.05123, (0.04987, 0.05612), None, 5, 0.8, ">", "x")
    gain = V.Part("4", "gain", V.SUPPORTED, 61.9234, (61.771, 62.118), (-0.5, 0.5), 5, 0.0, ">", "points")
    frame = V.parts_frame([ratio, gain])
    assert frame["estimate"].tolist() == ["0.0512", "61.92"]
    assert frame["interval"].tolist() == ["[0.0499, 0.0561]", "[61.77, 62.12]"]
    assert frame["chance band"].tolist() == ["", "[-0.50, 0.50]"]
    assert frame["detail"].tolist() == ["", ""] and frame.columns[-1] == "detail"
    wide = V.Part("4", "worse", V.SUPPORTED, -2.3, (-3.66, -0.7), (57.6, 60.68), 5, 0.0, "<", "points")
    assert V.parts_frame([wide])["chance band"].tolist() == ["[57.60, 60.68]"]  # two decimals at 1 and above
    assert V.parts_frame([wide])["interval"].tolist() == ["[-3.66, -0.70]"]
    # one part's numbers share their decimals: three significant figures of the largest
    mixed = V.Part("4", "spread", V.INCONCLUSIVE, 0.0536, (0.027, 0.11), None, 5, 0.8, ">", "x")
    assert V.parts_frame([mixed])[["estimate", "interval"]].values.tolist() == [["0.054", "[0.027, 0.110]"]]
    tiny = V.Part("4", "spread", V.INCONCLUSIVE, 0.0000412, (0.0000105, 0.0000733), None, 5, 0.8, ">", "x")
    assert V.parts_frame([tiny])["interval"].tolist() == ["[0.0000105, 0.0000733]"]  # no exponent
    near_zero = V.Part("3", "drop", V.INCONCLUSIVE, -0.0004, (-0.3, float("nan")), (-0.5, 0.5), 5, 0.0, ">", "points")
    row = V.parts_frame([near_zero]).iloc[0]
    assert (row["estimate"], row["interval"], row["chance band"]) == ("0.000", "", "[-0.500, 0.500]")  # no "-0.000"
