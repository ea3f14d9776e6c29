# %% [markdown]
# # Reliability over calibration sets
#
# The study's central experiment: quantize the same FP model many times, each time with a
# calibration set drawn with a different seed, and look at the accuracy drop of every class
# across trials (median line, box from Q1 to Q3), next to the drop of the average. The grey
# band is where a class's mean drop falls when the test images are grouped at random into
# groups of a class's size (the chance model of the [conclusions](conclusions)): a class whose
# mean drop lies outside it is hit more (or less) than a random group of as many images. The
# band holds 95 % of random groups, so chance alone puts about one class in twenty outside it:
# the line under the figure compares the count with the same count on each random grouping (a
# permutation test).

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None  # None: the project's default weights for the dataset
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 256
trials = 50
compute_missing = False  # True: run the missing trials first (needs PTQ_DATA)

# %%
import matplotlib.pyplot as plt
import pandas as pd

from ptqlib.analysis.aggregate import AVERAGE, class_summary, worst_class
from ptqlib.analysis.plotting import drop_boxplot
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import bootstrap_mean_ci, drop_ci_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials, factor_frame
from ptqlib.analysis.verdicts import band_test_line, class_bands, drop_parts, load, variability_parts, verdict_lines

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size)
if compute_missing:
    print(ensure_trials(store, cell, "noise", [0.0], trials))
tidy = factor_frame(store, cell, "noise", [0.0], trials)
assert len(tidy), f"no trials stored for {cell}"
n_trials = tidy["key"].nunique()
print(f"{n_trials} trials of {model} W{w_bits}A{a_bits} ({metric}, {calib_size} calibration images) on {dataset}"
      + ("" if n_trials >= trials else f" -- fewer than the {trials} asked for"))
*_, labels = store.predictions(**cell.where(), **store.latest_fingerprints(model, dataset, weights))
images = pd.Series(labels).value_counts()
per_class = f"{images.min()}" if images.min() == images.max() else f"{images.min()} to {images.max()}"
print(f"{len(labels)} test images, {per_class} per class: one image is worth up to {100 / images.min():.2f} "
      "points of a class's accuracy")

# %%
data = load(store, cell, "noise", [0.0], trials)
bands = class_bands(data)
drop_boxplot(tidy, title=f"{model} W{w_bits}A{a_bits} {metric}",
             band=(bands["drop_low"].iloc[0], bands["drop_high"].iloc[0]) if len(bands) else None)
plt.tight_layout()
plt.show()
if len(bands):
    print("classes' mean drops:", band_test_line([data], "mean_drop", "classes"))

# %%
summary = class_summary(tidy).set_index("class")
publish_table(summary[["trials", "fp", "mean", "std", "mean_drop", "max_drop", "min_acc"]].round(2), "summary")

# %%
avg = summary.loc[AVERAGE]
wc = worst_class(tidy).iloc[0]
low, high = bootstrap_mean_ci(tidy.groupby("seed")["drop"].mean())
print(f"Average: drop {avg['mean_drop']:.2f} points (95 % bootstrap interval over trials {low:.2f} to {high:.2f}), "
      f"std over trials {avg['std']:.2f}.")
print(f"Worst class per trial: mean {wc['worst_mean']:.2f} %, std {wc['worst_std']:.2f}, lowest {wc['worst_min']:.2f} %; "
      f"most often '{wc['most_often']}'.")
print("Is the largest class drop, and the median class's spread over calibration sets, more than the average's "
      "and more than chance gives (the study's claim 1, tested as on the conclusions page)?")
print("\n".join(verdict_lines(drop_parts("1", "1a", data, 0.0) + variability_parts("1", "1b", data, 0.0))))

# %% [markdown]
# ## Worst-case statistics
#
# Each trial's worst class, summarised over trials (mean, std, 5th percentile, minimum, the
# class most often worst, and the mean of each trial's three worst classes), and every class's
# mean drop against FP with a bootstrap 95 % confidence interval over trials (`*`: the interval
# excludes 0). The interval is over calibration sets on this one test set: it says the drop is
# not a calibration draw's luck, not that it would recur on other test images of the class (one
# image is the step printed above; the chance band of the figure is the comparison for that).

# %%
publish_table(worst_class(tidy).round(2), "worst_class")

# %%
publish_table(drop_ci_table(tidy.assign(cell="all trials"), "cell"), "drop_ci")
