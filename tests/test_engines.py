"""Simulated against integer evaluation, on synthetic paired predictions with a known truth.

A fake-quantized trial's predictions are simulated per image; its int8 twin (same seed)
changes some of them. Changes on 1 % of the images must contradict the 99.9 % agreement claim;
none must support it. Changes that ignore the image's class must not come out as concentrated
on classes; changes planted in one class must, and that class must leave its chance band. An int8
twin that moves ten times as many predictions as a reordered fake twin (the float-noise yardstick)
must support the claim that int8 moves more than float noise; one that moves a tenth as many must
contradict it.
"""
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ptqlib.analysis import engines as E
from ptqlib.analysis import verdicts as V
from ptqlib.analysis.cells import Cell, LevelPredictions
from ptqlib.study.store import ResultsStore, trial_row

K, PER_CLASS, TRIALS = 10, 200, 12
LABELS = np.repeat(np.arange(K), PER_CLASS)
NAMES = [f"c{k}" for k in range(K)]


def _fake(rng, trials=TRIALS):
    """``[trials, images]``: each trial right on about 85 % of the images, its own ones."""
    return np.where(rng.random((trials, len(LABELS))) < 0.85, LABELS, (LABELS + 1) % K)


def _int8(rng, fake, change):
    """The int8 twin of ``fake``: an image changes its prediction with probability ``change``
    (``[images]``); a changed image the fake model got right becomes wrong, a wrong one right."""
    moved = rng.random(fake.shape) < change
    flipped = np.where(fake == LABELS, (LABELS + 1) % K, LABELS)
    return np.where(moved, flipped, fake)


def _pair(fake, int8, seeds=None) -> LevelPredictions:
    seeds = np.arange(len(fake)) if seeds is None else np.asarray(seeds)
    return LevelPredictions({"fake": fake, "int8": int8}, {"fake": seeds, "int8": seeds}, LABELS, LABELS.copy(),
                            NAMES)


def test_agreement_table_against_hand_counts():
    fake = np.tile(LABELS, (2, 1))
    int8 = fake.copy()
    int8[1, :3] = 1  # three images of class 0, right under fake, wrong under int8
    int8[1, 5] = 0  # unchanged: already right
    table = E.agreement_table(_pair(fake, int8, seeds=[4, 7]))
    assert table["seed"].tolist() == [4, 7]
    assert table["differing"].tolist() == [0, 3]
    assert table["agreement"].tolist() == [100.0, 100.0 * (1 - 3 / len(LABELS))]
    assert table["fake_only"].tolist() == [0, 3] and table["int8_only"].tolist() == [0, 0]
    assert table["acc_diff"].iloc[1] == pytest.approx(-300.0 / len(LABELS))


def test_agreement_claim_fails_when_one_percent_of_images_change():
    rng = np.random.default_rng(0)
    fake = _fake(rng)
    part = E.agreement_part(_pair(fake, _int8(rng, fake, np.full(len(LABELS), 0.01))))
    assert part.verdict == V.CONTRADICTED
    assert part.ci[1] < E.TARGET_AGREEMENT and part.estimate == pytest.approx(99.0, abs=0.3)
    assert f"{TRIALS} of {TRIALS} seeds below" in part.detail


def test_agreement_claim_holds_when_nothing_changes_and_needs_enough_seeds():
    rng = np.random.default_rng(1)
    fake = _fake(rng)
    part = E.agreement_part(_pair(fake, fake.copy()))
    assert part.verdict == V.SUPPORTED and part.estimate == 100.0 and part.ci == (100.0, 100.0)
    few = E.agreement_part(_pair(fake[:3], fake[:3].copy()))
    assert few.verdict == V.NOT_ENOUGH and few.trials == 3
    assert E.gap_chance_part(_pair(fake[:3], fake[:3].copy())).verdict == V.NOT_ENOUGH


def test_changes_regardless_of_class_are_not_concentrated_on_classes():
    rng = np.random.default_rng(2)
    fake = _fake(rng)
    lp = _pair(fake, _int8(rng, fake, np.full(len(LABELS), 0.01)))
    data = V.ClassData(lp, chance_draws=300)
    part = E.gap_chance_part(lp, data)
    assert part.verdict != V.SUPPORTED and part.p_chance >= V.ALPHA
    assert part.chance[0] <= part.estimate <= part.chance[1]
    classes = E.class_gap(lp, data)
    assert len(classes) == K and classes["trials"].eq(TRIALS).all()
    assert (classes["diff_low"] <= classes["diff"]).all() and (classes["diff"] <= classes["diff_high"]).all()
    assert classes["outside"].sum() <= 2  # a 95 % band: about one class in twenty outside by chance


