"""The report's figures, from the tidy frames of :mod:`ptqlib.analysis.aggregate`."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ptqlib.analysis.aggregate import AVERAGE, equivalence_interval, on_fixed_sample, with_average
from ptqlib.analysis.stats import outside_band


def drop_boxplot(per_class: pd.DataFrame, title: str = "", ax=None, band: tuple[float, float] | None = None):
    """Box plot of the accuracy drop against FP over trials, one box per class and one for the
    average (the study's Figure 2: median line, box from Q1 to Q3). ``band``: the chance band of
    a class's mean drop (:func:`ptqlib.analysis.verdicts.class_bands`), drawn in grey."""
    tidy = with_average(per_class)
    classes = [c for c in tidy["class"].unique() if c != AVERAGE] + [AVERAGE]
    data = [tidy.loc[tidy["class"] == c, "drop"].to_numpy() for c in classes]
    ax = ax or plt.subplots(figsize=(max(6, 0.6 * len(classes)), 3.6))[1]
    box = ax.boxplot(data, patch_artist=True, widths=0.6, medianprops={"color": "black"})
    ax.set_xticks(range(1, len(classes) + 1), classes, rotation=45, ha="right")
    for patch, name in zip(box["boxes"], classes):
        patch.set_facecolor("#d62728" if name == AVERAGE else "#9ecae1")
    ax.axhline(0, color="grey", lw=0.8)
    if band is not None:
        ax.axhspan(*band, color="0.85", zorder=0, label="chance band of a class's mean drop")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylabel("accuracy drop vs FP (points)")
    n_trials = tidy["key"].nunique()
    ax.set_title(f"{title} ({n_trials} trials)" if title else f"{n_trials} trials")
    return ax


def delta_heatmap(delta_mean: pd.DataFrame, delta_std: pd.DataFrame, xlabel: str, title: str = "", ax=None,
                  text_format: str = "{:+.2f}"):
    """Colour: change of the mean accuracy against the baseline column; text: ``delta_std``
    (by default the change of the std, hence signed)."""
    ax = ax or plt.subplots(figsize=(1.2 * delta_mean.shape[1] + 2.5, 0.42 * delta_mean.shape[0] + 1.2))[1]
    limit = max(float(np.nanmax(np.abs(delta_mean.to_numpy()))), 0.1)
    image = ax.imshow(delta_mean.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(delta_mean.shape[1]), [str(c) for c in delta_mean.columns])
    ax.set_yticks(range(delta_mean.shape[0]), list(delta_mean.index))
    for i in range(delta_mean.shape[0]):
        for j in range(delta_mean.shape[1]):
            value = delta_std.iat[i, j]
            ax.text(j, i, "" if np.isnan(value) else text_format.format(value), ha="center", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    plt.colorbar(image, ax=ax, label="change of mean accuracy (points)")
    return ax


def mean_std_lines(summary: pd.DataFrame, factor: str, ax=None):
    """Mean ± std of each class's accuracy across the levels of ``factor``."""
    ax = ax or plt.subplots(figsize=(7, 3.8))[1]
    for name, group in summary.groupby("class", sort=False):
        group = group.sort_values(factor)
        style = {"color": "black", "lw": 2.5} if name == AVERAGE else {"lw": 1.2}
        ax.errorbar([str(v) for v in group[factor]], group["mean"], yerr=group["std"], label=name,
                    capsize=3, marker="o", ms=3, **style)
    ax.set_xlabel(factor)
    ax.set_ylabel("accuracy (%), mean ± std over trials")
    ax.legend(ncol=2, fontsize=7, loc="best")
    return ax


def summary_lines(summary: pd.DataFrame, factor: str, value: str, levels: list | None = None, group: str = "model",
                  ax=None):
    """``value`` (with ``value``'s ``_std`` partner as error bar when present, e.g. ``worst_mean``
    and ``worst_std``) across ``levels`` of ``factor`` (default: as they come), one line per ``group``."""
    ax = ax or plt.subplots(figsize=(5, 3.6))[1]
    err = value.replace("_mean", "_std")
    levels = levels or list(dict.fromkeys(summary[factor]))
    for name, rows in summary.groupby(group, sort=False):
        rows = rows.set_index(factor).reindex(levels)
        ax.errorbar([str(v) for v in levels], rows[value], yerr=rows[err] if err in rows and err != value else None,
                    label=name, capsize=3, marker="o", ms=4)
    ax.set_xlabel(factor)
    ax.legend(fontsize=7, loc="best")
    return ax


def worst_class_boxes(per_class: pd.DataFrame, factor: str, levels: list, title: str = ""):
    """Box plots over trials, one box per level of ``factor``: each trial's worst-class accuracy
    (left) and its average accuracy (right, on its own scale). Returns the figure."""
    classes = per_class[per_class["class"] != AVERAGE]
    per_trial = classes.groupby([factor, "key"], dropna=False)["acc"].agg(worst="min", avg="mean").reset_index()
    present = [lv for lv in levels if lv in set(per_trial[factor])]
    fig, axes = plt.subplots(1, 2, figsize=(2.4 * len(present) + 4, 3.6))
    for ax, stat, name in zip(axes, ("worst", "avg"), ("worst-class accuracy", "average accuracy")):
        data = [per_trial.loc[per_trial[factor] == lv, stat].to_numpy() for lv in present]
        ax.boxplot(data, widths=0.5, medianprops={"color": "tab:red"}, showmeans=True)
        ax.set_xticks(range(1, len(present) + 1), [f"{lv}\n({len(d)} trials)" for lv, d in zip(present, data)])
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"{name} per trial")
    fig.suptitle(title)
    return fig


def image_grid(images: np.ndarray, captions: list[str], columns: int = 8, title: str = ""):
    """A grid of uint8 ``[N, C, H, W]`` images (grey when ``C == 1``) with a caption above each."""
    rows = max(1, -(-len(images) // columns))
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    height = (1.6 + 0.14 * lines) * rows + 0.5
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        pixels = np.asarray(image).transpose(1, 2, 0)
        ax.imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray" if pixels.shape[2] == 1 else None)
        ax.set_title(caption, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # leave the title its own strip
    return fig


def encode_figure(fig, quality: int = 85) -> tuple[str, bytes]:
    """``fig`` encoded in the smaller of PNG and JPEG (``(extension, bytes)``), the figure closed.
    Photographs in a PNG take megabytes (an ImageNet grid above 2 MB, 0.45 MB as a JPEG);
    enlarged 32-pixel images are smaller as a PNG."""
    import io

    encoded = {}
    for fmt, kwargs in (("png", {}), ("jpg", {"pil_kwargs": {"quality": quality}})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, **kwargs)
        encoded[fmt] = buffer.getvalue()
    plt.close(fig)
    fmt = min(encoded, key=lambda f: len(encoded[f]))
    return fmt, encoded[fmt]


def chance_strip(bands: pd.DataFrame, value: str, xlabel: str, title: str = "", ax=None):
    """Each class's ``value`` (``"mean_drop"`` or ``"std"``) at each level as a dot, over the grey
    chance band of a single class (columns ``{short}_low``/``{short}_high`` of
    :func:`ptqlib.analysis.verdicts.class_bands`); classes outside the band are labelled."""
    short = {"mean_drop": "drop", "std": "std"}[value]
    levels = list(dict.fromkeys(bands["level"]))
    ax = ax or plt.subplots(figsize=(max(5.0, 1.3 * len(levels) + 2), 3.8))[1]
    for i, level in enumerate(levels):
        group = bands[bands["level"] == level]
        low, high = group[f"{short}_low"].iloc[0], group[f"{short}_high"].iloc[0]
        ax.fill_between([i - 0.35, i + 0.35], low, high, color="0.85", lw=0,
                        label="chance band (random groups of images)" if i == 0 else None)
        outside = pd.Series(outside_band(group[value], low, high), index=group.index)
        jitter = np.linspace(-0.2, 0.2, len(group))
        ax.scatter(i + jitter[~outside.to_numpy()], group[value][~outside], s=14, color="#3182bd",
                   label="class inside the band" if i == 0 else None)
        ax.scatter(i + jitter[outside.to_numpy()], group[value][outside], s=18, color="#d62728",
                   label="class outside the band" if i == 0 else None)
        for x, (_, row) in zip(i + jitter[outside.to_numpy()], group[outside].iterrows()):
            ax.annotate(row["class"], (x, row[value]), fontsize=6, xytext=(3, 0), textcoords="offset points")
    labels = [str(lv) for lv in levels]
    long = max(map(len, labels), default=0) > 8  # long level names (model names) would overlap: slanted
    ax.set_xticks(range(len(levels)), labels, rotation=20 if long else 0, ha="right" if long else "center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel({"mean_drop": "mean drop vs FP (points)", "std": "std over calibration sets (points)"}[value])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return ax


VERDICT_COLOURS = {"supported": "#74c476", "contradicted": "#fb6a4a", "inconclusive": "#fdd0a2",
                   "not enough data": "#f0f0f0", "not tested": "#ffffff"}


def verdict_matrix(table: pd.DataFrame, title: str = "", ax=None):
    """Parts (rows) by models (columns) coloured by verdict, each cell with its estimate, a dagger
    where random groups of images pass the part too and, where the frame has them, in brackets
    the trials it rests on: the frame of
    :func:`ptqlib.analysis.verdicts.side_by_side` (its intervals are in the frame, too many to
    draw). An inconclusive part without an estimate reads "undefined" (a ratio to an average that
    does not drop)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = list(dict.fromkeys(table.columns.get_level_values(0)))
    verdicts = table.xs("verdict", axis=1, level=1)[labels].fillna("not tested")  # a part another model lacks
    estimates = table.xs("estimate", axis=1, level=1)[labels]
    has_trials = "trials" in table.columns.get_level_values(1)
    trials = table.xs("trials", axis=1, level=1)[labels] if has_trials else None
    passes = (table.xs("random groups pass", axis=1, level=1)[labels].eq("yes")
              if "random groups pass" in table.columns.get_level_values(1) else None)
    order = list(VERDICT_COLOURS)
    codes = verdicts.apply(lambda col: col.map(order.index)).to_numpy()
    ax = ax or plt.subplots(figsize=(6.0 + 1.1 * len(labels), 0.3 * len(table) + 1.5))[1]
    ax.imshow(codes, cmap=ListedColormap(list(VERDICT_COLOURS.values())), vmin=-0.5, vmax=len(order) - 0.5,
              aspect="auto")
    for i in range(codes.shape[0]):
        for j in range(codes.shape[1]):
            value = estimates.iat[i, j]
            if value is not None and not pd.isna(value) and value != "":  # text as the table prints it, or a number
                n = trials.iat[i, j] if trials is not None else None
                count = f" ({int(n)})" if n is not None and not pd.isna(n) else ""
                mark = "\u2020" if passes is not None and passes.iat[i, j] else ""
                shown = value if isinstance(value, str) else f"{value:.2f}"
                ax.text(j, i, f"{shown}{mark}{count}", ha="center", va="center", fontsize=7)
            elif verdicts.iat[i, j] == "inconclusive":
                ax.text(j, i, "undefined", ha="center", va="center", fontsize=6, style="italic")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="left", rotation_mode="anchor")
    ax.set_yticks(range(len(table)), [part for _, part in table.index], fontsize=7)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    if passes is not None and passes.to_numpy().any():
        handles.append(Patch(color="white", label="\u2020 random groups pass it too"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return ax


def iteration_lines(curve: pd.DataFrame, by: list[str] = ("method",), axes=None):
    """Mean worst-class and average accuracy against the iterations per unit (log scale), one
    line per ``by`` group of an :func:`ptqlib.analysis.cells.iteration_curve` frame (error bars: the
    worst class's std over trials)."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(11, 3.8))[1]
    for keys, group in curve.groupby(list(by), sort=False):
        label = " ".join(map(str, keys if isinstance(keys, tuple) else (keys,)))
        group = group.sort_values("iters")
        axes[0].errorbar(group["iters"], group["worst_mean"], yerr=group["worst_std"], marker="o", capsize=3,
                         label=label)
        axes[1].plot(group["iters"], group["avg_mean"], marker="o", label=label)
    for ax, what in zip(axes, ("worst-class accuracy (%), mean ± std over trials", "mean average accuracy (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("iterations per unit")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=7)
    return axes


def equivalence_lines(curve: pd.DataFrame, margin: float, target: int, alpha: float = 0.05, trials: int | None = None,
                      ax=None):
    """Each count's change of the mean worst class against ``target`` (the ``worst_diff`` of an
    :func:`ptqlib.analysis.cells.iteration_curve` frame) with its ``1 - 2 alpha`` interval, the
    one the two one-sided tests at ``alpha`` read
    (:func:`ptqlib.analysis.aggregate.equivalence_interval`), one line per method whose reference
    count is ``target``, against the iterations per unit (log scale); the shaded band is
    ``+-margin``: a count whose interval lies inside it is shown within the margin. With
    ``trials``, a count whose interval does not yet rest on seeds 0 to ``trials - 1`` of it and of
    ``target`` (the test's fixed sample, see :func:`ptqlib.analysis.aggregate.chosen_iters`) is
    drawn hollow."""
    ax = ax if ax is not None else plt.subplots(figsize=(6.5, 3.8))[1]
    ax.axhspan(-margin, margin, color="0.9", zorder=0, label=f"within {margin} points")
    ax.axhline(0, color="0.5", lw=0.8)
    compared = curve[(curve["reference"] == target)].dropna(subset=["worst_diff"])
    methods = list(dict.fromkeys(compared["method"]))
    for i, method in enumerate(methods):
        group = compared[compared["method"] == method].sort_values("iters")
        low, high, _ = zip(*(equivalence_interval(r, alpha) for r in group.itertuples()))
        shift = 1.06 ** (i - (len(methods) - 1) / 2)  # side by side on the log axis
        x, y = group["iters"] * shift, group["worst_diff"]
        yerr = np.array([y - np.array(low), np.array(high) - y])
        line = ax.plot(x, y, label=method)[0]
        full = np.ones(len(group), bool)
        if trials is not None:
            at_target = curve[(curve["method"] == method) & (curve["iters"] == target)]
            full = (on_fixed_sample(group, trials).to_numpy()
                    & bool(len(at_target) and on_fixed_sample(at_target, trials).iloc[0]))
        for mask, face in ((full, line.get_color()), (~full, "white")):
            if mask.any():
                ax.errorbar(x[mask], y[mask], yerr=yerr[:, mask], fmt="o", capsize=3, color=line.get_color(),
                            markerfacecolor=face)
    ax.set_xscale("log")
    counts = sorted(compared["iters"].unique())
    ax.set_xticks(counts, [f"{int(c):,}" for c in counts])
    ax.minorticks_off()
    ax.set_xlabel("iterations per unit")
    ax.set_ylabel(f"worst class minus {target:,}'s (points)")
    if trials is not None:
        ax.plot([], [], "o", color="0.4", markerfacecolor="white",
                label=f"hollow: the count or {target:,} not yet on seeds 0-{trials - 1}")
    ax.legend(fontsize=7)
    return ax
