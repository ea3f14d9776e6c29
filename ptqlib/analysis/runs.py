"""Tables of single runs: ``ptq quantize`` results, training cards and FP references.

The many-trial study reads the results store; the pages "A first look" and "Data and models"
also show single quantizations (one calibration set each, :class:`~ptqlib.analysis.files.QuantizeRun`),
the training cards of the fine-tuned models (:class:`~ptqlib.analysis.files.TrainingCard`) and the
FP reference of a model in the store.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ptqlib.analysis.files import QuantizeRun, TrainingCard
from ptqlib.study.settings import OPTIMIZERS
from ptqlib.study.store import ResultsStore

# --- ptq quantize runs --------------------------------------------------------------------------


def sort_runs(runs: list[QuantizeRun]) -> list[QuantizeRun]:
    """Widest bit-width first, then by range metric."""
    return sorted(runs, key=lambda r: (-r.w_bits, r.metric))


def class_drops(runs: list[QuantizeRun]) -> pd.DataFrame:
    """Per class (rows) and run (columns, :attr:`QuantizeRun.label`): FP minus quantized accuracy
    (points), against the FP accuracy of the first run."""
    if not runs:
        raise ValueError("no runs")
    fp = pd.Series(runs[0].fp_per_class, name="FP")
    per_class = pd.DataFrame({r.label: r.per_class for r in runs})
    return per_class.rsub(fp, axis=0)


def run_summary(runs: list[QuantizeRun]) -> pd.DataFrame:
    """One row per run (indexed by its label): the average, its drop from FP, the worst class and
    its accuracy, the largest class drop and the seconds the run took."""
    drop = class_drops(runs)
    return pd.DataFrame({
        r.label: {"average %": r.avg, "drop of the average": r.fp_avg - r.avg, "worst class": r.worst_class,
                  "worst-class accuracy %": r.worst_class_acc, "largest class drop": drop[r.label].max(),
                  "seconds": r.seconds}
        for r in runs}).T


def largest_drops(runs: list[QuantizeRun]) -> pd.DataFrame:
    """Per run: the drop of the average, the class that drops most and by how much, and that drop
    as a multiple of the average's (NaN when the average drops 0.05 points or less)."""
    drop = class_drops(runs)
    rows = {}
    for r in runs:
        avg_drop = r.fp_avg - r.avg
        worst = drop[r.label]
        rows[r.label] = {"avg_drop": avg_drop, "class": worst.idxmax(), "class_drop": worst.max(),
                         "ratio": worst.max() / avg_drop if avg_drop > 0.05 else float("nan")}
    return pd.DataFrame(rows).T.astype({"avg_drop": float, "class_drop": float, "ratio": float})


def drop_lines(largest: pd.DataFrame) -> list[str]:
    """:func:`largest_drops` in words, one line per run: the drop of the average and the class
    that drops most, as a multiple of the average's drop where that ratio is defined."""
    lines = []
    for name, r in largest.iterrows():
        head = f"{name}: the average drops {r['avg_drop']:.2f} points; "
        if r["ratio"] == r["ratio"]:
            lines.append(head + f"class '{r['class']}' drops {r['class_drop']:.2f} points "
                                f"({r['ratio']:.1f}x the average drop)")
        else:
            lines.append(head + f"the largest class drop is {r['class_drop']:.2f} points ({r['class']})")
    return lines


def reconstruction_table(runs: list[QuantizeRun]) -> pd.DataFrame:
    """One row per run: bit-widths, optimizer, iterations per unit (None for grid search), the
    average and FP accuracy, the worst class and its accuracy and the minutes the run took; the
    widest bit-width first, then grid search before the reconstruction methods."""
    order = {name: i for i, name in enumerate(OPTIMIZERS)}
    table = pd.DataFrame([{"bits": r.bits, "optimizer": r.optimizer, "iterations": r.iters, "average %": r.avg,
                           "FP %": r.fp_avg, "worst class": r.worst_class, "worst-class %": r.worst_class_acc,
                           "minutes": r.seconds / 60, "_w": r.w_bits, "_o": order.get(r.optimizer, len(order))}
                          for r in runs],
                         columns=["bits", "optimizer", "iterations", "average %", "FP %", "worst class",
                                  "worst-class %", "minutes", "_w", "_o"])
    table = table.sort_values(["_w", "bits", "_o", "optimizer"], ascending=[False, False, True, True], kind="stable")
    return table.drop(columns=["_w", "_o"]).reset_index(drop=True)