@pytest.mark.parametrize("trials", [1, 2, 3])
def test_class_gap_on_one_to_three_seeds_gives_finite_intervals_or_none(trials):
    rng = np.random.default_rng(3)
    fake = _fake(rng, trials)
    lp = _pair(fake, _int8(rng, fake, np.full(len(LABELS), 0.02)))
    classes = E.class_gap(lp, V.ClassData(lp, chance_draws=20))
    assert len(classes) == K and classes["trials"].eq(trials).all()
    if trials == 1:  # one seed: no interval
        assert classes[["diff_low", "diff_high"]].isna().all().all()
    else:
        assert (classes["diff_low"] <= classes["diff"]).all() and (classes["diff"] <= classes["diff_high"]).all()


def test_changes_planted_in_one_class_are_found_beyond_chance():
    rng = np.random.default_rng(3)
    fake = _fake(rng)
    change = np.where(LABELS == 3, 0.05, 0.002)
    lp = _pair(fake, _int8(rng, fake, change))
    data = V.ClassData(lp, chance_draws=300)
    part = E.gap_chance_part(lp, data)
    assert part.verdict == V.SUPPORTED and part.p_chance < V.ALPHA
    assert "'c3'" in part.detail and part.estimate > part.chance[1]
    classes = E.class_gap(lp, data).set_index("class")
    assert classes.loc["c3", "outside"] and classes.loc["c3", "diff_high"] < 0
    assert classes.loc["c3", "differing"] == pytest.approx(5.0, abs=1.0)
    # the other classes lose less than a random group of images, which holds some of c3's
    assert (classes.drop("c3")["diff"] > classes.loc["c3", "chance_low"]).all()


def test_the_class_concentration_verdict_reads_its_p_adjusted_over_the_cells():
    def comparison(label, p):  # a cell whose chance part has permutation p-value p (None: too few seeds)
        chance = V.Part(E.CLAIM, E.GAP_PART, V.NOT_ENOUGH if p is None else V.decide_chance(p),
                        None if p is None else 0.5, None, None if p is None else (0.1, 0.4), 5, None, ">",
                        "points", p_chance=p)
        other = V.Part(E.CLAIM, "other", V.SUPPORTED, 1.0, (0.5, 1.5), None, 5, 0.0, ">", "points")
        return E.Comparison(label, LevelPredictions({}, {}, None, None, []), pd.DataFrame(), pd.DataFrame(),
                            [other, chance, other, other])

    cells = [comparison("a", 0.03), comparison("b", 0.6), comparison("c", 0.004), comparison("d", None)]
    assert [c.parts[1].verdict for c in cells[:3]] == [V.SUPPORTED, V.CONTRADICTED, V.SUPPORTED]
    got = E.across_cells(cells)
    adjusted = [c.parts[1].p_adjusted for c in got]
    assert adjusted[:3] == pytest.approx([0.06, 0.6, 0.012]) and adjusted[3] is None  # Holm over the 3 tested
    assert [c.parts[1].verdict for c in got] == [V.INCONCLUSIVE, V.CONTRADICTED, V.SUPPORTED, V.NOT_ENOUGH]
    assert [c.parts[1].p_chance for c in got[:3]] == [0.03, 0.6, 0.004]  # the cell's own p is kept
    assert "Holm-adjusted p = 0.060" in V.describe(got[0].parts[1]) and got[0].parts[0] is cells[0].parts[0]
    frame = V.parts_frame(got[0].parts)
    assert frame["p (adjusted)"].tolist()[1] == 0.06 and "p (adjusted)" not in V.parts_frame(cells[0].parts)
    assert E.across_cells(cells[:1])[0].parts[1].verdict == V.SUPPORTED  # one cell: nothing to adjust for

# --- from a store: pairing by seed, the cell's summary, the bench files -------------------------------------

def _store(tmp_path) -> ResultsStore:
    store = ResultsStore(tmp_path / "s.sqlite")
    per_class = {n: 100.0 for n in NAMES}
    ctx = SimpleNamespace(model_name="resnet20", dataset="toy", weights_fp="w", data_fp="d", weights_arg=None,
                          fp_avg=100.0, fp_per_class=per_class, fp_preds=torch.from_numpy(LABELS), fp_ece=1.0,
                          test=SimpleNamespace(labels=torch.from_numpy(LABELS)))
    store.add_fp(ctx)
    return store


def _write(store, cell, preds_by_seed: dict, eval_s: float):
    ctx = SimpleNamespace(weights_fp="w", data_fp="d", device="cpu")
    for seed, p in preds_by_seed.items():
        per_class = {n: 100 * float((p[LABELS == k] == k).mean()) for k, n in enumerate(NAMES)}
        result = SimpleNamespace(config=replace(cell.trial_config(), seed=seed), per_class=per_class,
                                 avg=float(np.mean(list(per_class.values()))), calib_counts={}, noise_images=0,
                                 preds=torch.from_numpy(p), calib_seconds=1.0, eval_seconds=eval_s, ece=1.0)
        store.add_trial(trial_row(result, ctx))


