"""What the report's pages compute, on synthetic data: the readers of the commands' JSON files
(ptqlib.analysis.files), tables of single runs (runs), the remedy comparisons (remedies), what
quantization changes below the accuracy (changes), and the aggregate and stats helpers the
pages call."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ptqlib.analysis import files
from ptqlib.analysis.aggregate import AVERAGE, ece_table, gains_against, inventory, ordered_levels, varying_settings
from ptqlib.analysis.cells import Cell
from ptqlib.analysis.changes import (caption, cell_predictions, churn_line, churn_table, corruption_summary,
                                     ece_line, forgotten_images, forgotten_line)
from ptqlib.analysis.conclusions import remedy_verdicts
from ptqlib.analysis.remedies import missing_lines, remedy_comparisons
from ptqlib.analysis.runs import (card_per_class, class_drops, drop_lines, gain_lines, gains_over_grid, largest_drops,
                                  latest_fp_reference,
                                  reconstruction_table, run_summary, sort_runs, training_recipe, weakest_classes)
from ptqlib.analysis.stats import (marked_differences, paired_gain_lines, paired_tests, significant_change_lines,
                                   significant_changes)
from ptqlib.study import settings
from ptqlib.study.settings import columns as config_columns
from ptqlib.study.store import ResultsStore, pack_preds, row_key

# --- the readers -------------------------------------------------------------------------------


def _quantize_record(w_bits=4, metric="mse", optimizer="grid", iters=None, avg=80.0, per_class=None):
    per_class = per_class or {"cat": avg - 10, "dog": avg + 10}
    config = {"model": "resnet20", "quant": {"w_bits": w_bits, "a_bits": w_bits, "metric": metric},
              "optimizer": optimizer}
    if iters:
        config["recon"] = {"iters": iters}
    worst = min(per_class, key=per_class.get)
    return {"config": config, "weights": None, "avg": avg, "per_class": per_class, "worst_class": worst,
            "worst_class_acc": per_class[worst], "fp_avg": 90.0, "fp_per_class": {"cat": 85.0, "dog": 95.0},
            "seconds": 60.0}


def _write(path, record):
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def test_quantize_reader_reads_a_run_and_names_the_file_it_cannot(tmp_path):
    run = files.read_quantize(_write(tmp_path / "r-w4.json", _quantize_record(optimizer="brecq", iters=500)))
    assert (run.label, run.bits, run.optimizer, run.iters, run.worst_class) == ("W4A4 mse", "W4A4", "brecq", 500, "cat")
    assert files.read_quantize(_write(tmp_path / "g.json", _quantize_record())).iters is None
    with pytest.raises(files.ResultFileError, match="missing.json does not exist"):
        files.read_quantize(tmp_path / "missing.json")
    with pytest.raises(files.ResultFileError, match="bad.json is not valid JSON"):
        files.read_quantize(_write(tmp_path / "bad.json", "{not json"))
    incomplete = {k: v for k, v in _quantize_record().items() if k != "fp_avg"}
    with pytest.raises(files.ResultFileError, match="incomplete.json lacks 'fp_avg'"):
        files.read_quantize(_write(tmp_path / "incomplete.json", incomplete))
    with pytest.raises(files.ResultFileError, match="list.json holds a JSON list"):
        files.read_quantize(_write(tmp_path / "list.json", "[1, 2]"))


def test_folder_readers_skip_empty_files_and_match_the_pattern(tmp_path):
    _write(tmp_path / "resnet20-a.json", _quantize_record())
    _write(tmp_path / "resnet32-a.json", _quantize_record())
    (tmp_path / "resnet20-running.json").write_text("")  # a run still writing its output
    assert [r.path.name for r in files.quantize_runs(tmp_path, "resnet20-*.json")] == ["resnet20-a.json"]


def test_robustness_reader_checks_its_rows(tmp_path):
    rows = [{"model": "fp", "seed": -1, "corruption": "none", "severity": 0, "class": "cat", "acc": 90.0},
            {"model": "quantized", "seed": 0, "corruption": "none", "severity": 0, "class": "cat", "acc": 80.0},
            {"model": "quantized", "seed": 1, "corruption": "none", "severity": 0, "class": "cat", "acc": 82.0}]
    record = {"config": {"model": "resnet20"}, "trials": 2, "seconds": 30.0, "rows": rows}
    run = files.read_robustness(_write(tmp_path / "rob.json", record))
    assert (run.model, run.trials, run.quantized_models, len(run.rows)) == ("resnet20", 2, 2, 3)
    bad = {**record, "rows": [{k: v for k, v in r.items() if k != "acc"} for r in rows]}
    with pytest.raises(files.ResultFileError, match="bad.json: its rows lack 'acc'"):
        files.read_robustness(_write(tmp_path / "bad.json", bad))


def _card(init="/x/resnet20.th", accuracy=90.123, per_class=None):
    return {"config": {"init": init, "epochs": 10, "peak_lr": 0.02}, "train_seconds": 600.0,
            "test_accuracy_before": 80.0, "test_accuracy": accuracy, "per_class": per_class or {"cat": 80.0, "dog": 95.0}}


def test_training_cards_and_their_tables(tmp_path):
    _write(tmp_path / "resnet20.json", _card())
    _write(tmp_path / "resnet32.json", _card(init=None, per_class={"cat": 90.0, "dog": 85.0}))
    cards = files.training_cards(tmp_path)
    assert list(cards) == ["resnet20", "resnet32"]
    recipe = training_recipe(cards)
    assert recipe.loc["resnet20", "start"] == "resnet20.th" and recipe.loc["resnet32", "start"] == "scratch"
    assert recipe.loc["resnet20", "minutes (CPU)"] == 10.0 and recipe.loc["resnet20", "test acc. after %"] == 90.12
    weakest = weakest_classes(card_per_class(cards))
    assert weakest.loc["resnet20"].tolist() == ["cat", 80.0] and weakest.loc["resnet32"].tolist() == ["dog", 85.0]
    with pytest.raises(files.ResultFileError, match="training card .*resnet56.json lacks"):
        files.read_training_card(_write(tmp_path / "resnet56.json", {"config": {}}))


def test_bench_runs_keep_bench_records_only(tmp_path):
    _write(tmp_path / "a-int8.json", {"model": "resnet20", "int8_eval_s": 1.0})
    _write(tmp_path / "b-recon.json", {"model": "resnet20", "reconstruction_s": 9.0})
    _write(tmp_path / "sweep.json", {"store": "s.sqlite", "ran": 3})  # what `ptq sweep` prints, kept beside
    assert [p.name for p, _ in files.bench_runs(tmp_path)] == ["a-int8.json", "b-recon.json"]
    assert [p.name for p, _ in files.bench_runs(tmp_path, has="int8_eval_s")] == ["a-int8.json"]
    _write(tmp_path / "c.json", "{truncated")
    with pytest.raises(files.ResultFileError, match="c.json is not valid JSON"):
        files.bench_runs(tmp_path)


def test_engines_bench_table_reads_through_the_bench_reader(tmp_path):
    from ptqlib.analysis.engines import bench_table

    _write(tmp_path / "a-int8.json", {"model": "resnet20", "w_bits": 4, "int8_eval_s": 1.0, "fp_eval_s": 2.0})
    _write(tmp_path / "b-recon.json", {"model": "resnet20", "reconstruction_s": 9.0})
    table = bench_table(tmp_path)
    assert table["file"].tolist() == ["a-int8.json"] and table["int8_eval_s"].tolist() == [1.0]


# --- tables of single runs -------------------------------------------------------------------------


def _runs(tmp_path, records):
    for i, r in enumerate(records):
        _write(tmp_path / f"run{i}.json", r)
    return files.quantize_runs(tmp_path)


def test_single_run_tables(tmp_path):
    runs = sort_runs(_runs(tmp_path, [
        _quantize_record(4, "mse", avg=80.0, per_class={"cat": 65.0, "dog": 95.0}),  # cat -20, dog 0
        _quantize_record(8, "mse", avg=89.98, per_class={"cat": 85.0, "dog": 94.96}),  # average drop 0.02
        _quantize_record(4, "kl", avg=85.0, per_class={"cat": 80.0, "dog": 90.0})]))
    assert [r.label for r in runs] == ["W8A8 mse", "W4A4 kl", "W4A4 mse"]
    drops = class_drops(runs)
    assert drops.loc["cat", "W4A4 mse"] == 20.0 and drops.loc["dog", "W4A4 kl"] == 5.0
    summary = run_summary(runs)
    assert summary.loc["W4A4 mse", "drop of the average"] == 10.0
    assert summary.loc["W4A4 mse", "largest class drop"] == 20.0 and summary.loc["W4A4 mse", "worst class"] == "cat"
    largest = largest_drops(runs)
    assert largest.loc["W4A4 mse", "class"] == "cat" and largest.loc["W4A4 mse", "ratio"] == pytest.approx(2.0)
    assert np.isnan(largest.loc["W8A8 mse", "ratio"])  # the average barely moves: no ratio
    lines = dict(zip(largest.index, drop_lines(largest)))
    assert lines["W4A4 mse"] == ("W4A4 mse: the average drops 10.00 points; class 'cat' drops 20.00 points "
                                 "(2.0x the average drop)")
    assert lines["W8A8 mse"].endswith("the largest class drop is 0.04 points (dog)")


def test_reconstruction_table_orders_bits_then_methods_and_compares_with_grid(tmp_path):
    runs = _runs(tmp_path, [_quantize_record(4, optimizer="qdrop", iters=2000, avg=84.0),
                            _quantize_record(2, optimizer="grid", avg=30.0),
                            _quantize_record(4, optimizer="grid", avg=80.0),
                            _quantize_record(4, optimizer="adaround", iters=2000, avg=82.5),
                            _quantize_record(2, optimizer="brecq", iters=2000, avg=60.0),
                            _quantize_record(3, optimizer="brecq", iters=2000, avg=70.0)])  # no grid at W3
    table = reconstruction_table(runs)
    assert list(zip(table["bits"], table["optimizer"])) == [
        ("W4A4", "grid"), ("W4A4", "adaround"), ("W4A4", "qdrop"), ("W3A3", "brecq"), ("W2A2", "grid"),
        ("W2A2", "brecq")]
    assert table["minutes"].iloc[0] == 1.0 and np.isnan(table["iterations"].iloc[0])
    gains = gains_over_grid(table)
    assert list(zip(gains["bits"], gains["optimizer"], gains["gain"])) == [
        ("W4A4", "adaround", 2.5), ("W4A4", "qdrop", 4.0), ("W2A2", "brecq", 30.0)]
    assert gains["grid %"].tolist() == [80.0, 80.0, 30.0]
    w4, w2 = gain_lines(gains)
    assert w4.startswith("W4A4: grid 80.00 %; adaround (2000 it.) +2.50 points, worst class ")
    assert "; qdrop (2000 it.) +4.00 points" in w4 and w2.startswith("W2A2: grid 30.00 %; brecq (2000 it.) +30.00")


# --- a synthetic store ---------------------------------------------------------------------------------

K, PER_CLASS = 4, 50
LABELS = np.repeat(np.arange(K), PER_CLASS)
NAMES = [f"c{k}" for k in range(K)]


def _store(tmp_path):
    store = ResultsStore(tmp_path / "trials.sqlite")
    fp = LABELS.copy()
    fp[::10] = (fp[::10] + 1) % K  # 90 % right
    ctx = SimpleNamespace(model_name="resnet20", dataset="toy", weights_fp="w", data_fp="d", weights_arg=None,
                          fp_avg=90.0, fp_per_class={n: 90.0 for n in NAMES}, fp_preds=torch.from_numpy(fp),
                          fp_ece=2.5, test=SimpleNamespace(labels=torch.from_numpy(LABELS)))
    store.add_fp(ctx)
    return store, fp


def _add(store, cell, preds, first_seed=0, ece=None):
    for seed, p in enumerate(preds, first_seed):
        cfg = cell.trial_config(seed)
        per_class = {n: 100 * float((p[LABELS == k] == k).mean()) for k, n in enumerate(NAMES)}
        store.add_trial({"key": row_key(cfg, "w", "d"), "config_key": cfg.key(), "config": json.dumps(cfg.to_dict()),
                         **config_columns(cfg), "avg": float(np.mean(list(per_class.values()))),
                         "worst_class": min(per_class, key=per_class.get), "worst_acc": min(per_class.values()),
                         "per_class": json.dumps(per_class), "calib_counts": "{}", "noise_images": 0,
                         "preds": pack_preds(torch.from_numpy(p)), "calib_s": 1.0, "eval_s": 2.0, "ece": ece,
                         "version": "test", "data_fp": "d", "weights_fp": "w", "created": 0.0})


def _preds(fp, wrong_of_class0: int, seeds: int, rng):
    """Predictions that keep the FP model's but get ``wrong_of_class0`` images of class 0 wrong,
    plus one random flip per seed."""
    out = []
    for _ in range(seeds):
        p = fp.copy()
        p[:wrong_of_class0] = 1
        i = rng.integers(PER_CLASS, len(LABELS))
        p[i] = (p[i] + 2) % K
        out.append(p)
    return out


def test_remedy_comparisons_follow_the_declared_remedies(tmp_path):
    rng = np.random.default_rng(0)
    store, fp = _store(tmp_path)
    cell = Cell(model="resnet20", dataset="toy")
    recon_cell = cell.replace(calib_size=1024, optimizer="brecq", iters=500)
    _add(store, cell, _preds(fp, 20, 6, rng))
    _add(store, cell.replace(sampling="stratified"), _preds(fp, 5, 6, rng))
    _add(store, recon_cell, _preds(fp, 10, 6, rng))  # class-weighted reconstruction: no trials
    comparisons = {c.factor: c for c in remedy_comparisons(store, cell, 5, recon_cell, 5)}
    assert set(comparisons) == {s.name for s, _ in settings.remedies()} == {"sampling", "class_weighting"}
    sampling, weighting = comparisons["sampling"], comparisons["class_weighting"]
    assert (sampling.base, sampling.alt, sampling.both) == ("random", "stratified", True)
    assert sampling.counts().to_dict() == {"random": 5, "stratified": 5}  # the first 5 seeds of 6
    assert sampling.title == "resnet20 W4A4 mse" and "BRECQ" in weighting.name and "BRECQ" in weighting.title
    worst = sampling.worst_class()
    # class 0: 23 of 50 wrong against 9 (the FP model gets every tenth image wrong)
    assert worst.loc["stratified", "worst_mean"] - worst.loc["random", "worst_mean"] == pytest.approx(28.0)
    paired = sampling.paired().set_index("class")
    assert paired.loc["c0", "mean_diff"] == pytest.approx(28.0) and paired.loc["c0", "pairs"] == 5
    assert (weighting.base, weighting.alt, weighting.both) == ("none", "dro", False)
    assert weighting.counts().to_dict() == {"none": 5}
    # the verdicts read the same trials: stratified sampling lifts class 0 (and the average) on every seed
    strat, weighted = remedy_verdicts(store, cell, 5, recon_cell, 5)
    assert (strat.verdict, strat.trials) == ("supported", 5) and strat.conclusion.startswith("Does stratified")
    assert weighted.verdict == "not enough data" and "BRECQ" in weighted.conclusion
    assert remedy_verdicts(store, cell.replace(w_bits=8), 5, recon_cell, 5)[0].verdict == "not enough data"
    # what a one-sided comparison lacks, and the command that runs it
    assert missing_lines(store, sampling) == []
    (base, alt) = missing_lines(store, weighting)
    assert base == "none: 5 trials (5 on cpu), median 1 s calibrating a trial"
    assert alt == f"dro: no trials of this cell; to run them: `{recon_cell.replace(class_weighting='dro').command(5)}`"
    assert sampling.count_line() == "trials per sampling (256 calibration images): random: 5, stratified: 5"
    assert weighting.count_line() == "trials per class_weighting (1024 calibration images, 500 iterations per unit): none: 5"


def test_family_summaries_per_model_and_bit_width_and_who_is_kept_above_chance(tmp_path):
    from ptqlib.analysis.aggregate import model_summary_lines, sorted_by
    from ptqlib.analysis.cells import bits_summaries, default_summaries, kept_above_chance

    rng = np.random.default_rng(3)
    store, fp = _store(tmp_path)
    cell = Cell(model="resnet20", dataset="toy")
    _add(store, cell, _preds(fp, 20, 4, rng))
    _add(store, cell.replace(w_bits=2, a_bits=8), [np.full(len(LABELS), 3)] * 3)  # everything predicted as c3
    summary = default_summaries(store, cell, ["resnet44", "resnet20"], 50)  # resnet44: no trials
    assert list(summary["model"]) == ["resnet20"] and list(summary["trials"]) == [4]
    assert summary["fp_avg"].iloc[0] == 90.0
    (line20,) = model_summary_lines(summary)
    assert line20.startswith("resnet20 (4 trials of the default cell): average ") and "'c0'" in line20
    bits = bits_summaries(store, cell, ["resnet20"], [(2, 8), (3, 8)], 50)
    assert list(bits["bits"]) == ["W2A8"] and bits["avg_mean"].iloc[0] == pytest.approx(25.0)
    assert bits_summaries(store, cell, ["resnet20"], [(3, 8)], 50).empty
    lines = kept_above_chance(store, cell, ["resnet20"], [(4, 4), (2, 8), (3, 8)], 50, outputs=K, images=PER_CLASS)
    assert len(lines) == 3 and lines[0].startswith("W4A4 resnet20: ") and lines[1].startswith("W2A8 resnet20: ")
    assert lines[-1] == "kept above chance: W4A4: resnet20; W2A8: none"  # one class right, three at zero
    assert kept_above_chance(store, cell, ["resnet20"], [(3, 8)], 50, K, PER_CLASS) == [
        "kept above chance: no bit-width has trials"]
    frame = pd.DataFrame({"model": ["b", "a", "b", "c"], "x": [2, 1, 1, 9]})
    assert sorted_by(frame, {"model": ["b", "a"], "x": [1, 2]}).values.tolist() == [["b", 1], ["b", 2], ["a", 1],
                                                                                     ["c", 9]]

def test_cell_predictions_churn_and_forgotten_images(tmp_path):
    rng = np.random.default_rng(1)
    store, fp = _store(tmp_path)
    cell = Cell(model="resnet20", dataset="toy")
    _add(store, cell, _preds(fp, 8, 4, rng), first_seed=3)
    _add(store, cell.replace(w_bits=8, a_bits=8), [fp.copy()])
    p = cell_predictions(store, cell, trials=3)
    assert p.seeds.tolist() == [3, 4, 5] and p.preds.shape == (3, len(LABELS))
    assert p.names == dict(enumerate(NAMES)) and p.classes == list(range(K))
    assert cell_predictions(store, cell.replace(w_bits=6, a_bits=6), 3) is None
    flips = churn_table(p.preds, p.fp_preds, p.labels)
    # 8 images of class 0 (right under FP but the first, which FP gets wrong) plus one random flip
    assert len(flips) == 3 and (flips["flip_rate"] >= 100 * 8 / len(LABELS)).all()
    forgotten = forgotten_images(p)
    assert forgotten.indices.tolist() == list(range(1, 8))  # image 0: FP already predicts 1
    assert forgotten.per_class.loc["c0", "forgotten"] == 7 and forgotten.per_class["forgotten"].sum() == 7
    assert forgotten.per_class.loc["c0", "forgotten %"] == pytest.approx(14.0)
    assert forgotten.shown(p.labels, p.classes, 2).tolist() == [1, 2]
    assert caption({0: "cat"}, 0, 0, 7, 0.5) == "cat\nFP: cat\nQ: label 7\n(50 % of trials)"
    assert forgotten_line(forgotten, 3) == ("7 test images (3.50 %) are forgotten: their modal prediction over 3 "
                                            "trials differs from the FP model's. Most: 'c0' (14.00 % of its images).")
    assert churn_line(flips) == (
        f"3 trials: on average {flips['flip_rate'].mean():.2f} % of test predictions change (std "
        f"{flips['flip_rate'].std():.2f}); {flips['lost'].mean():.2f} % go from right to wrong and "
        f"{flips['gained'].mean():.2f} % from wrong to right, so {flips['lost_share'].mean():.1f} % of the flips were "
        "right before.")
    nothing = forgotten_images(cell_predictions(store, cell.replace(w_bits=8, a_bits=8), 1))
    assert forgotten_line(nothing, 1).endswith("differs from the FP model's.")  # none forgotten: no class named


def test_latest_fp_reference_and_the_ece_table(tmp_path):
    rng = np.random.default_rng(2)
    store, fp = _store(tmp_path)
    cell = Cell(model="resnet20", dataset="toy")
    _add(store, cell, _preds(fp, 8, 3, rng), ece=4.0)
    _add(store, cell.replace(sampling="stratified"), _preds(fp, 8, 2, rng), ece=6.0)
    _add(store, cell.replace(bias_class="c1"), _preds(fp, 8, 2, rng))  # before ECE was stored
    ref = latest_fp_reference(store, "resnet20", "toy")
    assert ref["ece"] == 2.5 and ref["weights_fp"] == "w"
    assert latest_fp_reference(store, "resnet32", "toy") is None
    table = ece_table(store.trials(model="resnet20", dataset="toy"))
    assert table.index.names == ["sampling"]  # the only setting that varies among the recorded trials
    assert table.loc["random", "trials"] == 3 and table.loc["stratified", "mean"] == 6.0
    assert ece_line(store, cell, ref).startswith("ECE of the FP model: 2.50 %; of the default cell's quantized models "
                                                 "4.00 % (95 % bootstrap interval 4.00 to 4.00 over its 3 trials")
    assert ece_line(store, cell.replace(bias_class="c1"), ref).endswith("no trial of the default cell recorded it.")
    stored = store.trials()
    assert varying_settings(stored) == ["bias_class", "bias_p", "sampling"]  # bias_p: NULL without a bias class
    counts = inventory(stored).reset_index()
    assert counts.groupby("bias_class")["trials"].sum().to_dict() == {"-": 5, "c1": 2}
    assert counts.groupby("sampling")["trials"].sum().to_dict() == {"random": 5, "stratified": 2}
    assert counts["seconds_per_trial"].eq(3.0).all()


# --- corrupted inputs -------------------------------------------------------------------------------


def test_corruption_summary_names_the_largest_changes():
    rows = []
    for model, seed in (("fp", -1), ("quantized", 0), ("quantized", 1)):
        for corruption, severity in (("none", 0), ("jpeg", 1), ("contrast", 1)):
            for cls, fp_acc in (("cat", 80.0), ("dog", 90.0)):
                loss = 0.0 if model == "fp" else {"none": 1.0, "jpeg": 2.0, "contrast": 4.0}[corruption]
                loss += 6.0 if (model, corruption, cls) == ("quantized", "contrast", "dog") else 0.0
                rows.append({"model": model, "seed": seed, "corruption": corruption, "severity": severity,
                             "class": cls, "acc": fp_acc - loss + (seed if model == "quantized" else 0)})
    run = files.RobustnessRun(None, {"model": "toy"}, 2, 10.0, pd.DataFrame(rows))
    s = corruption_summary(run)
    assert s.quantized_models == 2
    assert s.clean == pytest.approx(-0.5)  # -1 point, and seed 1 adds 1
    assert s.lowest == ("contrast 1", pytest.approx(-6.5)) and s.highest == ("jpeg 1", pytest.approx(-1.5))
    assert s.class_loss == ("dog", "contrast 1", pytest.approx(-9.5))
    assert s.fp_average.loc[("jpeg", 1)] == 85.0
    assert s.change.index[-1] == AVERAGE and s.change_std.loc["cat", "clean"] == pytest.approx(np.sqrt(0.5))
    assert s.line(90.0).startswith("Computed in 1.5 min. Quantization changes the average by -0.50 points on clean "
                                   "images and by -6.50 (contrast 1) to -1.50 (jpeg 1)")
    assert "('dog', contrast 1)" in s.line(90.0) and s.line(90.0).endswith("none 0: 85.0.")


# --- aggregate and stats helpers -----------------------------------------------------------------------


def _tidy(levels: dict, seeds: int = 6) -> pd.DataFrame:
    """Per-class rows of ``seeds`` seeds per level: ``levels`` maps a level to each class's accuracy."""
    rows = [{"key": f"{lv}{s}", "seed": s, "opt": lv, "class": c, "acc": acc + (s % 2) * (1 if c == "b" else 0),
             "fp_acc": 90.0, "drop": 90.0 - acc}
            for lv, accs in levels.items() for s in range(seeds) for c, acc in zip("abc", accs)]
    return pd.DataFrame(rows)


