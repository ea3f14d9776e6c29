# %% [markdown]
# # Optimization algorithm
#
# Grid search (observer ranges, MSE) against the reconstruction methods AdaRound (layer by
# layer), BRECQ (block by block, with learned activation steps) and QDrop (BRECQ with
# activations randomly left unquantized during reconstruction). All four use the same
# calibration sets (1024 images, the reference setting of the reconstruction methods).
# The reconstructions here run **`iters` iterations per unit**, fewer than the reference's
# 20 000, to fit a CPU; the table says how many trials each method has, and the last part of
# this page measures what more iterations would give.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
weights = None
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 1024
levels = ["grid", "adaround", "brecq", "qdrop"]
iters = 500
trials = 50
iter_optimizer = "brecq"  # the iteration-count study
iter_levels = [500, 2000, 5000]
iter_trials = 3
compute_missing = False

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd

from ptqlib.aggregate import AVERAGE, class_summary, worst_class
from ptqlib.plotting import mean_std_lines
from ptqlib.report import publish_table
from ptqlib.stats import drop_ci_table, paired_test
from ptqlib.store import ResultsStore
from ptqlib.study import Cell, ensure_trials, factor_frame, factor_seconds, trial_counts

store = ResultsStore(store_path)
cell = Cell(model, dataset, w_bits, a_bits, metric, calib_size, weights=weights, iters=iters)
if compute_missing:
    print(ensure_trials(store, cell, "optimizer", levels, trials))
    print(ensure_trials(store, replace(cell, optimizer=iter_optimizer), "iters", iter_levels, iter_trials))
frame = factor_frame(store, cell, "optimizer", levels, trials)
assert len(frame), "no trials for this factor in the store"
counts = trial_counts(frame, "optimizer")
print("trials per optimizer:", ", ".join(f"{k}: {n}" for k, n in counts.items()),
      f"(reconstruction: {iters} iterations per unit)")

# %%
summary = class_summary(frame, by=["optimizer"])
summary["optimizer"] = summary["optimizer"].astype("category").cat.set_categories(
    [lv for lv in levels if lv in set(summary["optimizer"])], ordered=True)
mean_std_lines(summary.sort_values("optimizer"), "optimizer")
plt.tight_layout()
plt.show()
publish_table(summary.pivot(index="class", columns="optimizer", values="mean").round(2), "class_means")

# %%
worst = worst_class(frame, by=["optimizer"]).set_index("optimizer")
means = summary.pivot(index="class", columns="optimizer", values="mean")
if "grid" in means.columns:
    for opt in [c for c in means.columns if c != "grid"]:
        gain = means[opt] - means["grid"]
        per_class = gain.drop(index=AVERAGE)
        print(f"{opt} vs grid: average {gain[AVERAGE]:+.2f} points; {int((per_class < 0).sum())} of {len(per_class)} "
              f"classes lose accuracy (largest loss {per_class.min():+.2f}, '{per_class.idxmin()}'); "
              f"mean worst class {worst.loc[opt, 'worst_mean'] - worst.loc['grid', 'worst_mean']:+.2f} points")

# %% [markdown]
# ## Paired against grid search
#
# A seed gives every method the same calibration set, so each class can be compared seed by
# seed: the mean difference from grid search in points (Wilcoxon signed-rank test over the
# seeds both have, Holm-corrected over the classes; `*`: significant at 5 %). Which classes
# does a reconstruction method make worse than grid search?

# %%
paired = {opt: paired_test(frame, "optimizer", "grid", opt).set_index("class")
          for opt in levels if opt != "grid" and {"grid", opt} <= set(frame["optimizer"])}
for opt, test in paired.items():
    worse = test[test["significant"] & (test["mean_diff"] < 0)]["mean_diff"]
    better = test[test["significant"] & (test["mean_diff"] > 0)]["mean_diff"]
    listed = lambda s: ", ".join(f"{c} {d:+.2f}" for c, d in s.items()) or "none"  # noqa: E731
    print(f"{opt} vs grid ({test['pairs'].min()} seeds): significantly worse: {listed(worse)}; "
          f"significantly better: {listed(better)}")
pd.DataFrame({opt: test["mean_diff"].map("{:+.2f}".format) + test["significant"].map({True: "*", False: ""})
              for opt, test in paired.items()})

# %% [markdown]
# ## Worst-case statistics
#
# Each trial's worst class, summarised over trials (mean, std, 5th percentile, minimum, the
# class most often worst, and the mean of each trial's three worst classes), and every class's
# mean drop against FP with a bootstrap 95 % confidence interval over trials (`*`: the interval
# excludes 0).

# %%
publish_table(worst.round(2), "worst_class")

# %%
publish_table(drop_ci_table(frame, "optimizer"), "drop_ci")

# %% [markdown]
# ## How many iterations?
#
# The trials above use `iters` iterations per unit because of the CPU time they cost. Here the
# same reconstruction runs with more iterations on the first seeds' calibration sets, to show
# what the extra time would buy. Times are the median seconds of a trial's calibration
# (reconstruction included) over all of a level's trials in the store (up to `trials`), most
# of them run with one thread per trial and two trials at a time on a 2-core machine; compare
# the levels, not the absolute times.

# %%
iter_cell = replace(cell, optimizer=iter_optimizer)
iter_frame = factor_frame(store, iter_cell, "iters", iter_levels, iter_trials)
if iter_frame.empty:
    print(f"no {iter_optimizer} trials at {iter_levels} iterations in the store")
else:
    by_iters = worst_class(iter_frame, by=["iters"])[["iters", "trials", "avg_mean", "worst_mean", "worst_std"]]
    seconds = factor_seconds(store, iter_cell, "iters", iter_levels, trials)
    by_iters = by_iters.merge(seconds[["iters", "calib_s"]], on="iters")
    by_iters["minutes"] = by_iters.pop("calib_s") / 60
    base = by_iters.iloc[0]
    for r in by_iters.iloc[1:].itertuples():
        print(f"{iter_optimizer} {r.iters} vs {base.iters:.0f} iterations ({r.trials} trials): average "
              f"{r.avg_mean - base.avg_mean:+.2f} points, mean worst class {r.worst_mean - base.worst_mean:+.2f} "
              f"points, {r.minutes / base.minutes:.1f}x the time")
    publish_table(by_iters.round(2), "iterations")