def test_trials_are_paired_by_seed_from_the_store(tmp_path):
    rng = np.random.default_rng(4)
    store = _store(tmp_path)
    cell = Cell(model="resnet20", dataset="toy")
    fake = {s: p for s, p in zip(range(10), _fake(rng, 10))}
    int8 = {s: _int8(rng, fake[s][None], np.full(len(LABELS), 0.01))[0] for s in range(3, 10)}
    int8[12] = fake[9].copy()  # a seed without a fake twin
    _write(store, cell, fake, eval_s=10.0)
    _write(store, replace(cell, engine="int8"), int8, eval_s=1.0)
    assert E.trials_of(E.paired_predictions(store, replace(cell, model="resnet32"), 20)) == 0
    lp = E.paired_predictions(store, replace(cell, engine="int8"), 5)  # the cell's own engine is ignored
    assert lp.seeds["fake"].tolist() == [3, 4, 5, 6, 7]
    for i, seed in enumerate(range(3, 8)):
        assert (lp.preds["fake"][i] == fake[seed]).all() and (lp.preds["int8"][i] == int8[seed]).all()
    comparison = E.compare(store, cell, 20, label="toy cell", chance_draws=50)
    assert comparison.trials == 7
    row = E.summary([comparison]).iloc[0]
    assert row["cell"] == "toy cell" and row["agreement_verdict"] == V.CONTRADICTED
    assert row["lowest"] <= row["agreement"] < E.TARGET_AGREEMENT and row["below_target"] == 7
    assert row["acc_diff_low"] <= row["acc_diff"] <= row["acc_diff_high"]
    first, *yardsticks = E.summary_lines(E.summary(E.across_cells([comparison])))
    assert first.startswith("toy cell (7 seeds, ") and first.endswith(f"'concentrated on classes': {row['class_verdict']}.")
    assert "Holm-adjusted p" in first and "over the 1 cells tested" in first and len(yardsticks) == 2
    assert all(line.startswith("    Against ") for line in yardsticks)
    seconds = E.stored_seconds(store, cell, 20).set_index("engine")
    assert seconds.loc["fake", "trials"] == 10 and seconds.loc["int8", "trials"] == 8
    assert seconds.loc["int8", "eval_s"] == 1.0 and seconds.loc["fake", "eval_s"] == 10.0


def test_an_empty_cell_gives_empty_tables(tmp_path):
    store = _store(tmp_path)
    comparison = E.compare(store, Cell(model="resnet20", dataset="toy"), 20)
    assert comparison.trials == 0 and comparison.agreement.empty and comparison.classes.empty
    assert {p.verdict for p in comparison.parts} == {V.NOT_ENOUGH}
    assert E.summary([comparison])["trials"].tolist() == [0]


def test_bench_table_reads_the_runs_that_measured_int8(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"model": "resnet20", "dataset": "d", "w_bits": 4, "a_bits": 4,
                                                 "fp_eval_s": 10.0, "int8_eval_s": 1.0, "int8_agreement": 1.0}))
    (tmp_path / "b.json").write_text(json.dumps({"model": "resnet20", "eval_s": 3.0}))  # no int8 fields
    table = E.bench_table(tmp_path)
    assert table["file"].tolist() == ["a.json"] and list(table.columns) == E.BENCH_COLUMNS
    assert table["int8_eval_s"].iloc[0] == 1.0 and pd.isna(table["threads"].iloc[0])
    (tmp_path / "c.json").write_text(json.dumps([1, 2]))  # not a record: an error naming the file
    with pytest.raises(ValueError, match="c.json holds a JSON list, not an object"):
        E.bench_table(tmp_path)


def _three(fake, int8, third, engine=E.REORDERED) -> LevelPredictions:
    """Predictions of fake, int8 and a third engine (the reordered or the float64 model) per seed."""
    seeds = np.arange(len(fake))
    return LevelPredictions({"fake": fake, "int8": int8, engine: third},
                            {e: seeds for e in ("fake", "int8", engine)}, LABELS, LABELS.copy(), NAMES)


@pytest.mark.parametrize("int8_rate, noise_rate, verdict", [(0.01, 0.001, V.SUPPORTED), (0.001, 0.01, V.CONTRADICTED)])
def test_int8_is_judged_against_the_fake_models_own_float_noise(int8_rate, noise_rate, verdict):
    rng = np.random.default_rng(5)
    fake = _fake(rng)
    int8 = _int8(rng, fake, np.full(len(LABELS), int8_rate))
    reordered = _int8(rng, fake, np.full(len(LABELS), noise_rate))
    part = E.noise_part(_three(fake, int8, reordered))
    assert part.verdict == verdict and part.ci[0] <= part.estimate <= part.ci[1]
    expected = (int8_rate - noise_rate) * len(LABELS)
    assert part.estimate == pytest.approx(expected, abs=0.3 * abs(expected))