def test_gains_against_a_base_level():
    frame = _tidy({"grid": (60.0, 80.0, 90.0), "x": (70.0, 78.0, 90.0), "y": (50.0, 85.0, 91.0)})
    gains = gains_against(frame, "opt", "grid")
    assert gains.index.tolist() == ["x", "y"]
    assert gains.loc["x", "classes_losing"] == 1 and gains.loc["x", "largest_loss_class"] == "b"
    assert gains.loc["x", "largest_loss"] == pytest.approx(-2.0)
    assert gains.loc["x", "average"] == pytest.approx(8 / 3) and gains.loc["x", "worst_class"] == pytest.approx(10.0)
    assert gains.loc["y", "worst_class"] == pytest.approx(-10.0) and gains.loc["y", "classes"] == 3
    assert gains_against(frame[frame["opt"] != "grid"], "opt", "grid").empty
    ordered = ordered_levels(frame, "opt", ["y", "grid", "missing", "x"])
    assert list(ordered["opt"].cat.categories) == ["y", "grid", "x"]


def test_paired_tests_and_their_significant_classes():
    rng = np.random.default_rng(3)
    base = _tidy({"grid": (60.0, 80.0, 90.0)}, seeds=10)
    other = _tidy({"x": (70.0, 70.0, 90.0)}, seeds=10)
    other["acc"] += rng.normal(0, 0.1, len(other))
    frame = pd.concat([base, other], ignore_index=True)
    tests = paired_tests(frame, "opt", "grid", ["grid", "x", "absent"])
    assert list(tests) == ["x"]
    worse, better = significant_changes(tests["x"])
    assert worse.index.tolist() == ["b"] and better.index.tolist() == ["a"]  # 10 pairs: p = 2 / 2**10, times 3 (Holm)
    marked = marked_differences(tests)
    assert marked.loc["a", "x"].startswith("+10.") and marked.loc["a", "x"].endswith("*")
    assert not marked.loc["c", "x"].endswith("*")
    (line,) = significant_change_lines(tests, "grid")
    assert line.startswith("x vs grid (10 seeds): significantly worse: b -10.0") and "better: a +10.0" in line
    (gain,) = paired_gain_lines(frame, "opt", "grid")
    assert gain.startswith("x vs grid (10 shared seeds, 95 % bootstrap intervals over them): average ")
    assert "1 of 3 classes lose mean accuracy (largest loss -10.0" in gain
