"""What quantization changes below the accuracy: prediction churn, forgotten images and accuracy
on corrupted inputs (the expected calibration error per setting: :func:`ptqlib.analysis.aggregate.ece_table`).

- :func:`cell_predictions`: the stored predictions of a cell's first seeds;
- :func:`churn_table`: per trial, how many test predictions change against the FP model;
- :func:`forgotten_images`: the images whose modal prediction over the trials differs from the
  FP model's (quantization-identified exemplars, after Hooker et al. 2019), counted per class;
- :func:`corruption_summary`: a ``ptq robustness`` file as changes from FP to quantized.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptqlib.analysis.aggregate import AVERAGE
from ptqlib.analysis.cells import LevelPredictions, factor_predictions
from ptqlib.analysis.files import RobustnessRun
from ptqlib.analysis.robustness import quantization_change
from ptqlib.analysis.stats import bootstrap_mean_ci, churn, modal_predictions
from ptqlib.data import class_label
from ptqlib.study.settings import Cell
from ptqlib.study.store import ResultsStore

# --- predictions of one cell --------------------------------------------------------------------


@dataclass(frozen=True)
class CellPredictions:
    """The predictions of a cell's first seeds ``[trials, images]`` (in seed order), the FP
    model's predictions and the test labels ``[images]``, and the name of each label present."""

    seeds: np.ndarray
    preds: np.ndarray
    fp_preds: np.ndarray
    labels: np.ndarray
    names: dict[int, str]  # label -> class name, for the labels of the test images

    @property
    def classes(self) -> list[int]:
        """The labels of the test images, in label order."""
        return list(self.names)


def cell_predictions(store: ResultsStore, cell: Cell, trials: int) -> CellPredictions | None:
    """The predictions of the first ``trials`` seeds of ``cell`` (on the weights and data of its
    model's most recent FP reference), or None when it has no trials."""
    lp: LevelPredictions = factor_predictions(store, cell, "noise", [cell.noise], trials)  # the cell itself
    if not lp.preds:
        return None
    (preds,), (seeds,) = lp.preds.values(), lp.seeds.values()
    present = np.unique(lp.labels)  # stored per-class results follow the label order of the present classes
    return CellPredictions(seeds, preds, lp.fp_preds, lp.labels, dict(zip(present.tolist(), lp.class_names)))


# --- churn ------------------------------------------------------------------------------------------


