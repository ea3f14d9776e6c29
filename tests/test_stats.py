"""Worst-case statistics, churn and ECE against hand-computed answers."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from ptqlib.analysis.aggregate import reliability_summary, worst_class
from ptqlib.metrics import expected_calibration_error
from ptqlib.analysis.stats import (bootstrap_mean_ci, churn, drop_ci, drop_ci_table, exemplars, holm, modal_predictions,
                          paired_test)


def tidy(acc: dict[int, list[float]], fp: float = 90.0, level=None) -> pd.DataFrame:
    """Per-class rows: ``acc[seed]`` is the accuracy of classes a, b, c in that trial."""
    rows = [{"key": f"{level}-{seed}", "seed": seed, "class": cls, "acc": a, "fp_acc": fp, "drop": fp - a,
             "level": level}
            for seed, accs in acc.items() for cls, a in zip("abc", accs)]
    return pd.DataFrame(rows)


def test_worst_case_summary_by_hand():
    frame = tidy({0: [80, 70, 90], 1: [60, 75, 95], 2: [85, 88, 50]})
    out = worst_class(frame, k=2).iloc[0]
    worst = np.array([70, 60, 50])
    assert out["trials"] == 3
    assert out["worst_mean"] == pytest.approx(60) and out["worst_std"] == pytest.approx(10)
    assert out["worst_p5"] == pytest.approx(51)  # numpy's linear interpolation: 50 + 0.1 * (60 - 50)
    assert out["worst2_mean"] == pytest.approx(np.mean([75, 67.5, 67.5]))
    assert out["avg_mean"] == pytest.approx(np.mean([80, 76.6666667, 74.3333333]))
    assert out["worst_min"] == worst.min() == 50 and out["most_often"] in ("a", "b", "c")
    assert worst_class(frame, k=4).iloc[0]["worst3_mean"] == pytest.approx(np.mean([80, 76.6666667, 74.3333333]))
    with pytest.raises(ValueError, match="k must be a positive number of classes, got 0"):
        worst_class(frame, k=0)


def test_bootstrap_ci_known_answers():
    # two values: below 5 trials Student's interval, mean +- t(0.975, 1) * sd / sqrt(2)
    low, high = bootstrap_mean_ci(np.array([0.0, 1.0]))
    half = scipy_stats.t.ppf(0.975, 1) * np.std([0.0, 1.0], ddof=1) / np.sqrt(2)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert bootstrap_mean_ci(np.array([3.0, 3.0, 3.0])) == (3.0, 3.0)
    # large normal sample: close to the normal-theory interval mean +- 1.96 sd / sqrt(n)
    x = np.random.default_rng(0).normal(5.0, 2.0, 400)
    low, high = bootstrap_mean_ci(x, n_resamples=4000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.04) and high == pytest.approx(x.mean() + half, abs=0.04)


def test_bootstrap_ci_reads_the_expanded_tails_so_few_trials_get_a_wider_interval():
    from ptqlib.analysis.stats import expanded_tail, resamples_for

    x = np.random.default_rng(2).normal(0.0, 1.0, 7)
    tail = expanded_tail(7)
    plain = scipy_stats.bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=resamples_for(tail),
                                  method="percentile", random_state=np.random.default_rng(0)).confidence_interval
    expanded = scipy_stats.bootstrap((x,), np.mean, confidence_level=1 - 2 * tail, n_resamples=resamples_for(tail),
                                     method="percentile", random_state=np.random.default_rng(0)).confidence_interval
    got = bootstrap_mean_ci(x)
    assert got == pytest.approx((expanded.low, expanded.high))
    assert got[0] < plain.low and got[1] > plain.high  # the plain 95 % interval covers about 88 % on 7 trials
    # below 5 trials: Student's interval, which keeps its coverage where no resampling does
    from ptqlib.analysis.stats import t_mean_ci
    for n in (2, 3, 4):
        assert bootstrap_mean_ci(x[:n]) == t_mean_ci(x[:n])
    rng = np.random.default_rng(3)
    covered = [lo <= 0 <= hi for lo, hi in (bootstrap_mean_ci(rng.normal(0, 1, 2)) for _ in range(400))]
    assert 0.92 <= np.mean(covered) <= 0.98  # the expanded percentile interval of 2 trials: about 0.5

def test_drop_ci_flags_only_drops_that_exclude_zero():
    frame = tidy({s: [80 + (s % 2), 90 + (-1) ** s, 90] for s in range(10)})  # a: drop ~9.5; b: +-1 around 0
    out = drop_ci(frame).set_index("class")
    assert out.loc["a", "significant"] and out.loc["a", "ci_low"] >= 9 and out.loc["a", "ci_high"] <= 10
    assert not out.loc["b", "significant"] and out.loc["b", "ci_low"] < 0 < out.loc["b", "ci_high"]
    assert not out.loc["c", "significant"] and out.loc["c", "ci_low"] == out.loc["c", "ci_high"] == 0


def test_holm_by_hand():
    assert holm(np.array([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])
    adjusted = holm(np.array([0.01, np.nan, 0.04, 0.03]))  # a test not run is not counted
    assert np.isnan(adjusted[1]) and adjusted[[0, 2, 3]] == pytest.approx([0.03, 0.06, 0.06])


def test_paired_test_exact_wilcoxon_answer():
    n = 10
    base = tidy({s: [70.0 + s, 80.0, 60.0 + s] for s in range(n)}, level="x")
    better = tidy({s: [70.0 + s + 0.1 * (s + 1), 80.0, 60.0 + s] for s in range(n)}, level="y")
    out = paired_test(pd.concat([base, better]), "level", "x", "y").set_index("class")
    # all 10 differences positive and distinct: the exact two-sided p is 2 / 2**10
    assert out.loc["a", "p"] == pytest.approx(2 / 2**n)
    assert out.loc["a", "p_holm"] == pytest.approx(3 * 2 / 2**n) and out.loc["a", "significant"]
    assert out.loc["b", "p"] == 1.0 and not out.loc["b", "significant"]
    assert out.loc["a", "mean_diff"] == pytest.approx(0.55) and out.loc["a", "pairs"] == n
    assert out.loc["a", "ci_low"] < 0.55 < out.loc["a", "ci_high"] and out.loc["a", "ci_low"] > 0
    assert out.loc["b", "ci_low"] == out.loc["b", "ci_high"] == 0.0  # no difference at all: no spread
    with pytest.raises(ValueError, match="levels 'x' and 'z'"):
        paired_test(pd.concat([base, better]), "level", "x", "z")


def test_paired_test_uses_only_seeds_at_both_levels():
    a = tidy({s: [50.0, 50.0, 50.0] for s in range(8)}, level="x")
    b = tidy({s: [50.0 + s + 1, 50.0, 50.0] for s in range(3, 8)}, level="y")
    out = paired_test(pd.concat([a, b]), "level", "x", "y").set_index("class")
    assert out.loc["a", "pairs"] == 5
    assert out.loc["a", "p"] == pytest.approx(scipy_stats.wilcoxon([4, 5, 6, 7, 8]).pvalue)
    # a third level with fewer seeds (a cell still being computed) must not limit the x-y pairs
    c = tidy({s: [40.0, 40.0, 40.0] for s in range(2)}, level="z")
    out3 = paired_test(pd.concat([a, b, c]), "level", "x", "y").set_index("class")
    assert out3.loc["a", "pairs"] == 5 and out3.loc["a", "p"] == out.loc["a", "p"]


def test_churn_by_hand():
    labels = np.array([0, 1, 2, 0, 1])
    fp = np.array([0, 1, 0, 0, 2])  # right, right, wrong, right, wrong
    q = np.array([0, 2, 2, 1, 2])   # same, lost, gained, lost, same
    assert churn(q, fp, labels) == {"flip_rate": 60.0, "lost": 40.0, "gained": 20.0,
                                    "lost_share": pytest.approx(200 / 3)}


def test_modal_predictions_and_exemplars():
    preds = np.array([[0, 1, 2, 2], [0, 2, 2, 1], [1, 2, 0, 1]])
    mode, share = modal_predictions(preds)
    assert mode.tolist() == [0, 2, 2, 1] and share == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert exemplars(preds, np.array([0, 1, 2, 2])).tolist() == [1, 3]


def test_ece_of_calibrated_and_overconfident_models():
    # each bin's accuracy equals its confidence: a perfectly calibrated model has ECE 0
    conf = torch.tensor([0.8] * 10 + [0.5] * 4)
    correct = torch.tensor([1] * 8 + [0] * 2 + [1, 0, 1, 0], dtype=torch.bool)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-5)  # float32 0.8
    assert expected_calibration_error(torch.ones(5), torch.ones(5, dtype=torch.bool)) == pytest.approx(0.0)
    # always 90 % sure and always wrong: gap 0.9 in the only bin
    assert expected_calibration_error(torch.full((7,), 0.9), torch.zeros(7, dtype=torch.bool)) == pytest.approx(90.0)
    # two bins by hand: 0.95 with 1/2 right (gap .45, weight .5) and 0.25 with 1/2 right (gap .25, weight .5)
    conf = torch.tensor([0.95, 0.95, 0.25, 0.25])
    correct = torch.tensor([True, False, True, False])
    assert expected_calibration_error(conf, correct) == pytest.approx(100 * (0.5 * 0.45 + 0.5 * 0.25))


def test_drop_ci_table_layout():
    frame = pd.concat([tidy({s: [80.0 + s % 2, 90.0, 90.0] for s in range(6)}, level=lv) for lv in ("x", "y")])
    table = drop_ci_table(frame, "level")
    assert list(table.index) == ["a", "b", "c", "Average"] and list(table.columns) == ["x", "y"]
    assert table.loc["a", "x"].startswith("9.50 [") and table.loc["a", "x"].endswith("]*")
    assert table.loc["b", "y"] == "0.00 [0.00, 0.00]"
    # any factor name works, including names the table uses on its way (the book's "cell")
    for name in ("cell", "text"):
        renamed = drop_ci_table(frame.rename(columns={"level": name}), name)
        assert list(renamed.columns) == ["x", "y"] and renamed.loc["a", "x"] == table.loc["a", "x"]


def test_reliability_summary_by_hand():
    frame = pd.concat([tidy({0: [80, 70, 90], 1: [60, 75, 95]}, fp=90.0, level="x"),
                       tidy({0: [85, 85, 85], 1: [87, 83, 85]}, fp=90.0, level="y")])
    out = reliability_summary(frame, ["level"]).set_index("level")
    x, y = out.loc["x"], out.loc["y"]
    assert x["trials"] == 2 and x["avg_mean"] == pytest.approx((80 + 70 + 90 + 60 + 75 + 95) / 6)
    assert x["avg_std"] == pytest.approx(np.std([80, 76.6666667], ddof=1))  # the trials' averages: 80, 76.67
    assert x["worst_mean"] == pytest.approx(65.0) and x["worst_std"] == pytest.approx(np.std([70, 60], ddof=1))
    # class stds over trials: a 14.14, b 3.54, c 3.54 -> median 3.54; largest mean drop: a (90 - 70 = 20)
    assert x["class_std_median"] == pytest.approx(np.std([70, 75], ddof=1))
    assert (x["max_class_drop"], x["max_drop_class"]) == (pytest.approx(20.0), "a")
    assert y["worst_mean"] == pytest.approx(84.0) and y["max_drop_class"] == "b" and y["max_class_drop"] == 6.0


def test_paired_gain_of_the_average_and_the_worst_class():
    import numpy as np
    import pandas as pd

    from ptqlib.analysis.stats import paired_gain

    rows = []
    for seed in range(6):
        for level, shift in (("x", 0.0), ("y", 1.0)):
            accs = {"a": 80.0 + seed + 3 * shift, "b": 90.0, "c": 91.0}  # y lifts class a (the worst) by 3
            rows += [{"seed": seed, "level": level, "class": c, "acc": v} for c, v in accs.items()]
    rows.append({"seed": 9, "level": "x", "class": "a", "acc": 0.0})  # unpaired: ignored
    out = paired_gain(pd.DataFrame(rows), "level", "x", "y").set_index("statistic")
    assert out.loc["worst class", "pairs"] == 6 and out.loc["worst class", "diff"] == 3.0
    assert out.loc["average", "diff"] == 1.0
    assert (out.loc["worst class", "ci_low"], out.loc["worst class", "ci_high"]) == (3.0, 3.0)
    assert np.isclose(out.loc["worst class", "p"], 2 / 2**6)  # six positive pairs: exact two-sided p


def _levels_frame(rng, shifts: dict, seeds: int = 50, sd: float = 1.0) -> pd.DataFrame:
    """Per-class rows of classes a, b, c per level and seed: a seed's calibration set moves every
    level alike, each level's own noise ``sd``; ``shifts[level]`` lifts class a (the worst)."""
    rows = []
    base = rng.normal(0, 2, seeds)
    for level, shift in shifts.items():
        for seed in range(seeds):
            accs = {"a": 70 + base[seed] + shift + rng.normal(0, sd), "b": 90.0, "c": 91.0}
            rows += [{"key": f"{level}{seed}", "seed": seed, "level": level, "class": c, "acc": v}
                     for c, v in accs.items()]
    return pd.DataFrame(rows)


