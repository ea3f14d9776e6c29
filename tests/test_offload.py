"""A trial split across machines (:mod:`ptqlib.study.offload`) is the trial one run computes."""
import sqlite3
from dataclasses import replace

import pytest
import torch

from ptqlib.quant.qmodel import QuantConfig, load_quant_state, quant_state
from ptqlib.quant.recon import ReconConfig
from ptqlib.study.calibset import CalibSpec
from ptqlib.study.offload import export_jobs, import_results, load_bundle, run_job
from ptqlib.study.settings import TrialConfig
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import run_sweep

from .conftest import randomize_bn
from .test_reconstruction import calibrated


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_data):
    from ptqlib.models import CifarResNet
    path = tmp_path_factory.mktemp("offload") / "w.pt"
    torch.save(randomize_bn(CifarResNet(3, num_classes=3), seed=5).state_dict(), path)
    recon = ReconConfig(iters=12, batch_size=4, act_init_size=8, variant="reference", act_iters=4)
    return TrialConfig("resnet20", f"folder:{tiny_data}", str(path), QuantConfig(4, 4), CalibSpec(16),
                       optimizer="brecq", recon=recon)


def test_quant_state_makes_another_copy_compute_the_same():
    _, a, images = calibrated(seed=1)
    _, b, _ = calibrated(seed=2)  # other weights, other ranges
    load_quant_state(b, quant_state(a))
    with torch.no_grad():
        assert torch.equal(a(images), b(images))
    with pytest.raises(ValueError, match="does not match"):
        load_quant_state(b, {k: v for k, v in quant_state(a).items() if "layer1" not in k})


def test_export_reconstruct_import_is_the_trial_one_run_computes(tmp_path, base):
    configs = [replace(base, seed=s, optimizer=m, recon=replace(base.recon, keep_prob=0.5))
               for s in (0, 1) for m in ("adaround", "qdrop")]
    bundle = export_jobs(configs, tmp_path / "jobs.pt")
    assert len(bundle["images"]) == 2  # one calibration draw per seed, shared by the methods
    bundle = load_bundle(tmp_path / "jobs.pt")
    results = [run_job(bundle, i, "cpu") for i in range(len(configs))]
    split = ResultsStore(tmp_path / "split.sqlite")
    assert import_results(results, split) == {"results": 4, "added": 4, "already_done": 0}
    assert import_results(results[:1], split)["already_done"] == 1  # nothing is stored twice
    whole = ResultsStore(tmp_path / "whole.sqlite")
    run_sweep(configs, whole, progress=False)
    cols = "key, avg, per_class, preds, device"
    rows = [sqlite3.connect(s.path).execute(f"SELECT {cols} FROM trials ORDER BY key").fetchall() for s in (split, whole)]
    assert rows[0] == rows[1] and len(rows[0]) == 4


def test_export_refuses_trials_without_reconstruction(tmp_path, base):
    with pytest.raises(ValueError, match="no reconstruction"):
        export_jobs([replace(base, optimizer="grid", recon=None)], tmp_path / "x.pt")


def test_import_refuses_results_from_other_data(tmp_path, base):
    export_jobs([base], tmp_path / "jobs.pt")
    res = run_job(load_bundle(tmp_path / "jobs.pt"), 0, "cpu")
    with pytest.raises(ValueError, match="other data or weights"):
        import_results([res | {"data_fp": "elsewhere"}], ResultsStore(tmp_path / "s.sqlite"))


