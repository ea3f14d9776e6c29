import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from ptqlib.analysis.aggregate import class_summary, heatmap_data, worst_class
from ptqlib.study.calibset import CalibSpec
from ptqlib.quant.qmodel import QuantConfig
from ptqlib.study.store import ResultsStore, pack_preds, unpack_preds
from ptqlib.study import sweep
from ptqlib.study.sweep import expand_grid, run_sweep
from ptqlib.study.settings import TrialConfig

from .conftest import randomize_bn


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory, tiny_data):
    from ptqlib.models import CifarResNet
    path = tmp_path_factory.mktemp("sweep") / "w.pt"
    torch.save(randomize_bn(CifarResNet(3, num_classes=3), seed=5).state_dict(), path)
    base = TrialConfig("resnet20", f"folder:{tiny_data}", str(path), QuantConfig(4, 4), CalibSpec(8))
    return base, path


def per_class_table(store):
    frame = store.trials().sort_values("key")
    return frame[["key", "avg"]].assign(per_class=frame["per_class"].map(lambda d: sorted(d.items())))


def test_preds_round_trip():
    preds = torch.tensor([0, 9, 999, 3])
    assert unpack_preds(pack_preds(preds)).tolist() == [0, 9, 999, 3]


def test_grid_rerun_computes_only_missing_trials(tmp_path, sweep_setup):
    base, _ = sweep_setup
    store = ResultsStore(tmp_path / "s.sqlite")
    configs = expand_grid(base, {"noise": [0.0, 0.25]}, range(2))
    assert [(c.calib.noise, c.seed) for c in configs] == [(0.0, 0), (0.0, 1), (0.25, 0), (0.25, 1)]
    assert run_sweep(configs[:3], store, progress=False)["ran"] == 3
    assert run_sweep(configs, store, progress=False) == {"requested": 4, "already_done": 3, "ran": 1}
    frame = store.trials(with_preds=True)
    assert len(frame) == 4 and set(frame["noise"]) == {0.0, 0.25}
    row = frame.iloc[0]
    assert len(unpack_preds(row["preds"])) == 24 and row["version"] and row["data_fp"] and row["weights_fp"]
    assert sum(row["calib_counts"].values()) + row["noise_images"] == 8
    assert len(store.fp_reference()) == 1
    tidy = store.per_class()
    assert len(tidy) == 12 and np.allclose(tidy["drop"], tidy["fp_acc"] - tidy["acc"])


SWEEP_CMD = ["-m", "ptqlib.app.cli", "sweep", "--calib-size", "8", "--noise", "0", "0.5", "--trials", "4",
             "--threads", "1"]


def _sweep_args(base, weights, store):
    return [sys.executable, *SWEEP_CMD, "--data", base.dataset, "--weights", str(weights), "--store", str(store)]