def test_level_contrasts_widen_for_the_comparisons_and_find_a_real_change_only():
    from ptqlib.analysis.stats import holm, level_contrast_lines, level_contrasts, paired_gain

    rng = np.random.default_rng(6)
    frame = _levels_frame(rng, {"mse": 0.0, "kl": 1.5, "minmax": 0.0, "cosine": 0.0})
    got = level_contrasts(frame, "level", "mse", ["minmax", "mse", "kl", "cosine", "absent"])
    assert list(got["level"].unique()) == ["minmax", "kl", "cosine"]  # in the given order, present ones only
    assert (got["confidence"] == 1 - 0.05 / 6).all()
    kl = got[(got["level"] == "kl") & (got["statistic"] == "worst class")].iloc[0]
    hand = paired_gain(frame, "level", "mse", "kl", 1 - 0.05 / 6, interval="t").set_index("statistic")
    assert (kl.ci_low, kl.ci_high) == (hand.loc["worst class", "ci_low"], hand.loc["worst class", "ci_high"])
    assert kl.verdict == "higher" and kl.change == pytest.approx(1.5, abs=0.4)
    assert list(got["p_holm"]) == pytest.approx(list(holm(got["p"].to_numpy())))
    assert (got.loc[got["level"] != "kl", "verdict"] == "not told apart").all()
    # a change that one 95 % interval calls but the widened ones do not
    small = _levels_frame(np.random.default_rng(9), {"mse": 0.0, "kl": 0.45, "minmax": 0.0, "cosine": 0.0})
    edge = level_contrasts(small, "level", "mse", ["minmax", "kl", "cosine"])
    one = paired_gain(small, "level", "mse", "kl", 0.95, interval="t").set_index("statistic").loc["worst class"]
    row = edge[(edge["level"] == "kl") & (edge["statistic"] == "worst class")].iloc[0]
    assert one.ci_low > 0 and row.ci_low < 0 and row.verdict == "not told apart"
    # on flat levels, any of the table's intervals clears 0 about 5 % of the time at most
    cleared = [(level_contrasts(_levels_frame(np.random.default_rng(100 + i), dict.fromkeys(
        ("mse", "kl", "minmax", "cosine"), 0.0), seeds=20), "level", "mse", ["kl", "minmax", "cosine"])["verdict"]
        != "not told apart").any() for i in range(150)]
    assert np.mean(cleared) <= 0.08
    (line, *_) = level_contrast_lines(got, "mse")
    assert line.startswith("minmax - mse (50 shared seeds, intervals at 99.17 %): average ")
    assert level_contrasts(frame[frame["level"] == "kl"], "level", "mse", ["kl"]).empty
    assert level_contrast_lines(level_contrasts(frame, "level", "none", ["kl"]), "none") == [
        "nothing to compare: none and at least one other level need trials"]