def gains_over_grid(table: pd.DataFrame) -> pd.DataFrame:
    """From :func:`reconstruction_table`: each reconstruction run against the grid-search run of
    its bit-widths (``gain``: average points over grid search; ``grid %``: grid search's
    average). Bit-widths without a grid-search run are left out."""
    rows = []
    for bits, group in table.groupby("bits", sort=False):
        grid = group[group["optimizer"] == "grid"]
        if grid.empty:
            continue
        base = grid["average %"].iloc[0]
        for _, r in group[group["optimizer"] != "grid"].iterrows():
            rows.append({"bits": bits, "grid %": base, "optimizer": r["optimizer"], "iterations": r["iterations"],
                         "gain": r["average %"] - base, "worst-class %": r["worst-class %"]})
    return pd.DataFrame(rows, columns=["bits", "grid %", "optimizer", "iterations", "gain", "worst-class %"])


def gain_lines(gains: pd.DataFrame) -> list[str]:
    """:func:`gains_over_grid` in words, one line per bit-width: grid search's average, then each
    reconstruction run's iterations, gain over it and worst-class accuracy."""
    return [f"{bits}: grid {group['grid %'].iloc[0]:.2f} %; " + "; ".join(
                f"{r['optimizer']} ({r['iterations']:.0f} it.) {r['gain']:+.2f} points, worst class "
                f"{r['worst-class %']:.1f} %" for _, r in group.iterrows())
            for bits, group in gains.groupby("bits", sort=False)]


# --- training cards ---------------------------------------------------------------------------


def training_recipe(cards: dict[str, TrainingCard]) -> pd.DataFrame:
    """One row per trained model: its starting checkpoint (``scratch`` without one), epochs, peak
    learning rate, minutes of training and the test accuracy before and after."""
    return pd.DataFrame({
        name: {"start": Path(c.config["init"]).name if c.config.get("init") else "scratch",
               "epochs": c.config["epochs"], "peak lr": c.config["peak_lr"],
               "minutes (CPU)": round(c.train_seconds / 60, 1),
               "test acc. before %": c.test_accuracy_before, "test acc. after %": round(c.test_accuracy, 2)}
        for name, c in cards.items()}).T


def card_per_class(cards: dict[str, TrainingCard]) -> pd.DataFrame:
    """FP test accuracy per class (rows) of each trained model (columns)."""
    return pd.DataFrame({name: c.per_class for name, c in cards.items()})


def weakest_classes(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per column of ``per_class``: the class of lowest accuracy and that accuracy."""
    worst = per_class.idxmin()
    return pd.DataFrame({"class": worst, "acc": [per_class.loc[worst[m], m] for m in per_class.columns]},
                        index=per_class.columns)


# --- FP references in the store ------------------------------------------------------------------


def latest_fp_reference(store: ResultsStore, model: str, dataset: str, weights: str | None = None) -> pd.Series | None:
    """The most recent FP reference of ``model`` on ``dataset`` with the weights argument
    ``weights`` (None: the project's default weights) in the store (``avg``, ``ece``,
    ``per_class``, ``weights_fp`` ...), or None."""
    fingerprints = store.latest_fingerprints(model, dataset, weights)
    if fingerprints is None:
        return None
    fp = store.fp_reference()
    match = fp[(fp["model"] == model) & (fp["dataset"] == dataset) & (fp["weights_fp"] == fingerprints["weights_fp"])
               & (fp["data_fp"] == fingerprints["data_fp"])]
    return match.sort_values("created").iloc[-1]