def test_a_stopped_reconstruction_trial_resumes_from_its_last_unit(tmp_path, base, monkeypatch):
    from ptqlib.quant.recon import passes
    from ptqlib.study.sweep import context

    cfg = replace(base, optimizer="qdrop", seed=2)
    ctx = context(cfg)
    expected = ctx.run(cfg)
    real, calls = passes.reconstruct_unit, []

    def stopping(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(passes, "reconstruct_unit", stopping)
    with pytest.raises(KeyboardInterrupt):
        ctx.run(cfg)
    assert ctx.checkpoint_path(cfg).exists()
    calls.clear()
    monkeypatch.setattr(passes, "reconstruct_unit", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    resumed = ctx.run(cfg)
    assert len(calls) == 11 - 3 and not ctx.checkpoint_path(cfg).exists()  # 11 units: stem, 9 blocks, classifier
    assert torch.equal(resumed.preds, expected.preds) and resumed.per_class == expected.per_class
    assert ctx.earlier_seconds > 0 and resumed.calib_seconds > ctx.earlier_seconds  # the stopped run's units count


def test_a_trial_stopped_after_its_reconstruction_keeps_it_until_the_row_is_stored(tmp_path, base, monkeypatch):
    from ptqlib.quant.recon import passes
    from ptqlib.study import trial
    from ptqlib.study.sweep import context

    cfg = replace(base, optimizer="brecq", seed=4)  # two passes: the finished state is the second's
    ctx = context(cfg)
    expected = ctx.run(cfg)
    assert not ctx.checkpoint_path(cfg).exists()  # a plain run leaves nothing behind
    real_predict, calls = trial.predict_with_confidence, []

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trial, "predict_with_confidence", stopped)  # stopped during the evaluation
    store = ResultsStore(tmp_path / "s.sqlite")
    with pytest.raises(KeyboardInterrupt):
        run_sweep([cfg], store, progress=False)
    assert ctx.checkpoint_path(cfg).exists() and not store.existing_keys()
    monkeypatch.setattr(trial, "predict_with_confidence", real_predict)
    real_unit = passes.reconstruct_unit
    monkeypatch.setattr(passes, "reconstruct_unit", lambda *a, **k: (calls.append(a[0]), real_unit(*a, **k))[1])
    assert run_sweep([cfg], store, progress=False)["ran"] == 1
    assert calls == [] and not ctx.checkpoint_path(cfg).exists()  # restored, not reconstructed; then deleted
    stored = sqlite3.connect(store.path).execute("SELECT avg, calib_s FROM trials").fetchone()
    assert stored[0] == expected.avg and stored[1] > 0  # the restored units' seconds count


def test_the_offload_commands_export_run_and_import(tmp_path, base, capsys):
    import json

    from ptqlib.app.cli import main

    common = ["--data", base.dataset, "--weights", base.weights, "--w-bits", "4", "--a-bits", "4",
              "--calib-size", "16", "--iters", "6", "--variant", "reference"]
    store, bundle, results = tmp_path / "s.sqlite", tmp_path / "b.pt", tmp_path / "r.pt"
    assert main(["offload", "export", *common, "--optimizer", "adaround", "qdrop", "--trials", "2",
                 "--out", str(bundle), "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["jobs"] == 4
    assert main(["offload", "run", "--bundle", str(bundle), "--out", str(results)]) == 0
    assert len(torch.load(results, weights_only=True)) == 4
    assert main(["offload", "run", "--bundle", str(bundle), "--out", str(results)]) == 0  # nothing left to run
    assert len(torch.load(results, weights_only=True)) == 4
    assert main(["offload", "import", "--results", str(results), "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["added"] == 4
    assert main(["offload", "export", *common, "--optimizer", "adaround", "qdrop", "--trials", "2",
                 "--out", str(tmp_path / "again.pt"), "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["jobs"] == 0  # all stored already
    assert main(["offload", "run", "--bundle", str(bundle)]) == 2  # one clear line, no traceback
    assert "run needs --bundle FILE and --out FILE" in capsys.readouterr().err


def test_run_jobs_takes_one_methods_jobs_and_starts_none_past_its_deadline(tmp_path, base):
    import time

    from ptqlib.study.offload import run_jobs

    configs = [replace(base, seed=s, optimizer=m) for s in (0, 1) for m in ("adaround", "qdrop")]
    bundle = load_bundle(export_jobs(configs, tmp_path / "b.pt") and tmp_path / "b.pt")
    lines = []
    assert run_jobs(bundle, tmp_path / "late.pt", "cpu", deadline=time.time() - 1, log=lines.append) == []
    assert "not started" in lines[0] and not (tmp_path / "late.pt").exists()
    done = run_jobs(bundle, tmp_path / "r.pt", "cpu", optimizer="qdrop", log=lines.append)
    assert [r["config"]["optimizer"] for r in done] == ["qdrop", "qdrop"]
    assert len(run_jobs(bundle, tmp_path / "r.pt", "cpu", log=lines.append)) == 4  # the adaround jobs added