def test_largest_drop_names_the_class_and_how_firmly_it_leads():
    from ptqlib.analysis.stats import drop_ci, largest_drop, largest_drop_lines

    rng = np.random.default_rng(8)

    def cell(lead):  # class a drops 5 + lead points, b 5, c 1, each with seed noise
        rows = []
        for seed in range(30):
            for c, mean in (("a", 5.0 + lead), ("b", 5.0), ("c", 1.0)):
                drop = mean + rng.normal(0, 0.5)
                rows.append({"key": f"{seed}", "seed": seed, "class": c, "drop": drop, "acc": 90 - drop, "fp_acc": 90.0})
        return pd.DataFrame(rows)

    clear = largest_drop(cell(1.0))
    assert (clear["class"], clear["runner_up"], clear["trials"]) == ("a", "b", 30)
    assert clear["gap_ci"][0] > 0 and clear["top_share"] > 0.99 and clear["gap"] == pytest.approx(1.0, abs=0.3)
    assert clear["ci"][0] < clear["mean"] < clear["ci"][1] and clear["max"] >= clear["mean"]
    assert "told apart from the next, 'b'" in largest_drop_lines(clear)[1]
    # a and b drop alike: whichever leads is told apart from the other about 5 % of the time at most
    told = ["not told apart" not in largest_drop_lines(largest_drop(cell(0.0)))[1] for _ in range(100)]
    assert np.mean(told) <= 0.1
    frame = cell(1.0)
    assert largest_drop(frame)["ci"] == tuple(drop_ci(frame[frame["class"] == "a"]).iloc[0][["ci_low", "ci_high"]])
    one = largest_drop(frame[frame["seed"] == 0])  # one trial: the numbers, no intervals
    assert one["class"] == "a" and one["trials"] == 1 and np.isnan(one["gap_ci"][0]) and np.isnan(one["top_share"])
    with pytest.raises(ValueError, match="two classes and a trial"):
        largest_drop(frame[frame["class"] == "a"])
    # ten tied classes: the leader is told apart about 5 % of the time at most
    many = []
    for _ in range(60):
        rows = [{"seed": seed, "class": f"c{k}", "drop": 5 + rng.normal(0, 0.5)} for seed in range(20) for k in range(10)]
        many.append(largest_drop(pd.DataFrame(rows))["gap_ci"][0] > 0)
    assert np.mean(many) <= 0.1