def _rows(path):
    if not path.exists():
        return 0
    con = sqlite3.connect(path, timeout=60)
    try:
        return con.execute("SELECT count(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        con.close()


def test_sigkill_at_random_points_loses_nothing_and_changes_nothing(tmp_path, sweep_setup):
    base, weights = sweep_setup
    clean, killed = tmp_path / "clean.sqlite", tmp_path / "killed.sqlite"
    env = {**os.environ, "PTQ_CACHE": str(tmp_path / "cache")}
    subprocess.run(_sweep_args(base, weights, clean), check=True, capture_output=True, env=env)
    clean_rows = ResultsStore(clean).trials()
    trial_s = float((clean_rows["calib_s"] + clean_rows["eval_s"]).mean())  # a kill lands within ~one trial
    rng = np.random.default_rng(0)
    kills = 0
    while True:
        # kill once the store holds one or two more rows, at a random moment of the next trial
        done = _rows(killed)
        target = min(done + int(rng.integers(1, 3)), 8) if done < 8 else 9  # 9: let it finish
        proc = subprocess.Popen(_sweep_args(base, weights, killed), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and _rows(killed) < target:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0, trial_s)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            break
        assert kills < 40, "the sweep does not make progress"
    assert kills >= 2, "the sweep was hardly interrupted: the test proved little"
    a, b = per_class_table(ResultsStore(clean)), per_class_table(ResultsStore(killed))
    assert len(b) == 8
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_dask_workers_give_the_same_rows(tmp_path, sweep_setup):
    pytest.importorskip("dask.distributed")
    base, _ = sweep_setup
    configs = expand_grid(base, {"metric": ["mse", "minmax"]}, range(2))
    one, two = ResultsStore(tmp_path / "one.sqlite"), ResultsStore(tmp_path / "two.sqlite")
    run_sweep(configs, one, progress=False)
    run_sweep(configs, two, workers=2, progress=False)
    pd.testing.assert_frame_equal(per_class_table(one).reset_index(drop=True),
                                  per_class_table(two).reset_index(drop=True))


def test_aggregation_against_hand_computed_numbers():
    rows = []
    for key, level, accs in (("t1", 0, (90, 50)), ("t2", 0, (80, 70)), ("t3", 1, (70, 40)), ("t4", 1, (90, 40))):
        for cls, acc in zip(("a", "b"), accs):
            rows.append({"key": key, "noise": level, "class": cls, "acc": acc, "fp_acc": 100.0, "drop": 100.0 - acc})
    tidy = pd.DataFrame(rows)
    s = class_summary(tidy, by=["noise"]).set_index(["noise", "class"])
    assert s.loc[(0, "a"), "mean"] == 85 and s.loc[(0, "a"), "std"] == pytest.approx(np.std([90, 80], ddof=1))
    assert s.loc[(0, "Average"), "mean"] == 72.5 and s.loc[(1, "b"), "max_drop"] == 60
    w = worst_class(tidy, by=["noise"]).set_index("noise")
    assert w.loc[0, "worst_mean"] == 60 and w.loc[1, "worst_min"] == 40 and w.loc[1, "most_often"] == "b"
    d_mean, d_std = heatmap_data(tidy, "noise", baseline=0)
    assert list(d_mean.index) == ["a", "b", "Average"]
    assert d_mean.loc["a", 1] == 80 - 85 and d_mean.loc["b", 1] == 40 - 60 and d_std.loc["b", 1] == -np.std([50, 70], ddof=1)
    with pytest.raises(ValueError, match="baseline level 5"):
        heatmap_data(tidy, "noise", baseline=5)


def test_store_keeps_labels_ece_and_predictions_for_churn(tmp_path, sweep_setup):
    from ptqlib.analysis.stats import churn

    base, _ = sweep_setup
    store = ResultsStore(tmp_path / "s.sqlite")
    run_sweep(expand_grid(base, {"sampling": ["random", "stratified"]}, range(2)), store, progress=False)
    trials, preds, fp_preds, labels = store.predictions(sampling="stratified")
    assert len(trials) == 2 and preds.shape == (2, 24) and fp_preds.shape == labels.shape == (24,)
    assert set(labels.tolist()) == {0, 1, 2}
    # the stored per-class accuracy is the one the stored predictions give
    row = trials.iloc[0]
    names = sorted(row["per_class"])
    for c, name in enumerate(names):
        assert row["per_class"][name] == pytest.approx(100 * np.mean(preds[0][labels == c] == c))
    assert 0 <= churn(preds[0], fp_preds, labels)["flip_rate"] <= 100
    assert trials["ece"].between(0, 100).all() and store.fp_reference()["ece"].between(0, 100).all()
    assert sorted(store.trials()["sampling"]) == ["random", "random", "stratified", "stratified"]
    assert (store.trials()["device"] == "cpu").all()  # where each trial ran
    counts = store.trials(sampling="stratified")["calib_counts"]
    assert all(sorted(c.values()) == [2, 3, 3] for c in counts)  # 8 images over 3 classes


def test_fill_ece_reruns_old_trials_and_refuses_ones_it_cannot_reproduce(tmp_path, sweep_setup, monkeypatch):
    base, _ = sweep_setup
    store = ResultsStore(tmp_path / "s.sqlite")
    configs = expand_grid(base, {}, range(3))
    run_sweep(configs, store, progress=False)
    before = store.trials().set_index("key")
    keys = list(before.sort_values("seed").index)  # the order the sweep reruns them
    # Seed 2's stored predictions are made to differ from the rerun's at every image (whatever the
    # random network predicts), so the rerun cannot reproduce them.
    stored = unpack_preds(store.trials(with_preds=True).set_index("key").loc[keys[2], "preds"])
    wrong = torch.from_numpy((stored + 1) % 3)
    with sqlite3.connect(store.path) as con:  # as a store from before ECE: seeds 0 and 2 without it
        con.executemany("UPDATE trials SET ece = NULL WHERE key = ?", [(keys[0],), (keys[2],)])
        con.execute("UPDATE trials SET preds = ? WHERE key = ?", (pack_preds(wrong), keys[2]))
    assert store.keys_without_ece() == {keys[0], keys[2]}
    assert run_sweep(configs, store, progress=False) == {"requested": 3, "already_done": 3, "ran": 0}
    with pytest.raises(ValueError, match=f"trial {keys[2]}: the rerun does not reproduce the stored predictions"):
        run_sweep(configs, store, progress=False, fill_ece=True)
    after = store.trials().set_index("key")
    assert store.keys_without_ece() == {keys[2]}  # the reproducible one got its ECE back, exactly
    assert after.loc[keys[0], "ece"] == before.loc[keys[0], "ece"] and len(after) == 3
    with monkeypatch.context() as m:  # another device (meta: no CUDA here), refused before any context
        m.setattr(sweep, "check_device", lambda device: torch.device("meta"))
        m.setattr(sweep, "context", lambda *a, **k: pytest.fail("a trial context was built"))
        with pytest.raises(ValueError, match="fill_ece reruns stored CPU trials .* device 'meta' cannot give"):
            run_sweep(configs, store, progress=False, fill_ece=True)
    assert store.keys_without_ece() == {keys[2]}


def test_stores_from_before_new_columns_are_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
    CREATE TABLE trials (key TEXT PRIMARY KEY, config_key TEXT NOT NULL, config TEXT NOT NULL,
        model TEXT, dataset TEXT, weights TEXT, preset TEXT, w_bits INTEGER, a_bits INTEGER, metric TEXT,
        weight_metric TEXT, optimizer TEXT, calib_size INTEGER, noise REAL, noise_kind TEXT, bias_class TEXT,
        bias_p REAL, seed INTEGER, avg REAL NOT NULL, worst_class TEXT NOT NULL, worst_acc REAL NOT NULL,
        per_class TEXT NOT NULL, calib_counts TEXT NOT NULL, noise_images INTEGER NOT NULL, preds BLOB NOT NULL,
        calib_s REAL, eval_s REAL, version TEXT, data_fp TEXT, weights_fp TEXT, created REAL);
    CREATE TABLE fp_reference (model TEXT, dataset TEXT, weights_fp TEXT, data_fp TEXT, weights TEXT, avg REAL,
        per_class TEXT, preds BLOB, created REAL, PRIMARY KEY (model, dataset, weights_fp, data_fp));
    INSERT INTO trials VALUES ('k', 'c', '{}', 'resnet20', 'd', NULL, 'reference', 4, 4, 'mse', 'mse', 'grid',
        8, 0.0, NULL, NULL, NULL, 0, 50.0, 'a', 40.0, '{"a": 40.0, "b": 60.0}', '{}', 0, x'00', 1.0, 1.0, '0',
        'dfp', 'wfp', 0.0);
    """)
    con.commit()
    con.close()
    frame = ResultsStore(path).trials(sampling="random", class_weighting=None, iters=None)
    assert frame["key"].tolist() == ["k"] and frame["ece"].isna().all() and frame["device"].isna().all()


def test_later_settings_leave_earlier_keys_alone_and_round_trip():
    from dataclasses import replace

    from ptqlib.quant.recon import ReconConfig

    plain = TrialConfig()
    assert "sampling" not in plain.to_dict()["calib"]  # stores written before stratified sampling keep their keys
    recon = TrialConfig(optimizer="brecq", recon=ReconConfig(iters=500))
    assert "class_weighting" not in recon.to_dict()["recon"] and "dro_eta" not in recon.to_dict()["recon"]
    stratified = replace(plain, calib=CalibSpec(256, sampling="stratified"))
    dro = replace(recon, recon=ReconConfig(iters=500, class_weighting="dro"))
    for cfg in (plain, recon, stratified, dro):
        assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert len({c.key() for c in (plain, recon, stratified, dro)}) == 4


def test_models_summaries_count_trials_per_model_and_cell(tmp_path, sweep_setup):
    from dataclasses import replace

    from ptqlib.analysis.cells import Cell, models_summaries

    base, path = sweep_setup
    store = ResultsStore(tmp_path / "s.sqlite")
    run_sweep([replace(base, seed=s) for s in (0, 1)], store, progress=False)
    cell = Cell(model="resnet20", dataset=base.dataset, weights=str(path), w_bits=4, a_bits=4, calib_size=8)
    summaries, counts = models_summaries(store, cell, ["resnet20", "resnet32"],
                                         {"calib_size": [8, 16], "metric": ["kl"]}, trials=5)
    assert list(summaries) == ["calib_size"]  # no model has a trial of the kl cell
    assert counts.loc["resnet20", "calib_size=8"] == 2 and counts.loc["resnet20", "calib_size=16"] == 0
    assert counts.loc["resnet32"].sum() == 0 and summaries["calib_size"]["trials"].tolist() == [2]