def churn_table(preds: np.ndarray, fp_preds: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """One row per trial (``preds`` is ``[trials, images]``): :func:`~ptqlib.analysis.stats.churn`."""
    return pd.DataFrame([churn(p, fp_preds, labels) for p in preds],
                        columns=["flip_rate", "lost", "gained", "lost_share"])


def churn_line(flips: pd.DataFrame) -> str:
    """A :func:`churn_table` in words: the mean share of predictions that change (and its std over
    the trials), of those going from right to wrong and from wrong to right, and the share of
    the flips that were right before."""
    return (f"{len(flips)} trials: on average {flips['flip_rate'].mean():.2f} % of test predictions change "
            f"(std {flips['flip_rate'].std():.2f}); {flips['lost'].mean():.2f} % go from right to wrong and "
            f"{flips['gained'].mean():.2f} % from wrong to right, so {flips['lost_share'].mean():.1f} % of the "
            "flips were right before.")


def ece_line(store: ResultsStore, cell: Cell, fp: pd.Series, what: str = "the default cell") -> str:
    """The expected calibration error of the FP model (``fp``, a row of
    :func:`~ptqlib.analysis.runs.latest_fp_reference`) and the mean over the trials of ``cell``
    (named ``what``) that recorded it, with its 95 % bootstrap interval over them."""
    ece = store.trials(**cell.where(), weights_fp=fp["weights_fp"], data_fp=fp["data_fp"])["ece"].dropna()
    head = f"ECE of the FP model: {fp['ece']:.2f} %; "
    if not len(ece):
        return head + f"no trial of {what} recorded it."
    low, high = bootstrap_mean_ci(ece.to_numpy())
    return head + (f"of {what}'s quantized models {ece.mean():.2f} % (95 % bootstrap interval "
                   f"{low:.2f} to {high:.2f} over its {len(ece)} trials that recorded it).")


# --- forgotten images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forgotten:
    """The modal prediction of every test image over the trials and the share of trials that gave
    it; the indices of the forgotten images (modal prediction unlike the FP model's); and per
    class, its test images, how many are forgotten and their share (%)."""

    mode: np.ndarray
    agreement: np.ndarray
    indices: np.ndarray
    per_class: pd.DataFrame

    def shown(self, labels: np.ndarray, classes: list[int], per_class: int) -> np.ndarray:
        """The first ``per_class`` forgotten images of each class of ``classes``, class by class."""
        if not len(self.indices):
            return self.indices
        return np.concatenate([self.indices[labels[self.indices] == c][:per_class] for c in classes])


def forgotten_images(p: CellPredictions) -> Forgotten:
    mode, agreement = modal_predictions(p.preds)
    forgotten = np.flatnonzero(mode != p.fp_preds)
    per_class = pd.DataFrame({"test images": [int((p.labels == c).sum()) for c in p.classes],
                              "forgotten": [int((p.labels[forgotten] == c).sum()) for c in p.classes]},
                             index=[p.names[c] for c in p.classes])
    per_class["forgotten %"] = 100 * per_class["forgotten"] / per_class["test images"]
    return Forgotten(mode, agreement, forgotten, per_class)


def forgotten_line(forgotten: Forgotten, trials: int) -> str:
    """:func:`forgotten_images` in words: how many test images are forgotten over ``trials``
    trials, their share, and the class with the largest share of its images forgotten."""
    images, per_class = len(forgotten.mode), forgotten.per_class
    text = (f"{len(forgotten.indices)} test images ({100 * len(forgotten.indices) / images:.2f} %) are forgotten: "
            f"their modal prediction over {trials} trials differs from the FP model's.")
    if len(forgotten.indices):
        text += (f" Most: '{per_class['forgotten %'].idxmax()}' ({per_class['forgotten %'].max():.2f} % of its "
                 "images).")
    return text


def caption(names: dict[int, str], label: int, fp_pred: int, mode: int, agreement: float) -> str:
    """An image's caption: its class, the FP prediction, the modal quantized prediction and the
    share of trials that gave it; a label without a name is shown as ``label N``."""
    fp_name, mode_name, own = (names.get(int(c), f"label {c}") for c in (fp_pred, mode, label))
    return f"{own}\nFP: {fp_name}\nQ: {mode_name}\n({100 * agreement:.0f} % of trials)"


# --- corrupted inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorruptionSummary:
    """A ``ptq robustness`` run as changes from FP to quantized (rows = classes + Average,
    columns = ``"corruption severity"`` and ``clean``): the mean change and its std over the
    quantized models; the FP average accuracy per corruption and severity; and the figures a
    sentence quotes."""

    change: pd.DataFrame
    change_std: pd.DataFrame
    fp_average: pd.Series  # (corruption, severity) -> mean FP accuracy over classes
    quantized_models: int
    clean: float  # change of the average on clean images
    lowest: tuple[str, float]  # the corruption where the average changes least / most (column, change)
    highest: tuple[str, float]
    class_loss: tuple[str, str, float]  # the largest class loss: (class, column, change)

    def line(self, seconds: float) -> str:
        """The summary in words, with the ``seconds`` the run took: the change of the average on
        clean and corrupted images, the largest class loss, and the FP average per corruption."""
        (lowest, low), (highest, high) = self.lowest, self.highest
        loss_class, loss_column, loss = self.class_loss
        return (f"Computed in {seconds / 60:.1f} min. Quantization changes the average by {self.clean:+.2f} points "
                f"on clean images and by {low:+.2f} ({lowest}) to {high:+.2f} ({highest}) on corrupted ones; the "
                f"largest class loss is {loss:+.2f} points ('{loss_class}', {loss_column}). FP average accuracy per "
                "corruption: " + ", ".join(f"{c} {s}: {a:.1f}" for (c, s), a in self.fp_average.items()) + ".")


def corruption_summary(run: RobustnessRun) -> CorruptionSummary:
    rows = run.rows
    change, change_std = (f.rename(index=class_label) for f in quantization_change(rows))
    corrupted = change.loc[AVERAGE].drop("clean")
    classes = change.drop(index=AVERAGE)
    worst_column = classes.min().idxmin()
    fp_average = rows[rows["model"] == "fp"].groupby(["corruption", "severity"])["acc"].mean()
    return CorruptionSummary(
        change, change_std, fp_average, run.quantized_models, float(change.loc[AVERAGE, "clean"]),
        (corrupted.idxmin(), float(corrupted.min())), (corrupted.idxmax(), float(corrupted.max())),
        (classes.min(axis=1).idxmin(), worst_column, float(classes[worst_column].min())))
