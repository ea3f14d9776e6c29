"""The CUDA path, where a GPU exists (skipped elsewhere; this project's CI machine has none).

A quantized model must compute on the GPU what it computes on the CPU, reconstruction must
reach the same result there from the same start, and a trial on the GPU must run every step
there (grid search, AdaRound, BRECQ with class weights, QDrop) and hand its predictions back on
the CPU. Whole trials are not compared prediction by prediction: on a tiny random model a float
tie in the range search picks another clipping range, and an H200 run of that comparison saw
88 % of a W4A4 grid trial's predictions agree. Each comparison below starts from one calibration.
"""
import copy
from dataclasses import replace

import pytest
import torch

from ptqlib.study.calibset import CalibSpec
from ptqlib.quant.qmodel import QuantConfig
from ptqlib.quant.recon import ReconConfig, reconstruct
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import run_sweep
from ptqlib.study.settings import TrialConfig
from ptqlib.study.trial import TrialContext

from .test_reconstruction import calibrated

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = "cuda"


def _calibrated_on_cpu():
    _, qmodel, images = calibrated()  # a random ResNet-20, W4A4, 64 random images
    return qmodel, images


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.cpu() - ref).abs().mean() / ref.abs().mean()).item()


@torch.no_grad()
def test_a_calibrated_model_computes_the_same_on_cuda():
    qmodel, images = _calibrated_on_cpu()
    on_cpu = qmodel(images)
    on_gpu = copy.deepcopy(qmodel).to(DEVICE)(images.to(DEVICE))
    # float differences may move a value across a rounding boundary: one step, in a few places
    assert _relative_error(on_gpu, on_cpu) < 1e-3
    assert (on_gpu.argmax(1).cpu() == on_cpu.argmax(1)).float().mean() >= 0.95


# QDrop's element-wise drops come from each device's own generator (CPU and CUDA draw other
# streams from one seed), so its two runs differ by more than float error
@pytest.mark.parametrize("method, weighting, tol", [("adaround", None, 0.05), ("brecq", "dro", 0.05),
                                                    ("qdrop", None, 0.25)])
def test_reconstruction_on_cuda_reaches_the_cpu_result(method, weighting, tol):
    qmodel, images = _calibrated_on_cpu()
    labels = torch.arange(len(images)) % 10
    cfg = ReconConfig(iters=20, batch_size=8, act_init_size=32, class_weighting=weighting)
    gpu_model = copy.deepcopy(qmodel).to(DEVICE)
    on_cpu = reconstruct(qmodel, images, method, cfg, seed=1, labels=labels, progress=False)
    on_gpu = reconstruct(gpu_model, images, method, cfg, seed=1, labels=labels, progress=False)
    assert [r.name for r in on_gpu] == [r.name for r in on_cpu]
    for cpu_unit, gpu_unit in zip(on_cpu, on_gpu):
        assert gpu_unit.recon_loss == pytest.approx(cpu_unit.recon_loss, rel=tol), cpu_unit.name
    with torch.no_grad():
        assert _relative_error(gpu_model(images.to(DEVICE)), qmodel(images)) < tol


def test_trials_run_on_cuda(tiny_data, tiny_checkpoint, tmp_path, monkeypatch):
    data, weights = f"folder:{tiny_data}", str(tiny_checkpoint)
    gpu = TrialContext("resnet20", data, weights, device=DEVICE)
    assert next(gpu.model.parameters()).device.type == DEVICE and not torch.backends.cudnn.allow_tf32
    grid = TrialConfig("resnet20", data, weights, QuantConfig(4, 4), CalibSpec(16), seed=1)
    recon = ReconConfig(iters=20, batch_size=4, act_init_size=8)
    configs = [grid, replace(grid, optimizer="adaround", recon=recon),
               replace(grid, optimizer="brecq", recon=replace(recon, class_weighting="dro")),
               replace(grid, optimizer="qdrop", recon=recon)]
    for cfg in configs:
        result = gpu.run(cfg)
        assert result.preds.device.type == "cpu" and result.preds.shape == gpu.test.labels.shape
        assert 0 <= result.avg <= 100 and result.calib_seconds > 0
    monkeypatch.setenv("PTQ_DEVICE", DEVICE)
    store = ResultsStore(tmp_path / "gpu.sqlite")
    assert run_sweep([grid], store, progress=False)["ran"] == 1
    assert store.trials()["device"].tolist() == [DEVICE]


@pytest.mark.parametrize("method", ["adaround", "brecq", "qdrop"])
def test_graphed_steps_reach_the_eager_result(method, monkeypatch):
    """The CUDA-graph step (the default on a GPU) learns what the eager step learns, and its
    capture succeeds (a failed capture falls back to eager steps with a warning)."""
    import warnings

    from ptqlib.quant.recon import optimize

    qmodel, images = _calibrated_on_cpu()
    cfg = ReconConfig(iters=40, batch_size=8, act_init_size=32, variant="reference", act_iters=20)
    runs = {}
    for mode in ("eager", "auto"):
        monkeypatch.setattr(optimize, "STEP_MODE", mode)
        model = copy.deepcopy(qmodel).to(DEVICE)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[mode] = (model, reconstruct(model, images, method, cfg, seed=1, progress=False))
        assert not [w for w in caught if "capture failed" in str(w.message)], [str(w.message) for w in caught]
    (eager, eager_units), (graphed, graphed_units) = runs["eager"], runs["auto"]
    # QDrop's drops inside units come from another random stream in a graph (see _StaticSteps)
    tol = 0.25 if method == "qdrop" else 0.02
    for a, b in zip(eager_units, graphed_units):
        assert b.recon_loss == pytest.approx(a.recon_loss, rel=tol), a.name
    if method != "qdrop":
        same = [(la.weight == lb.weight).float().mean().item()
                for (_, la), (_, lb) in zip(eager.quant_layers(), graphed.quant_layers())]
        assert min(same) > 0.98


def test_offloaded_reconstruction_runs_on_cuda(tiny_data, tiny_checkpoint, tmp_path):
    from ptqlib.study.offload import export_jobs, import_results, load_bundle, run_job

    data, weights = f"folder:{tiny_data}", str(tiny_checkpoint)
    cfg = TrialConfig("resnet20", data, weights, QuantConfig(4, 4), CalibSpec(16), seed=1, optimizer="qdrop",
                      recon=ReconConfig(iters=20, batch_size=4, act_init_size=8, variant="reference"))
    export_jobs([cfg], tmp_path / "jobs.pt")
    result = run_job(load_bundle(tmp_path / "jobs.pt"), 0, DEVICE)
    assert result["device"] == DEVICE and all(t.device.type == "cpu" for t in result["state"].values())
    store = ResultsStore(tmp_path / "s.sqlite")
    assert import_results([result], store)["added"] == 1
    assert store.trials()["device"].tolist() == [DEVICE]
