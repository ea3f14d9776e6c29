"""The background queue (results/missing_trials.py) reads its cells from the pages' parameters."""
import importlib.util
from pathlib import Path

from ptqlib.analysis.verdicts import MIN_TRIALS
from ptqlib.app.report import section_parameters
from ptqlib.study.settings import trial_config

_spec = importlib.util.spec_from_file_location("missing_trials", Path(__file__).parents[1] / "results" / "missing_trials.py")
missing_trials = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(missing_trials)


def test_recon_queue_is_the_optimizer_pages_curve(tmp_path):
    from ptqlib.study.store import ResultsStore

    page = section_parameters("optimizer")
    queue = missing_trials.recon_queue(ResultsStore(tmp_path / "empty.sqlite"))  # nothing stored: every trial
    methods, n = page["curve_methods"], page["curve_trials"]
    assert len(queue) == len(methods) * len(page["curve_iters"]) * n
    # the counts tested whatever happens (the target and the next count) first, one method after the
    # other, each from the largest count down, seed by seed; then the counts tested only if those pass
    counts = sorted(page["curve_iters"], reverse=True)
    blocks = [(q["optimizer"], q["iters"]) for q in queue[::n]]
    assert blocks == [(m, c) for m in methods for c in counts[:2]] + [(m, c) for m in methods for c in counts[2:]]
    assert [q["seed"] for q in queue[:n]] == list(range(n))
    configs = [trial_config(**q) for q in queue]
    assert {c.recon.variant for c in configs} == {"reference"}


def test_recon_queue_leaves_out_counts_that_cannot_change_the_study_count(monkeypatch):
    import numpy as np
    import pandas as pd

    page = section_parameters("optimizer")
    first, *others = page["curve_methods"]
    target, trials = page["target_iters"], page["curve_trials"]
    below = sorted((c for c in page["curve_iters"] if c < target), reverse=True)

    def row(method, iters, n, diff=np.nan):
        return dict(method=method, iters=iters, trials=n, first_seeds=True, minutes=1.0, reference=target,
                    worst_diff=diff, diff_se=0.1, diff_df=18)

    # the first method is complete and decides on the largest count below the target (the next one is
    # 3 points off); the others have all their trials at the target and none below it
    curve = pd.DataFrame([row(first, target, trials), row(first, below[0], trials, 0.0),
                          row(first, below[1], trials, 3.0), *[row(m, target, trials) for m in others]])
    monkeypatch.setattr(missing_trials, "iteration_curve", lambda *a, **k: curve)
    queue = missing_trials.recon_queue(None)
    # each other method needs only the largest count below the target: failing there would leave it at the
    # target, above the first method's count; passing or failing below it cannot change the study's count
    assert {(q["optimizer"], q["iters"]) for q in queue} == {(m, below[0]) for m in others}
    assert len(queue) == len(others) * trials


def test_family_queue_covers_every_cell_of_the_family_page():
    page = section_parameters("family")
    queue = missing_trials.family_queue()
    cells = {tuple(sorted((k, v) for k, v in q.items() if k not in ("model", "seed"))) for q in queue}
    levels = 1 + sum(len(v) - 1 for v in page["factors"].values()) + len(page["mixed_bits"])
    assert len(cells) == levels == 11
    assert {q["model"] for q in queue} == set(page["models"])
    for model, stop in missing_trials.FAMILY_SEEDS.items():
        assert {q["seed"] for q in queue if q["model"] == model} == set(range(stop))
    assert all(trial_config(**q).calib.pool == "sample1000" for q in queue[:levels])


def test_a_claim_is_held_while_open_free_again_once_its_holder_ends_and_final_once_done(tmp_path):
    held = missing_trials.claim(tmp_path, "k1")
    assert held is not None
    assert missing_trials.claim(tmp_path, "k1") is None  # another lane finds it held
    held.close()  # its lane ended before storing the trial: the lock goes with it
    again = missing_trials.claim(tmp_path, "k1")
    assert again is not None
    missing_trials.finish(again)
    assert (tmp_path / "k1").read_text() == "done"
    assert missing_trials.claim(tmp_path, "k1") is None  # done: no lane runs it again
    (tmp_path / "k2").write_text("4242")  # a file without a lock holds nothing
    assert missing_trials.claim(tmp_path, "k2") is not None


def test_rerun_queue_waits_for_the_count_then_runs_every_cell_beside_grid_search(monkeypatch):
    import pandas as pd

    from ptqlib.app.report import StudyCount, study_setup

    page = section_parameters("optimizer")
    cell, methods = study_setup(page)
    monkeypatch.setattr(missing_trials, "optimizer_study",
                        lambda store: StudyCount(float("nan"), "none yet", pd.DataFrame(), cell, methods))
    assert missing_trials.rerun_queue(None) == []
    per_seed = 1 + len(methods)
    others = page["rerun_trials"] * len(page["rerun_cells"])
    for minutes, seeds in ((0.1, page["reference_trials"]), (600.0, page["rerun_trials"])):  # quick, then costly
        curve = pd.DataFrame({"method": methods, "iters": 2000, "minutes": minutes, "trials": 10})
        monkeypatch.setattr(missing_trials, "optimizer_study",
                            lambda store: StudyCount(2000.0, "study-wide count: 2000", curve, cell, methods))
        queue = missing_trials.rerun_queue(None)
        assert len(queue) == per_seed * (seeds + others)
    assert [q["optimizer"] for q in queue[:per_seed]] == ["grid", *methods] and {q["seed"] for q in queue[:per_seed]} == {0}
    first = queue[:per_seed * MIN_TRIALS * (1 + len(page["rerun_cells"]))]  # every cell's first seeds come first
    assert {q["seed"] for q in first} == set(range(MIN_TRIALS))
    assert {(q["model"], q["w_bits"]) for q in first} == {("resnet20", 4), ("resnet20", 2), ("resnet56", 4)}
    assert all(q["iters"] == 2000 and q["variant"] == "reference" for q in queue)
    assert {(q["model"], q["w_bits"]) for q in queue} == {("resnet20", 4), ("resnet20", 2), ("resnet56", 4)}
    configs = [trial_config(**q) for q in queue]  # every entry is a valid trial
    assert {c.recon.iters for c in configs if c.recon} == {2000}


