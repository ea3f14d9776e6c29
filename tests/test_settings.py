"""Settings declared once: a new setting reaches the command line, the key, the store and its
frames; the committed store's keys and columns are what the declarations give; the store's
committed parts grow by the new rows only."""
import json
import sqlite3
from pathlib import Path

import pytest

from ptqlib.app.cli import main
from ptqlib.study import settings
from ptqlib.study.settings import Setting, TrialConfig
from ptqlib.study.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
PARTS = sorted((ROOT / "results" / "trials").glob("*.sqlite"))


TOY = Setting("keep_prob", float, 0.5, "QDrop's probability of keeping an activation quantized", "recon.keep_prob",
              factor=True, sql="REAL", stored_null=0.5)  # a ReconConfig field no setting declares


def test_a_declared_setting_round_trips_cli_trial_store_frame(tiny_data, tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    ResultsStore(path)  # a store written before the setting existed
    before = settings.trial_config(optimizer="qdrop", seed=3).key()
    settings.register(TOY)
    assert settings.trial_config(optimizer="qdrop", seed=3).key() == before  # declaring it changes no key
    try:
        _round_trip(path, tiny_data, tiny_checkpoint, capsys)
    finally:
        settings.unregister(TOY.name)
    assert "keep_prob" not in settings.NAMES


def _round_trip(path, tiny_data, tiny_checkpoint, capsys):
    assert "keep_prob" not in {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(trials)")}
    args = ["sweep", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint), "--calib-size", "8",
            "--optimizer", "qdrop", "--iters", "2", "--keep-prob", "0.4", "0.5", "--trials", "1", "--store", str(path)]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["ran"] == 2
    store = ResultsStore(path)  # migrated: the column was added
    changed, default = store.trials(keep_prob=0.4), store.trials(keep_prob=None)
    assert len(changed) == len(default) == 1
    assert json.loads(changed["config"].iloc[0])["recon"]["keep_prob"] == 0.4
    assert json.loads(default["config"].iloc[0])["recon"]["keep_prob"] == 0.5  # stored NULL, keyed as before
    frame = store.per_class(keep_prob=0.4)
    assert set(frame["keep_prob"]) == {0.4} and len(frame) == 3  # one row per class
    cfg = TrialConfig.from_dict(json.loads(changed["config"].iloc[0]))
    assert cfg.recon.keep_prob == 0.4 and settings.values(cfg)["keep_prob"] == 0.4
    assert settings.trial_config(**settings.values(cfg)).key() == changed["config_key"].iloc[0]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["ran"] == 0  # resumed: nothing to run


def test_a_cells_sweep_command_runs_that_cell():
    import argparse

    from ptqlib.study.settings import Cell

    cell = Cell(model="efficientnet_lite0", dataset="imagenet-val10", w_bits=6, a_bits=6, optimizer="brecq",
                calib_size=1000, iters=500, class_weighting="dro", bias_class=None)
    command = cell.command(50)
    assert command == ("ptq sweep --model efficientnet_lite0 --data imagenet-val10 --w-bits 6 --a-bits 6 "
                       "--optimizer brecq --iters 500 --calib-size 1000 --class-weighting dro --trials 50")
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, many=True)
    parser.add_argument("--trials", type=int)
    args = parser.parse_args(command.split()[2:])
    given, factors = settings.from_args(args)
    assert not factors and args.trials == 50
    assert settings.trial_config(**given) == cell.trial_config()  # the command runs the cell's trials
    assert Cell().command(3) == "ptq sweep --trials 3"
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        settings.sweep_command({"nope": 1}, 3)

def test_a_sweep_refuses_an_unknown_factor():
    with pytest.raises(ValueError, match="unknown setting 'bits'; choose from model, dataset"):
        settings.trial_config(bits=4)
    with pytest.raises(ValueError, match="setting 'seed' is declared already"):
        settings.register(settings.BY_NAME["seed"])


def test_one_default_for_each_setting():
    from ptqlib.quant.qmodel import QuantConfig
    from ptqlib.study.calibset import CalibSpec

    from ptqlib.data import default_pool

    cfg = TrialConfig()
    # the pool's default (None) is the dataset's own pool, resolved when the trial is built
    assert settings.values(cfg) == settings.defaults() | {"pool": default_pool(cfg.dataset)}
    assert (QuantConfig().w_bits, CalibSpec().size) == (settings.BY_NAME["w_bits"].default,
                                                        settings.BY_NAME["calib_size"].default)
    assert settings.Cell().trial_config() == cfg