def test_equal_int8_and_float_noise_is_not_called_either_way_and_needs_all_three_engines():
    rng = np.random.default_rng(6)
    fake = _fake(rng)
    rate = np.full(len(LABELS), 0.005)
    part = E.noise_part(_three(fake, _int8(rng, fake, rate), _int8(rng, fake, rate)))
    assert part.verdict == V.INCONCLUSIVE and part.ci[0] < 0 < part.ci[1]
    assert E.noise_part(_pair(fake, fake.copy())).verdict == V.NOT_ENOUGH  # no reordered trials
    assert "images" in V.describe(part)


@pytest.mark.parametrize("fake_rate, int8_rate, verdict", [(0.01, 0.001, V.SUPPORTED), (0.001, 0.01, V.CONTRADICTED),
                                                           (0.005, 0.005, V.INCONCLUSIVE)])
def test_exact_arithmetic_says_which_engine_strays(fake_rate, int8_rate, verdict):
    rng = np.random.default_rng(8)
    exact = _fake(rng)
    fake = _int8(rng, exact, np.full(len(LABELS), fake_rate))  # predictions moved away from exact ones
    int8 = _int8(rng, exact, np.full(len(LABELS), int8_rate))
    part = E.exact_part(_three(fake, int8, exact, E.EXACT))
    assert part.verdict == verdict and part.ci[0] <= part.estimate <= part.ci[1]
    if verdict != V.INCONCLUSIVE:
        expected = (fake_rate - int8_rate) * len(LABELS)
        assert part.estimate == pytest.approx(expected, abs=0.3 * abs(expected))
    assert E.exact_part(_pair(fake, int8)).verdict == V.NOT_ENOUGH  # no float64 trials


def test_the_float_noise_and_exact_parts_read_their_trials_from_the_store(tmp_path):
    rng = np.random.default_rng(7)
    store = _store(tmp_path)
    cell = Cell(model="resnet20", dataset="toy")
    fake = {s: p for s, p in zip(range(8), _fake(rng, 8))}
    rate = np.full(len(LABELS), 0.02)
    _write(store, cell, fake, eval_s=10.0)
    _write(store, replace(cell, engine="int8"), {s: _int8(rng, fake[s][None], rate)[0] for s in range(8)}, eval_s=1.0)
    parts = E.compare(store, cell, 20, chance_draws=50).parts
    assert parts[2].verdict == parts[3].verdict == V.NOT_ENOUGH  # neither yardstick stored yet
    _write(store, replace(cell, engine=E.REORDERED), {s: fake[s].copy() for s in range(1, 8)}, eval_s=10.0)
    _write(store, replace(cell, engine=E.EXACT), {s: fake[s].copy() for s in range(2, 8)}, eval_s=50.0)
    comparison = E.compare(store, cell, 20, chance_draws=50)
    noise, exact = comparison.parts[2:]
    assert noise.trials == 7 and noise.verdict == V.SUPPORTED  # the reordered twin changes nothing
    assert exact.trials == 6 and exact.verdict == V.CONTRADICTED  # exact equals fake: int8 is the one that strays
    row = E.summary([comparison]).iloc[0]
    assert row["noise_trials"] == 7 and row["noise_verdict"] == V.SUPPORTED
    assert row["noise_low"] <= row["noise_diff"] <= row["noise_high"]
    assert row["exact_trials"] == 6 and row["exact_verdict"] == V.CONTRADICTED
    assert row["exact_low"] <= row["exact_diff"] <= row["exact_high"] < 0


def test_yardstick_lines_say_estimate_missing_seeds_or_missing_trials():
    row = pd.Series({"noise_trials": 7, "noise_diff": 2.5, "noise_low": -1.0, "noise_high": 6.0,
                     "noise_verdict": V.INCONCLUSIVE, "noise_detail": "int8 differs from fake on 3.0 images a seed",
                     "exact_trials": 3, "exact_diff": np.nan, "exact_low": np.nan, "exact_high": np.nan,
                     "exact_verdict": V.NOT_ENOUGH, "exact_detail": "3 seeds with fake, int8 and fake-float64 trials"})
    noise, exact = E.yardstick_lines(row)
    assert noise.startswith("Against float noise (7 seeds") and "+2.5 images a seed" in noise and "-1.0 to +6.0" in noise
    assert exact == "Against exact arithmetic: 3 seeds with fake, int8 and fake-float64 trials." and "nan" not in exact
    without = row.copy()
    without["noise_trials"] = 0
    assert E.yardstick_lines(without)[0] == (f"Against float noise: no {E.REORDERED} trial of this cell shares a seed "
                                             "with its fake and int8 trials.")
