"""The CUDA path, where a GPU exists (skipped elsewhere; this project's CI machine has none).

A trial on the GPU must run every step there (grid search, AdaRound, BRECQ with class
weights, QDrop), hand its predictions back on the CPU, and agree with the same trial on the
CPU up to floating-point differences.
"""
from dataclasses import replace

import pytest
import torch

from ptqlib.calibset import CalibSpec
from ptqlib.qmodel import QuantConfig
from ptqlib.reconstruction import ReconConfig
from ptqlib.store import ResultsStore
from ptqlib.sweep import run_sweep
from ptqlib.trial import TrialConfig, TrialContext

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_trials_on_cuda_agree_with_the_cpu(tiny_data, tiny_checkpoint, tmp_path, monkeypatch):
    data, weights = f"folder:{tiny_data}", str(tiny_checkpoint)
    cpu, gpu = TrialContext("resnet20", data, weights, device="cpu"), TrialContext("resnet20", data, weights,
                                                                                  device="cuda")
    assert next(gpu.model.parameters()).is_cuda and not torch.backends.cudnn.allow_tf32
    grid = TrialConfig("resnet20", data, weights, QuantConfig(4, 4), CalibSpec(16), seed=1)
    recon = ReconConfig(iters=20, batch_size=4, act_init_size=8)
    configs = [grid, replace(grid, optimizer="adaround", recon=recon),
               replace(grid, optimizer="brecq", recon=replace(recon, class_weighting="dro")),
               replace(grid, optimizer="qdrop", recon=recon)]
    for cfg in configs:
        on_cpu, on_gpu = cpu.run(cfg), gpu.run(cfg)
        assert on_gpu.preds.device.type == "cpu" and on_gpu.preds.shape == on_cpu.preds.shape
        agree = (on_gpu.preds == on_cpu.preds).double().mean().item()
        assert agree >= 0.9, f"{cfg.optimizer}: only {agree:.0%} of predictions agree between CPU and GPU"
    monkeypatch.setenv("PTQ_DEVICE", "cuda")
    store = ResultsStore(tmp_path / "gpu.sqlite")
    assert run_sweep([grid], store, progress=False)["ran"] == 1
    assert store.trials()["device"].tolist() == ["cuda"]
