import json
from types import SimpleNamespace

import torch

from ptqlib.conclusions import classes_drop_more, low_bits_hit_classes
from ptqlib.store import ResultsStore, config_columns, pack_preds, row_key
from ptqlib.study import Cell, level_cell


def _fill(store, cell, per_class_by_seed):
    """Write trials with given per-class accuracies (FP: 90 for every class)."""
    for seed, per_class in enumerate(per_class_by_seed):
        cfg = cell.trial_config()
        cfg = type(cfg)(**{**vars(cfg), "seed": seed})
        row = {"key": row_key(cfg, "w", "d"), "config_key": cfg.key(), "config": json.dumps(cfg.to_dict()),
               **config_columns(cfg), "avg": sum(per_class.values()) / len(per_class),
               "worst_class": min(per_class, key=per_class.get), "worst_acc": min(per_class.values()),
               "per_class": json.dumps(per_class), "calib_counts": "{}", "noise_images": 0,
               "preds": pack_preds(torch.zeros(3, dtype=torch.long)), "calib_s": 1.0, "eval_s": 1.0,
               "version": "test", "data_fp": "d", "weights_fp": "w", "created": 0.0}
        store.add_trial(row)


def _store_with_fp(tmp_path) -> ResultsStore:
    """A store with the FP reference of a toy 3-class model (90 % on every class)."""
    store = ResultsStore(tmp_path / "s.sqlite")
    ctx = SimpleNamespace(model_name="resnet20", dataset="toy", weights_fp="w", data_fp="d", weights_arg=None,
                          fp_avg=90.0, fp_per_class={"a": 90.0, "b": 90.0, "c": 90.0}, fp_preds=torch.zeros(3),
                          fp_ece=1.0, test=SimpleNamespace(labels=torch.tensor([0, 1, 2])))
    store.add_fp(ctx)
    return store


def test_verdicts_from_hand_made_trials(tmp_path):
    store = _store_with_fp(tmp_path)
    cell = Cell("resnet20", "toy")
    assert classes_drop_more(store, cell, 50).supported is None  # no trials yet
    # class a: drop 9 +- 3; b and c: drop 0 +- 0.5; the average drops 3 +- ~1
    _fill(store, cell, [{"a": 81.0 + d, "b": 90.0 + e, "c": 90.0 - e} for d, e in
                        ((-3, 0.5), (3, -0.5), (0, 0.5), (-3, -0.5), (3, 0.5), (0, 0))])
    v = classes_drop_more(store, cell, 50)
    assert v.supported is True and v.trials == 6 and "9.00 for 'a' (3.00x)" in v.evidence
    _fill(store, level_cell(cell, "w_bits", 8), [{"a": 89.0, "b": 89.5, "c": 89.5}] * 5)
    v = low_bits_hit_classes(store, cell, 50)
    assert v.supported is True and "W4A4: average drop 3.00, largest class drop 9.00 ('a')" in v.evidence
    assert v.evidence.endswith("at W4A4 the largest class drop is 3.00x the average's (rule: at least 2x)")


def test_average_robust_verdict_on_the_sizes_and_bias_size_given(tmp_path):
    from dataclasses import replace

    from ptqlib.conclusions import average_robust_classes_not

    store = _store_with_fp(tmp_path)
    cell = Cell("resnet20", "toy")
    jitter = (-1.0, 1.0, 0.0, -1.0, 1.0)

    def trials(a=0.0, b=0.0, c=0.0):  # shifts of each class against the default cell; the average is kept
        return [{"a": 81.0 + a + j, "b": 88.0 + b + j, "c": 88.0 + c + j} for j in jitter]

    _fill(store, cell, trials())
    for noise in (0.01, 0.05, 0.1):
        _fill(store, level_cell(cell, "noise", noise), trials(a=3.0, b=-3.0))
    for size in (32, 1000):
        _fill(store, level_cell(cell, "calib_size", size), trials())
    small = replace(cell, calib_size=128)
    _fill(store, small, trials())
    _fill(store, level_cell(small, "bias_class", "a"), trials(a=4.0, c=-4.0))
    v = average_robust_classes_not(store, cell, 50, ["a"], sizes=(32, 256, 1000), bias_size=128)
    assert v.supported is True and v.trials == 5 * 9
    assert v.evidence.startswith("largest change of the average 0.00 points vs 4.00 for a class")
    # each class varies by the jitter: sample std of (-1, 1, 0, -1, 1) = sqrt(4 / 4) = 1
    assert "median class std 1.00 at 32 images, 1.00 at 1000 (100%)" in v.evidence
    # the bias cells at the default size do not exist: not enough data, and it says which
    missing = average_robust_classes_not(store, cell, 50, ["a"], sizes=(32, 256, 1000))
    assert missing.supported is None and "bias_class" in missing.evidence


def test_remedy_verdict_needs_a_significant_steadier_gain_at_equal_average():
    import pandas as pd

    from ptqlib.conclusions import protects_worst_class

    def frame(level, worst_of_seed):
        return pd.DataFrame([{"key": f"{level}{s}", "seed": s, "class": c, "acc": a, "level": level}
                             for s in range(8) for c, a in zip("abc", (worst_of_seed(s), 90.0, 91.0))])

    base = frame("x", lambda s: 60.0 + 4 * (s % 3))
    better = frame("y", lambda s: 70.0 + s % 2)      # +9..+10 points every seed, smaller spread
    worse = frame("z", lambda s: 50.0 + 8 * (s % 3))
    v = protects_worst_class(pd.concat([base, better]), "level", "x", "y", "Remedy")
    assert v.supported is True and v.trials == 8 and "p = 0.0078" in v.evidence  # 8 positive pairs: 2 / 2**8
    assert protects_worst_class(pd.concat([base, worse]), "level", "x", "z", "Remedy").supported is False
    assert protects_worst_class(base, "level", "x", "y", "Remedy").supported is None


def test_reconstruction_verdict_names_each_method_and_its_trials(tmp_path):
    from ptqlib.conclusions import reconstruction_not_more_reliable

    store = _store_with_fp(tmp_path)
    cell = Cell("resnet20", "toy", iters=500)
    _fill(store, cell, [{"a": 80.0, "b": 86.0, "c": 86.0}] * 6)  # grid: average 84, worst 80
    _fill(store, level_cell(cell, "optimizer", "brecq"), [{"a": 84.0, "b": 88.0, "c": 85.0}] * 5)
    v = reconstruction_not_more_reliable(store, cell, 50)
    # average +1.67, worst class +4.00, class c loses 1 point: not more reliable per class
    assert v.supported is True
    assert v.evidence == "brecq (5 trials vs 6): average +1.67, worst class +4.00, 1 classes lose"