def test_the_queues_that_read_the_store_are_shared_by_claims_only(monkeypatch, tmp_path):
    import pytest

    for queue in ("recon", "rerun"):  # --list: without the check it would only list, and the test fail
        monkeypatch.setattr("sys.argv", ["missing_trials.py", queue, "--store", str(tmp_path / "side.sqlite"), "--main",
                                         str(tmp_path / "main.sqlite"), "--lane", "1", "--lanes", "2", "--list"])
        with pytest.raises(SystemExit, match=f"the {queue} queue depends on the main store .* --claims DIR"):
            missing_trials.main()


def test_models_must_name_models_of_the_queue(monkeypatch, tmp_path):
    import pytest

    held = sorted({q["model"] for q in missing_trials.family_queue()})
    monkeypatch.setattr("sys.argv", ["missing_trials.py", "family", "--store", str(tmp_path / "side.sqlite"), "--main",
                                     str(tmp_path / "main.sqlite"), "--models", "resnet999", held[0], "--list"])
    with pytest.raises(SystemExit, match=f"^--models: resnet999 not in the family queue; it holds {', '.join(held)}$"):
        missing_trials.main()


def test_a_trial_is_expected_to_take_what_the_latest_cpu_trials_of_its_setting_took(tmp_path):
    import json
    from dataclasses import replace

    import pytest

    from ptqlib.study.settings import columns, row_key
    from ptqlib.study.store import ResultsStore

    cfg = trial_config(model="resnet20", optimizer="adaround", iters=20000, calib_size=1024, seed=0)
    other = trial_config(model="resnet20", optimizer="brecq", iters=20000, calib_size=1024, seed=0)
    main, side = ResultsStore(tmp_path / "main.sqlite"), ResultsStore(tmp_path / "side.sqlite")

    def add(store, c, seed, seconds, created, device="cpu"):
        c = replace(c, seed=seed)
        store.add_trial({"key": row_key(c, "w", "d"), "config_key": c.key(), "config": json.dumps(c.to_dict()),
                         **columns(c), "avg": 90.0, "worst_class": "a", "worst_acc": 80.0, "per_class": "{}",
                         "calib_counts": "{}", "noise_images": 0, "preds": b"", "calib_s": seconds - 10.0,
                         "eval_s": 10.0, "version": "test", "data_fp": "d", "weights_fp": "w",
                         "created": created, "device": device})

    assert missing_trials.expected_seconds(cfg, (main, side)) == 0.0  # nothing to estimate from
    for seed, (seconds, created) in enumerate([(4000, 1), (3600, 2), (3800, 3), (1400, 4)]):
        add(main, cfg, seed, seconds, created)  # slow trials under a heavier load, then one quick one
    add(main, cfg, 9, 60, 10, device="cuda")  # a GPU trial says nothing about this CPU
    add(main, other, 0, 100, 11)  # nor does another setting
    # the longest of the last three CPU trials of the setting (3600, 3800, 1400), not of all four
    assert missing_trials.expected_seconds(cfg, (main, side)) == 3800.0
    assert missing_trials.expected_seconds(cfg, (main,), recent=10) == 4000.0
    add(side, cfg, 5, 1300, 20)  # the lane's own trials, under the load it runs under now
    add(side, cfg, 6, 1200, 21)
    assert missing_trials.expected_seconds(cfg, (main, side)) == 1400.0  # (1400, 1300, 1200)
    with pytest.raises(ValueError, match="recent must be at least 1, got 0"):
        missing_trials.expected_seconds(cfg, (main, side), recent=0)


def test_a_stopped_trial_is_expected_to_take_what_its_checkpointed_units_leave(tmp_path, monkeypatch):
    import torch

    from ptqlib.study.trial import checkpoint_file

    monkeypatch.setenv("PTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(missing_trials, "expected_seconds", lambda cfg, stores: 3000.0)
    cfg = trial_config(model="resnet20", optimizer="adaround", iters=20000, calib_size=1024, seed=0)
    assert missing_trials.seconds_left(cfg, "k1", ()) == 3000.0  # no checkpoint: the whole trial
    checkpoint_file("k1").parent.mkdir(parents=True)
    torch.save({"reports": [{"seconds": 700.0}, {"seconds": 500.0}]}, checkpoint_file("k1"))
    assert missing_trials.seconds_left(cfg, "k1", ()) == 1800.0  # resumes after its two units
    assert missing_trials.seconds_left(cfg, "k2", ()) == 3000.0  # another trial's checkpoint is not its own
    torch.save({"reports": [{"seconds": 3500.0}]}, checkpoint_file("k1"))  # units ran slower than estimated
    assert missing_trials.seconds_left(cfg, "k1", ()) == 0.0
