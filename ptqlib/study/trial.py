"""One trial: quantize a model with one randomly drawn calibration set and evaluate it per
class on the whole test set.

:class:`TrialContext` holds what every trial of a model and dataset shares and computes it
once: the float model, the test split and the calibration pool in memory as uint8 tensors, and
the float model's predictions (cached on disk, keyed by the weights and the data).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ptqlib.quant.calibration import calibrate_activations, calibrate_weights
from ptqlib.study.calibset import CalibSet, CalibSpec, build_calibration_set
from ptqlib.data import Split, cache_dir, load_calibration_pool, load_split, save_atomic
from ptqlib.quant.evaluation import evaluated
from ptqlib.quant.integer import check_widths
from ptqlib.metrics import accuracy, expected_calibration_error, per_class_accuracy, predict_with_confidence
from ptqlib.models import CIFAR_DEPTHS, build_model, check_model, default_weights, model_info
from ptqlib.quant.qmodel import QuantConfig, QuantizedModel, quantize_model
from ptqlib.quant.recon import reconstruct
from ptqlib.study.settings import TrialConfig, int8_input_bits, row_key

DEVICE_ENV = "PTQ_DEVICE"  # the default device of trials when none is given (cpu when unset)


def default_device() -> str:
    """The device trials use when none is given: ``$PTQ_DEVICE``, else the CPU."""
    return os.environ.get(DEVICE_ENV) or "cpu"


def check_device(device: str) -> torch.device:
    """The torch device named ``device`` ("cpu", "cuda" or "cuda:N"), if this machine has it."""
    allowed = "cpu, cuda or cuda:N"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; choose {allowed}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; choose {allowed}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available here (torch.cuda.is_available() is False); "
                             "use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def full_float32_on_cuda() -> None:
    """No TF32 in CUDA convolutions and matmuls (a global setting): TF32 keeps ~10 mantissa bits,
    enough to move fake-quantized values across rounding boundaries."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work's end (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class TrialResult:
    config: TrialConfig
    avg: float
    per_class: dict[str, float]
    fp_avg: float
    fp_per_class: dict[str, float]
    preds: torch.Tensor
    calib_counts: dict[str, int]
    noise_images: int
    calib_seconds: float
    eval_seconds: float
    ece: float  # expected calibration error of the quantized model, in %

    @property
    def seconds(self) -> float:
        return self.calib_seconds + self.eval_seconds


def checkpoint_file(key: str) -> Path:
    """Where the reconstruction of the trial with row key ``key`` saves its progress."""
    return cache_dir() / "recon" / f"{key}.pt"


def forget_checkpoint(key: str) -> None:
    """Delete the reconstruction checkpoint of the trial with row key ``key``, once its result is stored."""
    checkpoint_file(key).unlink(missing_ok=True)


def resolve_weights(model: str, dataset: str, weights: str | None) -> str | None:
    """The checkpoint a trial uses: the one given, else the project's fine-tuned weights for
    ``dataset``, else the public pretrained ones (downloaded when needed)."""
    if weights is not None:
        return weights
    packaged = default_weights(model, dataset)
    if packaged is not None:
        return str(packaged)
    if model in CIFAR_DEPTHS:
        if dataset == "cifar10":
            return "download"
        raise ValueError(f"no default weights for {model} on {dataset!r}: pass --weights PATH "
                         f"(e.g. a checkpoint made by 'ptq train --model {model} --data {dataset}')")
    return None