@pytest.mark.skipif(not PARTS, reason="no committed store parts")
def test_every_committed_trial_keeps_its_key_and_columns(tmp_path):
    """The committed rows, read as they are: each stored configuration gives its stored key and,
    with its fingerprints, its stored row key (what ``ptq results check`` checks), and the flat
    settings rebuild the same trial and the same store columns."""
    (tmp_path / "trials").symlink_to(PARTS[0].parent)  # a fresh store built from the committed parts alone
    report = ResultsStore(tmp_path / "trials.sqlite").check_keys()
    assert (report["config_keys_differ"], report["row_keys_differ"], report["invalid"]) == ([], [], {})
    assert report["trials"] > 4000
    for part in PARTS:
        con = sqlite3.connect(f"{part.as_uri()}?immutable=1", uri=True)
        present = {r[1] for r in con.execute("PRAGMA table_info(trials)")}
        names = [n for n in settings.COLUMNS if n in present]  # a setting declared later: NULL in these rows
        rows = con.execute(f"SELECT config_key, config, {', '.join(names)} FROM trials").fetchall()
        con.close()
        for config_key, config, *stored in rows:
            cfg = TrialConfig.from_dict(json.loads(config))
            assert settings.trial_config(**settings.values(cfg)).key() == config_key
            columns = settings.columns(cfg)
            assert [columns[n] for n in names] == stored, part.name
            assert all(columns[n] is None for n in settings.COLUMNS if n not in present)


def _fake_trial(store: ResultsStore, key: str) -> None:
    store.add_trial({"key": key, "config_key": key, "config": "{}", "avg": 1.0, "worst_class": "a",
                     "worst_acc": 1.0, "per_class": "{}", "calib_counts": "{}", "noise_images": 0, "preds": b""})


def test_parts_hold_each_row_once_and_build_a_fresh_store(tmp_path):
    store = ResultsStore(tmp_path / "trials.sqlite")
    for k in ("a", "b"):
        _fake_trial(store, k)
    first = store.pack("first")
    assert first.name == "0001-first.sqlite" and store.pack("again") is None
    before = first.read_bytes()
    _fake_trial(store, "c")
    second = store.pack("second")
    assert second.name == "0002-second.sqlite"
    in_part = lambda p: {k for (k,) in sqlite3.connect(p).execute("SELECT key FROM trials")}  # noqa: E731
    assert in_part(first) == {"a", "b"} and in_part(second) == {"c"}  # the new rows only
    fresh = ResultsStore(tmp_path / "clone" / "trials.sqlite")
    assert fresh.existing_keys() == set()
    fresh.parts_dir.mkdir()
    for part in (first, second):
        (fresh.parts_dir / part.name).write_bytes(part.read_bytes())
    assert ResultsStore(fresh.path).existing_keys() == {"a", "b", "c"}  # loaded on opening
    assert ResultsStore(fresh.path).load_parts() == [] and first.read_bytes() == before  # once; parts unchanged
    assert ResultsStore(fresh.path).pack("nothing") is None
    with pytest.raises(ValueError, match="part name 'a b'"):
        store.pack("a b")


