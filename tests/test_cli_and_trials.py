import json
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from ptqlib.app.cli import main
from ptqlib.quant.qmodel import QuantConfig
from ptqlib.quant.recon import ReconConfig
from ptqlib.study.calibset import CalibSpec
from ptqlib.study.settings import TrialConfig
from ptqlib.study.trial import TrialContext, check_device


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tiny_args(tiny_data, tiny_checkpoint, *extra):
    return ("quantize", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint),
            "--calib-size", "16", *extra)


def test_quantize_json_reports_every_class(capsys, tiny_data, tiny_checkpoint):
    code, out, _ = run_cli(capsys, *tiny_args(tiny_data, tiny_checkpoint, "--json"))
    assert code == 0
    res = json.loads(out)
    assert set(res) >= {"avg", "per_class", "fp_avg", "fp_per_class", "seconds"}
    assert list(res["per_class"]) == ["ant", "bee", "cat"]
    # 8 test images per class: the average is the mean of the per-class accuracies
    assert res["avg"] == pytest.approx(sum(res["per_class"].values()) / 3)
    assert all(v * 8 / 100 == pytest.approx(round(v * 8 / 100)) for v in res["per_class"].values())


def test_quantize_table_shows_fp_and_drop(capsys, tiny_data, tiny_checkpoint):
    code, out, _ = run_cli(capsys, *tiny_args(tiny_data, tiny_checkpoint, "--w-bits", "8", "--a-bits", "8"))
    assert code == 0
    assert "W8A8 reference preset" in out and "average" in out and "bee" in out


@pytest.mark.parametrize("extra,message", [
    (("--w-bits", "0"), "w_bits must be an integer from 2 to 8, got 0"),
    (("--a-bits", "33"), "a_bits must be an integer from 2 to 8, got 33"),
    (("--metric", "entropy"), "unknown calibration metric 'entropy'; choose one of minmax, mse, kl"),
    (("--weight-metric", "kl"), "unknown weight metric 'kl'; choose one of minmax, mse, lp2.4, lp2.4-2d"),
    (("--optimizer", "qdrop", "--act-search", "tensor", "--metric", "kl"),
     "act_search 'tensor' scores candidate ranges on the raw values and cannot run metric 'kl'"),
    (("--preset", "fast"), "unknown preset 'fast'; choose one of reference, full"),
    (("--calib-size", "500"), "calibration size 500 is larger than the calibration pool (36 images); choose 1 to 36"),
    (("--model", "resnet99"), "unknown model 'resnet99'"),
])
def test_bad_input_is_one_clear_line(capsys, tiny_data, tiny_checkpoint, extra, message):
    code, out, err = run_cli(capsys, *tiny_args(tiny_data, tiny_checkpoint, *extra))
    assert code == 2 and out == ""
    # a check that needs the data (the pool's size) comes after its decoding bars, when not cached yet
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip() and not line.startswith("decoding ")]
    assert lines == [f"ptq: error: {lines[0].removeprefix('ptq: error: ')}"] and message in lines[0]
    assert "Traceback" not in err