def test_class_range_lines_give_each_levels_average_range_and_median():
    from ptqlib.analysis.aggregate import class_range_lines

    table = pd.DataFrame({0.1: [-1.0, 0.5, 2.0, -0.2], "b": [0.3, -4.0, 1.0, 0.1]}, index=["a", "b", "c", "Average"])
    noise, bias = class_range_lines(table, "level {}", "average", signed=True, itself=False)
    assert noise == "level 0.1: average -0.20; classes from -1.00 ('a') to +2.00 ('c'), median +0.50"
    (line,) = class_range_lines(table[["b"]], "biased towards {}", "average", signed=True, itself=True,
                                std_change=table[["b"]] * -2)
    assert line == ("biased towards b: average +0.10, the class itself -4.00; classes from -4.00 ('b') to "
                    "+1.00 ('c'), median +0.30; largest std change 8.00")
    assert class_range_lines(table[[0.1]], "W{0}A{0}", "mean")[0].startswith("W0.1A0.1: mean -0.20; classes from -1.00")

def test_mean_difference_is_welchs_test_without_shared_seeds_and_the_paired_test_with_all():
    from ptqlib.analysis.stats import mean_difference, t_mean_ci

    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(74.6, 0.7, 10), index=range(10))
    b = pd.Series(rng.normal(73.6, 0.4, 5), index=range(10, 15))  # no seed in common
    d = mean_difference(a, b)
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert d.diff == pytest.approx(a.mean() - b.mean()) and d.shared == 0 and np.isnan(d.r)
    assert d.df == pytest.approx(welch.df) and d.diff / d.se == pytest.approx(welch.statistic)
    assert d.interval() == pytest.approx(tuple(welch.confidence_interval(0.95)))
    # TOST at 5 %: both one-sided Welch tests reject just above the bound, one does not just below it
    bound = d.equivalence_bound()
    for margin, shown in ((bound + 1e-6, True), (bound - 1e-6, False)):
        p_low = scipy_stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue
        p_high = scipy_stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue
        assert (max(p_low, p_high) < 0.05) == shown
    # every seed shared: the paired t-test on the differences
    c = pd.Series(rng.normal(74.0, 0.7, 10), index=range(10))
    paired = mean_difference(a, c)
    assert paired.df == 9 and paired.interval() == pytest.approx(t_mean_ci((a - c).to_numpy()))
    assert paired.paired_sd == pytest.approx((a - c).std(ddof=1))


