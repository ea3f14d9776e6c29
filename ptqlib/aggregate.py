"""Aggregation of trials into the report's tables and figure data (tidy pandas frames).

Input: the tidy per-class frame of :meth:`ResultsStore.per_class` (one row per trial and
class, with ``acc``, ``fp_acc`` and ``drop``). ``"Average"`` rows are added from each trial's
mean over classes, so the average and the classes can be compared in one table.
"""
from __future__ import annotations

import pandas as pd

AVERAGE = "Average"


def with_average(per_class: pd.DataFrame) -> pd.DataFrame:
    """Append, for every trial, a row ``class == "Average"`` (mean over its classes)."""
    keys = [c for c in per_class.columns if c not in ("class", "acc", "fp_acc", "drop")]
    avg = per_class.groupby(keys, dropna=False, as_index=False)[["acc", "fp_acc", "drop"]].mean()
    avg["class"] = AVERAGE
    return pd.concat([per_class, avg], ignore_index=True)


def class_summary(per_class: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per class (and per level of ``by``): trials, mean and std of accuracy over trials, FP
    accuracy, mean and max drop."""
    groups = [*(by or []), "class"]
    g = with_average(per_class).groupby(groups, dropna=False, sort=False)
    out = g.agg(trials=("acc", "size"), mean=("acc", "mean"), std=("acc", "std"), fp=("fp_acc", "first"),
                mean_drop=("drop", "mean"), max_drop=("drop", "max"), min_acc=("acc", "min"))
    return out.reset_index()


def worst_class(per_class: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per trial, the worst class and its accuracy; then mean/std/min over trials per level."""
    keys = [*(by or []), "key"]
    idx = per_class.groupby(keys, dropna=False)["acc"].idxmin()
    per_trial = per_class.loc[idx, [*keys, "class", "acc"]]
    g = per_trial.groupby(by, dropna=False) if by else per_trial.assign(_all=0).groupby("_all")
    return g.agg(trials=("acc", "size"), worst_mean=("acc", "mean"), worst_std=("acc", "std"),
                 worst_min=("acc", "min"), most_often=("class", lambda s: s.mode().iloc[0])).reset_index()


def heatmap_data(per_class: pd.DataFrame, factor: str, baseline) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = classes + Average, columns = levels of ``factor``: the change of the mean accuracy
    and of its std against the ``baseline`` level (the study's noise and bias heatmaps)."""
    summary = class_summary(per_class, by=[factor])
    mean = summary.pivot(index="class", columns=factor, values="mean").astype(float)
    std = summary.pivot(index="class", columns=factor, values="std").astype(float)
    if baseline not in mean.columns:
        raise ValueError(f"baseline level {baseline!r} of {factor} is not in the results: {list(mean.columns)}")
    order = [c for c in mean.index if c != AVERAGE] + [AVERAGE]
    return (mean.sub(mean[baseline], axis=0).loc[order], std.sub(std[baseline], axis=0).loc[order])