def test_missing_data_and_corrupt_checkpoint_through_the_real_command(tmp_path, tiny_data, tiny_checkpoint):
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"\x00" * 64)
    for args, message in (
        (["--data", f"folder:{tmp_path / 'nowhere'}", "--weights", str(tiny_checkpoint)], "nowhere/test' does not exist"),
        (["--data", f"folder:{tiny_data}"], "no default weights for resnet20 on 'folder:"),
        (["--data", f"folder:{tiny_data}", "--weights", str(bad)], "bad.th' is not a readable PyTorch file"),
    ):
        proc = subprocess.run([sys.executable, "-m", "ptqlib.app.cli", "quantize", *args],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_same_seed_same_trial_other_seed_other_calibration(tiny_data, tiny_checkpoint):
    ctx = TrialContext("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint))
    cfg = TrialConfig("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint), QuantConfig(4, 4), CalibSpec(8), seed=3)
    a, b = ctx.run(cfg), ctx.run(cfg)
    assert torch.equal(a.preds, b.preds) and a.per_class == b.per_class
    assert sum(a.calib_counts.values()) == 8 and a.noise_images == 0
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg and cfg.key() != TrialConfig(**{**vars(cfg), "seed": 4}).key()


def test_a_context_with_progress_shows_each_long_step_and_one_without_shows_none(tiny_data, tiny_checkpoint,
                                                                                  monkeypatch, tmp_path, capsys):
    data, weights = f"folder:{tiny_data}", str(tiny_checkpoint)
    cfg = TrialConfig("resnet20", data, weights, QuantConfig(4, 4), CalibSpec(8), seed=0)
    steps = ("float model", "weight ranges", "activation ranges", "evaluation")
    for progress, cache in ((True, tmp_path / "a"), (False, tmp_path / "b")):
        monkeypatch.setenv("PTQ_CACHE", str(cache))  # a fresh cache: the float pass runs
        capsys.readouterr()
        TrialContext("resnet20", data, weights, progress=progress).run(cfg)
        err = capsys.readouterr().err
        assert all((f"resnet20: {step}" in err) == progress for step in steps), err[-500:]
    assert "resnet20: activation ranges: searching" not in err
    # the command line shows them on stderr; its --json output on stdout stays one JSON document
    code, out, err = run_cli(capsys, "quantize", "--data", data, "--weights", weights, "--calib-size", "8", "--json")
    assert code == 0 and json.loads(out)["config"]["model"] == "resnet20"
    assert "resnet20: activation ranges: searching" in err and "resnet20: evaluation" in err


def test_device_is_checked_and_taken_from_the_environment(tiny_data, tiny_checkpoint, monkeypatch, capsys):
    data, weights = f"folder:{tiny_data}", str(tiny_checkpoint)
    assert check_device("cpu") == torch.device("cpu")
    for bad, message in (("tpu", "unknown device 'tpu'; choose cpu, cuda or cuda:N"),
                         ("meta", "unsupported device 'meta'; choose cpu, cuda or cuda:N")):
        with pytest.raises(ValueError, match=re.escape(message)):
            check_device(bad)
        code, _, err = run_cli(capsys, "quantize", "--data", data, "--weights", weights, "--device", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        monkeypatch.setenv("PTQ_DEVICE", "cuda")
        with pytest.raises(ValueError, match=re.escape("device 'cuda' is not available here")):
            TrialContext("resnet20", data, weights)
        with pytest.raises(ValueError, match=re.escape("device 'cuda:1' does not exist")):
            with monkeypatch.context() as m:
                m.setattr(torch.cuda, "is_available", lambda: True)
                m.setattr(torch.cuda, "device_count", lambda: 1)
                assert check_device("cuda:0") == torch.device("cuda:0")
                code, _, err = run_cli(capsys, "bench", "--data", data, "--weights", weights, "--device", "cuda:0")
                assert code == 2 and "ptq bench times the CPU" in err
                check_device("cuda:1")
    monkeypatch.setenv("PTQ_DEVICE", "cpu")
    assert TrialContext("resnet20", data, weights).device == torch.device("cpu")
    code, out, _ = run_cli(capsys, "quantize", "--data", data, "--weights", weights, "--calib-size", "8",
                           "--device", "cpu", "--json")
    assert code == 0 and json.loads(out)["avg"] >= 0


def test_weight_ranges_searched_once_per_setting_give_the_same_trials(tiny_data, tiny_checkpoint):
    data, weights = f"folder:{tiny_data}", str(tiny_checkpoint)
    cfg = TrialConfig("resnet20", data, weights, QuantConfig(4, 4), CalibSpec(8), seed=1)
    warm = TrialContext("resnet20", data, weights)
    warm.run(replace(cfg, seed=0))  # searches the weight ranges of this setting
    reused, fresh = warm.run(cfg), TrialContext("resnet20", data, weights).run(cfg)
    assert torch.equal(reused.preds, fresh.preds) and reused.per_class == fresh.per_class
    assert reused.ece == fresh.ece
    other = warm.run(replace(cfg, quant=QuantConfig(8, 8)))  # another setting: its own ranges
    assert torch.equal(other.preds, TrialContext("resnet20", data, weights).run(other.config).preds)
    cached = warm._with_weight_ranges(cfg.quant)
    searched = TrialContext("resnet20", data, weights)._with_weight_ranges(cfg.quant)
    for (_, a), (_, b) in zip(cached.quant_layers(), searched.quant_layers(), strict=True):
        assert torch.equal(a.weight_quantizer.scale, b.weight_quantizer.scale)
        assert torch.equal(a.weight_quantizer.zero_point, b.weight_quantizer.zero_point)


def test_trial_config_is_validated():
    with pytest.raises(ValueError, match="calibration size must be a positive integer, got 0"):
        CalibSpec(size=0)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; choose one of grid, adaround, brecq, qdrop"):
        TrialConfig(optimizer="sgd")
    assert TrialConfig(optimizer="qdrop").recon.iters == 20_000 and TrialConfig(recon=ReconConfig()).recon is None
    assert "recon" not in TrialConfig().to_dict()  # grid-search keys do not depend on reconstruction
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        TrialConfig(seed=-1)


def test_bench_reports_the_ratios_it_measured(capsys, tiny_data, tiny_checkpoint):
    code, out, _ = run_cli(capsys, "bench", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint),
                           "--calib-size", "8", "--reps", "1", "--json")
    assert code == 0
    res = json.loads(out)
    for key in ("fp_eval_s", "quant_eval_s", "calib_s", "trial_s", "torch_ao_trial_s", "trials_per_hour"):
        assert res[key] > 0
    assert res["trial_s"] == pytest.approx(res["calib_s"] + res["quant_eval_s"], abs=2e-3)
    assert res["quant_eval_over_fp_eval"] == pytest.approx(res["quant_eval_s"] / res["fp_eval_s"], rel=0.1)


def test_quantize_with_reconstruction(capsys, tiny_data, tiny_checkpoint):
    code, out, _ = run_cli(capsys, *tiny_args(tiny_data, tiny_checkpoint, "--optimizer", "qdrop", "--iters", "5",
                                              "--json"))
    assert code == 0
    res = json.loads(out)
    assert res["config"]["optimizer"] == "qdrop" and res["config"]["recon"]["iters"] == 5


def test_reconstruction_bench_reports_units_and_the_projection(capsys, tiny_data, tiny_checkpoint):
    code, out, _ = run_cli(capsys, "bench", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint),
                           "--calib-size", "16", "--optimizer", "brecq", "--iters", "4", "--json")
    assert code == 0
    res = json.loads(out)
    assert len(res["units"]) == 11 and all(u["iters_per_s"] > 0 for u in res["units"])
    assert res["projected_trial_s_at_20000_iters"] > res["trial_s"]


def test_bias_class_none_means_balanced(capsys, tiny_data, tiny_checkpoint):
    code, out, _ = run_cli(capsys, *tiny_args(tiny_data, tiny_checkpoint, "--bias-class", "none", "--json"))
    assert code == 0 and json.loads(out)["config"]["calib"]["bias_class"] is None
    code, out, _ = run_cli(capsys, *tiny_args(tiny_data, tiny_checkpoint, "--bias-class", "bee", "--bias-p", "1.0", "--calib-size", "8",
                                              "--json"))
    assert code == 0 and json.loads(out)["calib_class_counts"] == {"ant": 0, "bee": 8, "cat": 0}


def test_sweep_gives_every_reconstruction_level_the_asked_iterations(capsys, tiny_data, tiny_checkpoint, tmp_path):
    from ptqlib.study.store import ResultsStore

    store = tmp_path / "s.sqlite"
    code, _, _ = run_cli(capsys, "sweep", "--data", f"folder:{tiny_data}", "--weights", str(tiny_checkpoint),
                         "--calib-size", "8", "--optimizer", "grid", "brecq", "--iters", "3", "--trials", "1",
                         "--store", str(store))
    assert code == 0
    rows = ResultsStore(store).trials()
    assert sorted(zip(rows["optimizer"], rows["iters"].fillna(0))) == [("brecq", 3), ("grid", 0)]


def test_a_trial_with_raw_value_range_search_reads_no_histogram_and_keeps_no_observed_values(
        tiny_data, tiny_checkpoint, monkeypatch):
    """``act_search="tensor"`` reaches the ranges set before reconstruction as well as those of the
    reconstruction (QDrop's reference variant sets both); afterwards no quantizer holds what it
    observed."""
    from ptqlib.quant import range_estimators as R

    class Forbidden(R.HistogramObserver):
        def __init__(self):
            raise AssertionError("a histogram search in a trial with act_search='tensor'")

    made = []

    class Spy(R.TensorObserver):
        def __init__(self):
            super().__init__()
            made.append(self)

    ctx = TrialContext("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint))
    recon = ReconConfig(iters=4, batch_size=4, variant="reference", act_init_size=8, act_search="tensor")
    cfg = TrialConfig("resnet20", f"folder:{tiny_data}", str(tiny_checkpoint), QuantConfig(4, 4), CalibSpec(8),
                      optimizer="qdrop", seed=1, recon=recon)
    monkeypatch.setitem(R.OBSERVERS, "histogram", Forbidden)
    monkeypatch.setitem(R.OBSERVERS, "tensor", Spy)
    calib = ctx.calibration_set(cfg)
    qmodel = ctx.quantize(cfg, calib.images, calib.labels)
    quantizers = qmodel.act_quantizers()
    assert len(made) == 2 * len(quantizers)  # before reconstruction, then QDrop's float-network ranges
    assert all(aq.observer is None and not aq.observing for aq in quantizers)


def test_the_reconstruction_benchmarks_setup_is_a_calibrated_reference_variant_trial(tiny_data, tiny_checkpoint):
    from ptqlib.app.bench import reference_reconstruction_setup

    cfg, qmodel, images = reference_reconstruction_setup("brecq", 8, dataset=f"folder:{tiny_data}", calib_size=16,
                                                         weights=str(tiny_checkpoint))
    assert (cfg.optimizer, cfg.recon.variant, cfg.recon.iters, cfg.recon.act_iters) == ("brecq", "reference", 8, 2)
    assert (cfg.quant.w_bits, cfg.quant.a_bits, len(images)) == (4, 4, 16)
    assert all(layer.weight_quantizer.calibrated for _, layer in qmodel.quant_layers())