def test_mean_difference_reproduces_the_partially_overlapping_t_test_on_its_documented_example():
    from ptqlib.analysis.stats import mean_difference

    # the example of the R package Partiallyoverlapping (Partover.test): 8 paired values a side
    # (seeds 0-7) and 8 unpaired ones each; the unequal-variance statistic's se, df and t from the
    # package's formulas
    a = pd.Series([14, 15, 18, 20, 11, 19, 14, 15] + [20, 21, 16, 18, 14, 12, 14, 17],
                  index=[*range(8), *range(100, 108)])
    b = pd.Series([15, 10, 15, 17, 13, 19, 12, 13] + [10, 16, 18, 16, 15, 14, 13, 10],
                  index=[*range(8), *range(200, 208)])
    d = mean_difference(a, b)
    assert (d.diff, d.shared) == (2.0, 8)
    assert d.se == pytest.approx(0.826755, abs=1e-6) and d.df == pytest.approx(18.4223, abs=1e-4)
    assert d.diff / d.se == pytest.approx(2.4191, abs=1e-4)


def test_mean_difference_widens_for_shared_seeds_that_move_against_each_other():
    from ptqlib.analysis.stats import mean_difference

    base = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    b = pd.Series(np.r_[base, 0.3, -0.3], index=range(7))
    along = pd.Series(np.r_[base, 0.2, -0.2, 0.4, -0.4], index=[0, 1, 2, 3, 4, 10, 11, 12, 13])
    against = pd.Series(np.r_[-base, 0.2, -0.2, 0.4, -0.4], index=along.index)
    apart = pd.Series(along.to_numpy(), index=range(20, 29))  # the same values, no seed shared
    assert mean_difference(along, b).r > 0.9 and mean_difference(against, b).r < -0.9
    se = {name: mean_difference(x, b).se for name, x in (("along", along), ("against", against), ("apart", apart))}
    assert se["along"] < se["apart"] < se["against"]
    # one shared seed carries no correlation: Welch's test; one side without spread: the other's df
    one = mean_difference(pd.Series([1.0, 2.0, 4.0], index=[0, 1, 2]), pd.Series([0.0, 3.0, 1.0], index=[2, 3, 4]))
    assert one.shared == 1 and np.isnan(one.r)  # no correlation to read: nothing paired
    assert one.df == pytest.approx(scipy_stats.ttest_ind([1.0, 2.0, 4.0], [0.0, 3.0, 1.0], equal_var=False).df)
    flat_a = mean_difference(pd.Series([2.0, 2.0, 2.0]), pd.Series([0.0, 1.0, 2.0, 3.0], index=[0, 1, 2, 3]))
    assert np.isnan(flat_a.r) and flat_a.df == pytest.approx(3) and flat_a.se == pytest.approx(np.std([0, 1, 2, 3], ddof=1) / 2)
    # degenerate samples: no interval, no bound
    assert np.isnan(mean_difference(pd.Series([1.0]), b).se)
    flat = mean_difference(pd.Series([1.0, 1.0, 1.0]), pd.Series([0.0, 0.0]))
    assert flat.diff == 1.0 and np.isnan(flat.equivalence_bound()) and np.isnan(flat.interval()[0])
    # the bound fails a real difference and too few seeds, and passes a close one on many
    rng = np.random.default_rng(1)
    draw = lambda mean, n: pd.Series(rng.normal(mean, 0.5, n))  # noqa: E731
    far = mean_difference(draw(2.0, 50), draw(0.0, 50))
    assert far.interval()[0] > 1.0 and far.equivalence_bound() > far.diff  # not within its own size
    three = mean_difference(pd.Series([-0.5, 0.0, 0.5]), pd.Series([-0.5, 0.0, 0.5], index=[3, 4, 5]))
    assert three.diff == 0 and three.equivalence_bound() > 0.3  # equal means on three seeds each: not shown
    assert mean_difference(draw(0.0, 200), draw(0.0, 200)).equivalence_bound() < 0.3