def test_key_check_finds_each_kind_of_stored_key_the_code_does_not_reproduce(tmp_path, capsys):
    store = ResultsStore(tmp_path / "k.sqlite")
    configs = [settings.trial_config(seed=s) for s in range(3)]
    configs.append(settings.trial_config(optimizer="qdrop", iters=20000, calib_size=1024))
    for cfg in configs:
        key = settings.row_key(cfg, "wfp", "dfp")
        store.add_trial({"key": key, "config_key": cfg.key(), "config": json.dumps(cfg.to_dict()),
                         "avg": 1.0, "worst_class": "a", "worst_acc": 1.0, "per_class": "{}", "calib_counts": "{}",
                         "noise_images": 0, "preds": b"", "weights_fp": "wfp", "data_fp": "dfp"})
    clean = store.check_keys()
    assert clean == {"trials": 4, "config_keys_differ": [], "row_keys_differ": [], "invalid": {}}
    assert main(["results", "check", "--store", str(store.path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"trials": 4, "config_keys_differ": 0, "row_keys_differ": 0,
                                                   "invalid": 0}
    first, second = sorted(store.existing_keys())[:2]
    with sqlite3.connect(store.path) as con:  # a configuration hashed differently; a row under other weights
        con.execute("UPDATE trials SET config_key = 'old' WHERE key = ?", (first,))
        con.execute("UPDATE trials SET weights_fp = 'other' WHERE key = ?", (second,))
    con.close()
    _fake_trial(store, "unreadable")
    found = store.check_keys()
    assert found["trials"] == 5 and found["config_keys_differ"] == [first] and found["row_keys_differ"] == [second]
    assert list(found["invalid"]) == ["unreadable"]
    assert main(["results", "check", "--store", str(store.path), "--verbose"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["row_keys_differ"] == [second] and "does not reproduce" in err
    assert main(["results", "check", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_merge_adds_the_rows_a_store_lacks(tmp_path):
    main_store, other = ResultsStore(tmp_path / "m.sqlite"), ResultsStore(tmp_path / "o.sqlite")
    _fake_trial(main_store, "a")
    for k in ("a", "b"):
        _fake_trial(other, k)
    assert main_store.merge(other.path) == 1 and main_store.existing_keys() == {"a", "b"}
    with pytest.raises(ValueError, match="does not exist"):
        main_store.merge(tmp_path / "missing.sqlite")


def test_the_calibration_pool_setting_keeps_earlier_keys_and_is_checked_before_any_work():
    imagenet = dict(model="efficientnet_lite0", dataset="imagenet-val10", w_bits=6, a_bits=6)
    train = settings.trial_config(**imagenet, pool="train")
    sample = settings.trial_config(**imagenet, pool="sample1000")
    assert "pool" not in train.to_dict()["calib"] and sample.to_dict()["calib"]["pool"] == "sample1000"
    assert train.key() == TrialConfig.from_dict(json.loads(json.dumps(train.to_dict()))).key() != sample.key()
    assert settings.columns(train)["pool"] is None and settings.columns(sample)["pool"] == "sample1000"
    with pytest.raises(ValueError, match="unknown calibration pool 'sample1000' for 'cifar10-jpeg'; choose one of train"):
        settings.trial_config(pool="sample1000")


def test_imagenet_trials_draw_from_the_1000_class_pool_unless_told_otherwise():
    from ptqlib.analysis.verdicts import design_for
    from ptqlib.study.settings import Cell, trial_config

    lite = dict(model="efficientnet_lite0", dataset="imagenet-val10", w_bits=6, a_bits=6)
    default, named = trial_config(**lite), trial_config(**lite, pool="sample1000")
    assert default.calib.pool == "sample1000" and default.key() == named.key()
    ten = trial_config(**lite, pool="train")  # the 10-class pool keeps the key it always had
    assert ten.calib.pool == "train" and "pool" not in ten.to_dict()["calib"]
    assert trial_config(model="resnet20", dataset="cifar10-jpeg").calib.pool == "train"
    assert Cell(model="efficientnet_lite0", dataset="imagenet-val10").where()["pool"] == "sample1000"
    assert Cell(model="resnet20", dataset="cifar10-jpeg").where()["pool"] is None  # stored NULL: train
    design = design_for("efficientnet_lite0", "imagenet-val10")
    assert design.cell.trial_config().calib.pool == "sample1000" and design.bias_pool == "train"
    assert design_for("efficientnet_lite0", "imagenet-val10", pool="train").cell.pool == "train"


def test_an_imagenet_designs_largest_size_is_its_pools():
    """The 10-class pool holds 1000 images; the 1000-class one is topped up to the 1024 its cells ran at."""
    from ptqlib.analysis.verdicts import design_for

    for pool, largest in ((None, 1024), ("sample1000", 1024), ("train", 1000), ("nette-train", 1000)):
        design = design_for("efficientnet_lite0", "imagenet-val10", pool=pool)
        assert (max(design.sizes), design.recon_size) == (largest, largest), pool
    assert max(design_for("resnet20", "cifar10-jpeg").sizes) == 1024
    for pool in (None, "train", "sample1000"):  # imagenet-sample1000's own train split is sample1000
        assert design_for("efficientnet_lite0", "imagenet-sample1000", pool=pool).recon_size == 1024, pool


def test_fp_weights_is_part_of_the_key_of_brecqs_reference_variant_only():
    from ptqlib.study.settings import trial_config

    cell = dict(model="resnet20", dataset="cifar10-jpeg", calib_size=1024, iters=500)
    kept = trial_config(**cell, optimizer="brecq", variant="reference")
    current = trial_config(**cell, optimizer="brecq", variant="reference", fp_weights="current")
    assert kept.recon.fp_weights == "kept" and kept.key() != current.key()
    assert "fp_weights" not in current.to_dict()["recon"]  # the stored trials' key: they ran "current"
    for other in (dict(optimizer="qdrop", variant="reference"), dict(optimizer="adaround", variant="reference"),
                  dict(optimizer="brecq")):
        a, b = (trial_config(**cell, **other, fp_weights=v) for v in ("kept", "current"))
        assert a.key() == b.key() and a.recon.fp_weights == "current"  # cannot matter: one key
    assert settings.columns(current)["fp_weights"] is None and settings.columns(kept)["fp_weights"] == "kept"
    with pytest.raises(ValueError, match="fp_weights"):
        trial_config(**cell, optimizer="brecq", variant="reference", fp_weights="float")
