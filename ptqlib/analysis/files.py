"""Readers of the JSON files the ``ptq`` commands write, one per kind of file.

=====================================  ==================================  ========================
file                                   written by                          reader
=====================================  ==================================  ========================
``results/quantize/*.json``,           ``ptq quantize ... --json``         :func:`read_quantize`,
``results/recon/*.json``                                                   :func:`quantize_runs`
``results/robustness/*.json``          ``ptq robustness --out``            :func:`read_robustness`
``weights/<dataset>/<model>.json``     ``ptq train`` (the training card)   :func:`read_training_card`,
                                                                           :func:`training_cards`
``results/bench/*.json``               ``ptq bench ... --json``            :func:`read_bench`,
                                                                           :func:`bench_runs`
=====================================  ==================================  ========================

Each reader checks the keys the report uses and raises :class:`ResultFileError`, which names the
file, when the file is missing, is not JSON or lacks one of them. The folder readers skip empty
files (a command whose output was redirected into the file and that has not finished yet).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


class ResultFileError(ValueError):
    """A result file that is missing, is not JSON, or lacks a key its reader needs."""


def read_json(path: str | Path, required: tuple[str, ...] = (), kind: str = "result file") -> dict:
    """The JSON object in ``path``, with each key of ``required`` present."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"{kind} {path} does not exist")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{kind} {path} is not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ResultFileError(f"{kind} {path} holds a JSON {type(record).__name__}, not an object")
    missing = [k for k in required if k not in record]
    if missing:
        raise ResultFileError(f"{kind} {path} lacks {', '.join(map(repr, missing))}")
    return record


def _files(folder: str | Path, pattern: str) -> list[Path]:
    return [p for p in sorted(Path(folder).glob(pattern)) if p.is_file() and p.stat().st_size]


# --- ptq quantize --json ----------------------------------------------------------------------

QUANTIZE_KEYS = ("config", "avg", "per_class", "worst_class", "worst_class_acc", "fp_avg", "fp_per_class", "seconds")


@dataclass(frozen=True)
class QuantizeRun:
    """One ``ptq quantize --json`` run: the trial's nested configuration (as its key hashes it),
    the quantized and FP accuracies (%, per class by class name) and the seconds it took."""

    path: Path
    config: dict
    avg: float
    per_class: dict[str, float]
    worst_class: str
    worst_class_acc: float
    fp_avg: float
    fp_per_class: dict[str, float]
    seconds: float

    @property
    def w_bits(self) -> int:
        return self.config["quant"]["w_bits"]

    @property
    def a_bits(self) -> int:
        return self.config["quant"]["a_bits"]

    @property
    def metric(self) -> str:
        return self.config["quant"]["metric"]

    @property
    def bits(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"

    @property
    def optimizer(self) -> str:
        return self.config.get("optimizer", "grid")

    @property
    def iters(self) -> int | None:
        """Reconstruction iterations per unit; None for grid search."""
        recon = self.config.get("recon")
        return recon["iters"] if recon else None

    @property
    def label(self) -> str:
        """``W4A4 mse``: bit-widths and range metric."""
        return f"{self.bits} {self.metric}"


def read_quantize(path: str | Path) -> QuantizeRun:
    record = read_json(path, QUANTIZE_KEYS, "quantize result")
    if "quant" not in record["config"]:
        raise ResultFileError(f"quantize result {path} has no 'quant' in its config")
    return QuantizeRun(Path(path), **{k: record[k] for k in QUANTIZE_KEYS})


def quantize_runs(folder: str | Path, pattern: str = "*.json") -> list[QuantizeRun]:
    """The ``ptq quantize --json`` runs in ``folder`` whose file names match ``pattern``."""
    return [read_quantize(p) for p in _files(folder, pattern)]


# --- ptq robustness ----------------------------------------------------------------------------

ROBUSTNESS_KEYS = ("config", "trials", "seconds", "rows")
ROBUSTNESS_COLUMNS = ("model", "seed", "corruption", "severity", "class", "acc")


@dataclass(frozen=True)
class RobustnessRun:
    """One ``ptq robustness`` file: the configuration of its quantized models, how many there
    are, the seconds it took, and one row per model, corruption, severity and class
    (``model`` is ``fp`` or ``quantized``; the FP model has seed -1)."""

    path: Path
    config: dict
    trials: int
    seconds: float
    rows: pd.DataFrame

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def quantized_models(self) -> int:
        return int(self.rows.loc[self.rows["model"] == "quantized", "seed"].nunique())


def read_robustness(path: str | Path) -> RobustnessRun:
    record = read_json(path, ROBUSTNESS_KEYS, "robustness result")
    rows = pd.DataFrame(record["rows"])
    missing = [c for c in ROBUSTNESS_COLUMNS if c not in rows.columns]
    if missing:
        raise ResultFileError(f"robustness result {path}: its rows lack {', '.join(map(repr, missing))}")
    return RobustnessRun(Path(path), record["config"], record["trials"], record["seconds"], rows)


# --- ptq train ---------------------------------------------------------------------------------

CARD_KEYS = ("config", "train_seconds", "test_accuracy_before", "test_accuracy", "per_class")


@dataclass(frozen=True)
class TrainingCard:
    """The card ``ptq train`` writes next to the weights it trained (``<weights>.json``): the
    training configuration (``init``, ``epochs``, ``peak_lr`` ...), seconds, test accuracy
    before and after (%) and the FP per-class accuracy after."""

    path: Path
    config: dict
    train_seconds: float
    test_accuracy_before: float | None
    test_accuracy: float
    per_class: dict[str, float]

    @property
    def name(self) -> str:
        return self.path.stem


def read_training_card(path: str | Path) -> TrainingCard:
    record = read_json(path, CARD_KEYS, "training card")
    return TrainingCard(Path(path), **{k: record[k] for k in CARD_KEYS})


def training_cards(folder: str | Path) -> dict[str, TrainingCard]:
    """The training cards in ``folder``, by name (the weights' file stem), in name order."""
    cards = [read_training_card(p) for p in _files(folder, "*.json")]
    return {c.name: c for c in cards}


# --- ptq bench ---------------------------------------------------------------------------------

def read_bench(path: str | Path) -> dict[str, Any]:
    """One ``ptq bench --json`` record. Its keys depend on what the run measured (the int8 engine:
    ``int8_eval_s`` ...; a reconstruction: ``reconstruction_s`` ...), so only ``model`` is required."""
    return read_json(path, ("model",), "bench result")


def bench_runs(folder: str | Path, has: str | None = None) -> list[tuple[Path, dict]]:
    """``(path, record)`` of the ``ptq bench --json`` records in ``folder``, those with the key
    ``has`` when it is given. A JSON object without ``model`` (the summary ``ptq sweep`` prints,
    kept beside the bench runs) is not a bench record and is left out; a file that is not a JSON
    object raises :class:`ResultFileError`."""
    runs = []
    for path in _files(folder, "*.json"):
        record = read_json(path, (), "bench result")
        if "model" in record and (has is None or has in record):
            runs.append((path, record))
    return runs