def _curve(rng, means, seeds=10, seed_sd=1.0, noise=0.3, missing=()):
    """Worst classes of a synthetic iteration curve: rows seeds, columns counts; each seed's
    calibration set shifts all its counts alike (``seed_sd``), each run adds its own ``noise``."""
    shift = rng.normal(0, seed_sd, seeds)
    frame = pd.DataFrame({count: 70 + mean + shift + rng.normal(0, noise, seeds) for count, mean in means.items()})
    for count, seed in missing:
        frame.loc[seed, count] = np.nan
    return frame


def test_count_reversals_finds_a_dip_and_not_a_steady_rise():
    from ptqlib.analysis.stats import count_reversals, holm, mean_difference

    rng = np.random.default_rng(3)
    rise = count_reversals(_curve(rng, {500: 0.0, 2000: 1.0, 5000: 2.0, 20000: 3.0}))
    assert len(rise) == 6 and list(rise[["lower", "higher"]].iloc[0]) == [500, 2000]
    assert not ((rise["p_holm"] < 0.05) & (rise["diff"] < 0)).any()  # no fall: the rule can pass a curve
    assert ((rise["p_holm"] < 0.05) & (rise["diff"] > 0)).sum() >= 5  # and it sees the rise
    dip = count_reversals(_curve(rng, {500: 0.0, 2000: 0.0, 5000: -1.5, 20000: 0.0}))
    fell = dip[(dip["p_holm"] < 0.05) & (dip["diff"] < 0)]
    assert set(zip(fell["lower"], fell["higher"])) == {(500, 5000), (2000, 5000)}  # the rule fails a dip
    # by hand: one pair's numbers are mean_difference's, its p the two-sided t-test's, Holm over all
    worst = _curve(rng, {500: 0.0, 5000: -0.5, 20000: 0.2}, missing=[(5000, 9), (20000, 0)])
    got = count_reversals(worst)
    d = mean_difference(worst[5000], worst[500])
    assert got["diff"].iloc[0] == pytest.approx(d.diff) and (got["low"].iloc[0], got["high"].iloc[0]) == d.interval()
    assert got["p"].iloc[0] == pytest.approx(2 * scipy_stats.t.sf(abs(d.diff / d.se), d.df))
    assert list(got["p_holm"]) == pytest.approx(list(holm(got["p"].to_numpy())))
    assert list(got["trials_lower"]) == [10, 10, 9] and got["shared"].iloc[0] == 9
    # a count with one trial has no test and does not count among the pairs
    one = count_reversals(pd.DataFrame({500: [70.0, 71.0, 72.0], 2000: [np.nan, 71.0, np.nan]}))
    assert one["p"].isna().all() and one["p_holm"].isna().all()
    assert count_reversals(pd.DataFrame()).empty


def test_count_reversals_find_a_change_on_flat_curves_about_as_often_as_chance_allows():
    from ptqlib.analysis.stats import count_reversals

    rng = np.random.default_rng(4)
    found = [(count_reversals(_curve(rng, dict.fromkeys((500, 2000, 5000, 20000), 0.0)))["p_holm"] < 0.05).any()
             for _ in range(300)]
    assert np.mean(found) <= 0.08  # family-wise over the curve's 6 pairs: about 5 % at most

def test_seeds_for_equivalence_follows_the_t_interval_and_refuses_what_no_seed_count_shows():
    from ptqlib.analysis.stats import seeds_for_equivalence

    # t(26) * 0.5 / sqrt(27) = 0.1978 <= 0.3 - 0.1, while t(25) * 0.5 / sqrt(26) = 0.2019: 27 seeds
    # (the normal approximation says 25)
    assert seeds_for_equivalence(0.1, 0.5, 0.3) == 27
    assert seeds_for_equivalence(-0.1, 0.5, 0.3) == 27  # either direction
    assert seeds_for_equivalence(0.0, 0.01, 0.3) == 2  # at least a pair
    assert seeds_for_equivalence(0.3, 0.5, 0.3) == np.inf and seeds_for_equivalence(-0.1 - 0.2, 0.5, 0.3) == np.inf
    assert seeds_for_equivalence(-0.5, 0.1, 0.3) == np.inf
    assert np.isnan(seeds_for_equivalence(0.1, np.nan, 0.3))
    # at that many seeds, intervals of simulated paired changes (mean 0.1, sd 0.5) fit within
    # 0.3 points about half the time (the interval's half-width equals the margin on average);
    # at a quarter of them, hardly ever
    rng = np.random.default_rng(0)
    for n, low, high in ((27, 0.3, 0.8), (7, 0.0, 0.1)):
        fits = []
        for _ in range(400):
            d = rng.normal(0.1, 0.5, n)
            half = scipy_stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
            fits.append(abs(d.mean()) + half <= 0.3)
        assert low <= np.mean(fits) <= high