class TrialContext:
    """The float model, data and float predictions shared by all trials of one model/dataset.

    Models run on ``device`` (default: ``$PTQ_DEVICE``, else the CPU); images stay on the CPU
    as uint8 and move to it batch by batch, and observers' histograms stay on the CPU. With
    ``progress``, the float pass, the range searches and the evaluation show progress bars (a
    reconstruction shows its own)."""

    def __init__(self, model: str, dataset: str, weights: str | None = None, device: str | None = None,
                 progress: bool = False) -> None:
        self.model_name, self.dataset, self.weights_arg = check_model(model), dataset, weights
        self.progress = progress
        self.device = check_device(device or default_device())
        if self.device.type == "cuda":
            full_float32_on_cuda()
        self.weights = resolve_weights(model, dataset, weights)
        size = model_info(model).input_size
        self.test: Split = load_split(dataset, "test", size)
        self.pool: Split = load_split(dataset, "train", size)
        self._pools: dict[tuple[str, int], Split] = {}
        self.earlier_seconds = 0.0  # see quantize
        num_classes = self.test.num_classes if model in CIFAR_DEPTHS else None
        self.model = build_model(model, self.weights, num_classes=num_classes,
                                 in_channels=self.test.images.shape[1]).to(self.device)
        self._check_label_space()
        self.classes = self.test.present_classes
        self.weights_fp = self.weights_fingerprint()
        test_fp = self.test.fingerprint()
        self.data_fp = f"{test_fp}-{self.pool.fingerprint()}"
        self.fp_preds, fp_confidence = self._fp_predictions(test_fp)
        self.fp_ece = expected_calibration_error(fp_confidence, self.fp_preds == self.test.labels)
        self.fp_per_class = self.named(per_class_accuracy(self.fp_preds, self.test.labels, self.classes))
        self.fp_avg = accuracy(self.fp_preds, self.test.labels)
        self._weight_qparams: dict[QuantConfig, list[tuple[str, torch.Tensor, torch.Tensor]]] = {}

    def _desc(self, what: str) -> str | None:
        """A progress bar's name for ``what``, or None without progress bars."""
        return f"{self.model_name}: {what}" if self.progress else None

    def pool_for(self, spec: CalibSpec) -> Split:
        """The images ``spec`` draws from: the train split, or another of the dataset's pools
        (loaded once; a pool that a large draw tops up is kept per size)."""
        if spec.pool == "train":
            return self.pool
        key = (spec.pool, spec.size)
        if key not in self._pools:
            self._pools[key] = load_calibration_pool(self.dataset, spec.pool, model_info(self.model_name).input_size,
                                                     size=spec.size)
        return self._pools[key]

    def _check_label_space(self) -> None:
        with torch.no_grad():
            out = self.model(self.test.float_images(slice(0, 1)).to(self.device))
        if out.shape[1] != self.test.num_classes:
            raise ValueError(f"model {self.model_name} predicts {out.shape[1]} classes but dataset "
                             f"{self.dataset!r} has {self.test.num_classes}")

    def weights_fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, t in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _fp_predictions(self, test_fp: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted labels and their confidence, cached per model, weights and test split."""
        key = f"{self.model_name}-{self.weights_fp}-{test_fp}-conf"
        path = cache_dir() / "fp" / f"{key}.pt"
        if path.exists():
            cached = torch.load(path, weights_only=True)
            return cached["preds"], cached["confidence"]
        preds, confidence = predict_with_confidence(self.model, self.test, desc=self._desc("float model"))
        save_atomic({"preds": preds, "confidence": confidence}, path)
        return preds, confidence

    def named(self, per_class: dict[int, float]) -> dict[str, float]:
        return {self.test.class_names[c]: a for c, a in per_class.items()}

    def calibration_set(self, cfg: TrialConfig) -> CalibSet:
        return build_calibration_set(self.pool_for(cfg.calib), cfg.calib, cfg.seed)

    def calibrated(self, cfg: TrialConfig, images: torch.Tensor) -> QuantizedModel:
        """The quantized model with its ranges set: by grid search on all calibration images, or,
        before reconstruction, activation ranges initialised on the first ``act_init_size``."""
        qmodel = self._with_weight_ranges(cfg.quant)
        desc = self._desc("activation ranges")
        if cfg.recon is None:
            calibrate_activations(qmodel, images, desc=desc)
        else:
            calibrate_activations(qmodel, images[:cfg.recon.act_init_size], search=cfg.recon.act_search, desc=desc)
        qmodel.set_quant_state(weights=True, acts=True)
        return qmodel

    def quantize(self, cfg: TrialConfig, images: torch.Tensor, labels: torch.Tensor | None = None,
                 keep_checkpoint: bool = False) -> QuantizedModel:
        """:meth:`calibrated`, then the reconstruction of ``cfg`` (if any) on all the images.
        ``earlier_seconds`` is then what the units restored from a checkpoint took in the run
        that reconstructed them (0 for a reconstruction that ran whole here). With
        ``keep_checkpoint`` the finished reconstruction stays in :meth:`checkpoint_path` (see
        :func:`ptqlib.quant.recon.reconstruct`) until :func:`forget_checkpoint` deletes it."""
        qmodel = self.calibrated(cfg, images)
        self.earlier_seconds = 0.0
        if cfg.recon is not None:
            reports = reconstruct(qmodel, images, cfg.optimizer, cfg.recon, seed=cfg.seed, labels=labels,
                                  checkpoint=self.checkpoint_path(cfg), keep_checkpoint=keep_checkpoint)
            self.earlier_seconds = sum(r.seconds for r in reports if r.resumed)
        return qmodel

    def checkpoint_path(self, cfg: TrialConfig) -> Path:
        """Where a reconstruction trial saves its progress after each unit, so that a stopped
        trial started again resumes there (see :func:`ptqlib.quant.recon.reconstruct`)."""
        return checkpoint_file(row_key(cfg, self.weights_fp, self.data_fp))

    def _with_weight_ranges(self, quant: QuantConfig) -> QuantizedModel:
        """A quantized copy of the model with its weight ranges set. They depend only on the
        weights and ``quant``, not on the calibration images, so they are searched once per
        setting and reused by its later trials (the MSE search is ~10 % of a Lite0 trial)."""
        qmodel = quantize_model(self.model, quant)
        layers = qmodel.quant_layers()
        if quant not in self._weight_qparams:
            calibrate_weights(qmodel, desc=self._desc("weight ranges"))
            self._weight_qparams[quant] = [(name, layer.weight_quantizer.scale.clone(),
                                            layer.weight_quantizer.zero_point.clone()) for name, layer in layers]
            return qmodel
        for (name, layer), (cached_name, scale, zero_point) in zip(layers, self._weight_qparams[quant], strict=True):
            assert name == cached_name, "the same setting quantizes the same layers"
            layer.weight_quantizer.set_qparams(scale, zero_point)
        return qmodel

    def run(self, cfg: TrialConfig, keep_checkpoint: bool = False) -> TrialResult:
        """The trial's result. With ``keep_checkpoint`` a reconstruction's finished state stays on
        disk until the caller has stored the result and calls :func:`forget_checkpoint`: a run
        stopped during the evaluation then restores it instead of reconstructing again."""
        self._check(cfg)
        t0 = time.perf_counter()
        calib = self.calibration_set(cfg)
        qmodel = self.quantize(cfg, calib.images, calib.labels, keep_checkpoint=keep_checkpoint)
        synchronize(self.device)
        # a resumed reconstruction counts the units an earlier run did, as they took then
        return self.evaluate(cfg, qmodel, calib, time.perf_counter() - t0 + self.earlier_seconds)

    def _check(self, cfg: TrialConfig) -> None:
        assert (cfg.model, cfg.dataset) == (self.model_name, self.dataset), "trial does not match its context"
        if cfg.engine == "int8" and self.device.type != "cpu":
            raise ValueError(f"engine 'int8' evaluates on the CPU's int8 kernels; device {str(self.device)!r} "
                             "is not supported, use device cpu")
        if cfg.engine == "int8":
            check_widths(cfg.quant.w_bits, int8_input_bits(cfg))

    def evaluate(self, cfg: TrialConfig, qmodel: QuantizedModel, calib: CalibSet, calib_seconds: float) -> TrialResult:
        """The trial's result from its quantized model, evaluated by the trial's engine
        (:mod:`ptqlib.quant.evaluation`; building the engine's model, e.g. the int8 conversion,
        counts as calibration time) and the seconds its quantization took."""
        self._check(cfg)
        t0 = time.perf_counter()
        qmodel, batch_size = evaluated(cfg.engine, qmodel)
        synchronize(self.device)
        t1 = time.perf_counter()
        preds, confidence = predict_with_confidence(qmodel, self.test, batch_size, desc=self._desc("evaluation"))
        t2 = time.perf_counter()  # predictions are back on the CPU: nothing left queued
        per_class = self.named(per_class_accuracy(preds, self.test.labels, self.classes))
        ece = expected_calibration_error(confidence, preds == self.test.labels)
        return TrialResult(cfg, accuracy(preds, self.test.labels), per_class, self.fp_avg, self.fp_per_class,
                           preds, calib.class_counts, calib.noise_images, calib_seconds + t1 - t0, t2 - t1, ece)