def test_the_t_interval_keeps_its_coverage_on_three_seeds_where_the_bootstrap_does_not():
    from ptqlib.analysis.stats import bootstrap_mean_ci, t_mean_ci

    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 1.0, (400, 3))  # three paired seeds, true mean change 0
    t_cover = np.mean([lo <= 0 <= hi for lo, hi in map(t_mean_ci, samples)])
    def plain(s):  # scipy's percentile bootstrap at 95 %
        ci = scipy_stats.bootstrap((s,), np.mean, n_resamples=200, method="percentile",
                                   random_state=np.random.default_rng(0)).confidence_interval
        return ci.low, ci.high

    boot_cover = np.mean([lo <= 0 <= hi for lo, hi in map(plain, samples)])
    assert 0.92 <= t_cover <= 0.98  # about its stated 95 %
    assert boot_cover < 0.85  # the percentile bootstrap of 3 values covers far less
    assert bootstrap_mean_ci(samples[0]) == t_mean_ci(samples[0])  # so below 5 trials the project uses t
    lo, hi = t_mean_ci([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0) and hi - lo == pytest.approx(2 * 4.302653 / np.sqrt(3), rel=1e-5)
    assert np.isnan(t_mean_ci([1.0])[0])


def test_paired_gain_takes_a_t_interval_on_request_and_refuses_other_names():
    from ptqlib.analysis.stats import paired_gain, t_mean_ci

    rows = [{"level": lv, "seed": s, "class": c, "acc": 70.0 + s + (1.5 * s if lv == "b" else 0) + c}
            for lv in ("a", "b") for s in range(4) for c in range(3)]
    frame = pd.DataFrame(rows)
    gain = paired_gain(frame, "level", "a", "b", interval="t").set_index("statistic")
    assert (gain.loc["worst class", "ci_low"], gain.loc["worst class", "ci_high"]) == \
        pytest.approx(t_mean_ci(1.5 * np.arange(4)))
    with pytest.raises(ValueError, match="unknown interval 'normal'; choose bootstrap or t"):
        paired_gain(frame, "level", "a", "b", interval="normal")


def test_model_contrasts_pair_models_by_seed_and_find_a_larger_class_drop():
    from ptqlib.analysis.aggregate import AVERAGE
    from ptqlib.analysis.stats import contrast_lines, model_contrasts

    rng = np.random.default_rng(4)
    rows, shared = [], rng.normal(0, 1.0, 8)  # what a seed's calibration set does to every model
    for model, extra in (("small", 0.0), ("same", 0.0), ("hurt", 6.0)):
        for seed in range(8):
            key = f"{model}-{seed}"
            for k, cls in enumerate("abcd"):
                drop = 2.0 + k + shared[seed] + rng.normal(0, 0.3) + (extra if cls == "d" else 0.0)
                rows.append({"model": model, "seed": seed, "key": key, "class": cls, "acc": 80.0 - drop, "drop": drop})
            rows.append({"model": model, "seed": seed, "key": key, "class": AVERAGE, "acc": 70.0, "drop": 0.0})
    got = model_contrasts(pd.DataFrame(rows), "small").set_index(["model", "statistic"])
    hurt, same = got.loc[("hurt", "largest_drop")], got.loc[("same", "largest_drop")]
    assert hurt["change"] == pytest.approx(6.0, abs=0.5) and hurt["ci_low"] > 4  # found, with its size
    assert same["ci_low"] < 0 < same["ci_high"]  # no change: the interval holds 0
    assert same["ci_high"] - same["ci_low"] < 1.5  # the shared seed effect is paired away (it alone spreads 1 point)
    assert got.loc[("hurt", "worst_class"), "change"] == pytest.approx(-6.0, abs=0.5)
    assert list(got["trials"]) == [8] * 4 and model_contrasts(pd.DataFrame(rows), "absent").empty
    # four comparisons share the 5 %: each interval at 98.75 %, a verdict from it
    assert got["confidence"].iloc[0] == pytest.approx(1 - 0.05 / 4)
    assert hurt["verdict"] == "higher" and same["verdict"] == "not told apart"
    assert got.loc[("hurt", "worst_class"), "verdict"] == "lower"
    frame = pd.DataFrame(rows)
    assert model_contrasts(frame[frame["model"] == "small"], "small").empty  # nothing to compare with
    lines = contrast_lines(got.reset_index(), "small")
    assert len(lines) == 4 and lines[2].startswith("hurt vs small, worst class: -5.93 [") and lines[2].endswith(
        "points at 98.75% (8 and 8 trials): lower")
    assert contrast_lines(model_contrasts(frame[frame["model"] == "small"], "small"), "small")[0].startswith(
        "nothing to compare: small")
    twice = pd.concat([frame, frame[frame["seed"] == 0].assign(key="another trial")])
    with pytest.raises(ValueError, match="one trial per model and seed"):
        model_contrasts(twice, "small")


def test_outside_band_counts_an_edge_as_inside():
    from ptqlib.analysis.stats import outside_band

    mean_drop = np.array([10.6, 0.2 + 0.1, -4.0, 10.6 + 1e-6, np.nan])  # 0.2 + 0.1 != 0.3 in floating point
    got = outside_band(mean_drop, [-3.0, 0.3, -3.0, -3.0, -3.0], [10.6, 1.0, 10.6, 10.6, 10.6])
    assert got.tolist() == [False, False, True, True, False]  # the edge (and its rounding) inside, NaN not outside


def test_interval_verdict_reads_only_an_interval_clear_of_zero():
    from ptqlib.analysis.stats import interval_verdict

    assert [interval_verdict(*ci) for ci in ((0.1, 2.0), (-2.0, -0.1), (-0.1, 2.0), (0.0, 1.0))] == [
        "higher", "lower", "not told apart", "not told apart"]


def test_above_guessing_counts_classes_guessing_explains_and_fails_where_it_does_not():
    import pandas as pd

    from ptqlib.analysis.stats import above_guessing, guessing_floor, guessing_lines

    assert guessing_floor(50, 1000) == 1  # P(at least 1 of 50 right | 0.1 %) = 0.049
    assert guessing_floor(50, 10) == 10  # among 10 outputs, guessing gets about 5 of 50 right
    assert guessing_floor(500, 1000) == 3  # the average of ten such classes needs more than one class
    rows = []
    for seed in range(4):
        # a: never right; b: 1 of 50 right (2 %); c: 5 of 50 (10 %) in every trial; d: right in one
        # trial only; e: right in two of the four (half: not most)
        accs = {"a": 0.0, "b": 2.0, "c": 10.0, "d": 2.0 if seed == 0 else 0.0, "e": 2.0 if seed < 2 else 0.0}
        for name, acc in accs.items():
            rows.append({"model": "m", "seed": seed, "class": name, "acc": acc})
        rows.append({"model": "m", "seed": seed, "class": "Average", "acc": 3.0})
    frame = pd.DataFrame(rows)
    thousand = above_guessing(frame, outputs=1000, images=50).iloc[0]
    assert thousand["at_guessing"] == 3 and thousand["at_guessing_classes"] == "a, d, e"
    assert thousand["avg_above"] == 4 and thousand["trials"] == 4 and thousand["classes"] == 5
    assert not thousand["kept"] and thousand["avg_floor"] == guessing_floor(250, 1000) == 2
    # the same accuracies among 10 outputs: guessing explains every class and the average
    ten = above_guessing(frame, outputs=10, images=50).iloc[0]
    assert ten["at_guessing"] == 5 and ten["avg_above"] == 0 and not ten["kept"]
    # a model every class of which is right often enough is kept; its average alone would not do
    good = frame[frame["class"].isin(["b", "c"])]
    assert above_guessing(good, 1000, 50).iloc[0]["kept"]
    # the average's own floor: one right answer in all of a's and d's 100 images is not enough
    sparse = frame[frame["class"].isin(["a", "d"])]
    assert above_guessing(sparse, 1000, 50).iloc[0]["avg_above"] == 0  # d's 1 of 100 on seed 0: floor 2
    line = guessing_lines(above_guessing(frame, 1000, 50, alpha=0.01), "W4A8 ")[0]
    assert line.startswith("W4A8 m: average ") and "4 of 5 classes not shown above guessing in most trials (a, b, d, e)" in line  # b: 1 right is not 2
    assert line.endswith("(a class needs 2 of its 50 images right, one-sided binomial at 0.01)")
    for bad, match in [((0, 1000), "images must be"), ((50, 1), "outputs must be"), ((50, 1000, 1.5), "alpha must"),
                       ((1, 10), "no count of 1 images is beyond guessing among 10")]:
        with pytest.raises(ValueError, match=match):
            guessing_floor(*bad)


def test_p_values_print_alike_on_every_page():
    from ptqlib.analysis.stats import format_p, p_value

    assert [format_p(p) for p in (0.04567, 0.0005, 1.0, float("nan"))] == ["0.046", "< 0.001", "1.000", "n/a"]
    # with a label, as a sentence reads it (never "p = < 0.001")
    assert [p_value(p) for p in (0.04567, 0.0005, float("nan"))] == ["p = 0.046", "p < 0.001", "p n/a"]
    assert p_value(0.2, "Wilcoxon p") == "Wilcoxon p = 0.200"
