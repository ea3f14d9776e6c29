# %% [markdown]
# # Calibration set size
#
# Mean ± standard deviation over trials of each class's accuracy at each calibration size of
# `levels` (the first line below says which the store has).

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None  # None: the project's default weights for the dataset
w_bits = 4
a_bits = 4
metric = "mse"
levels = [1, 32, 256, 1024]
trials = 50
compute_missing = False

# %%
import matplotlib.pyplot as plt

from ptqlib.analysis.aggregate import class_range_lines, class_summary, worst_class
from ptqlib.analysis.plotting import chance_strip, mean_std_lines
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import drop_ci_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials, factor_frame, trial_counts
from ptqlib.analysis.verdicts import band_test_line, class_bands, factor_tests, load, verdict_lines

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric)
if compute_missing:
    print(ensure_trials(store, cell, "calib_size", levels, trials))
frame = factor_frame(store, cell, "calib_size", levels, trials)
assert len(frame), "no trials for this factor in the store"
counts = trial_counts(frame, "calib_size")
print("trials per size:", ", ".join(f"{lv}: {n}" for lv, n in counts.items()))

# %%
summary = class_summary(frame, by=["calib_size"])
mean_std_lines(summary, "calib_size")
plt.tight_layout()
plt.show()
table = summary.pivot(index="class", columns="calib_size", values="std").round(2)
publish_table(table, "class_std")

# %%
print("\n".join(class_range_lines(table, "{} images, std over calibration sets", "average")))

# %% [markdown]
# ## Against chance
#
# Each dot is a class's mean drop against FP at one level; the grey band is where a single
# class's mean drop falls when the test images are split at random into groups of the classes'
# sizes, the chance model of the [conclusions](conclusions). A class outside the band is hit
# more (or less) than it would be if quantization errors fell on images regardless of their
# class; inside it, its drop is what a random group of as many images shows. The band holds
# 95 % of random groups, so chance alone puts about one dot in twenty outside it: the line under
# the figure compares the count with the same count on each random grouping (a permutation test,
# which keeps the dependence between the classes of one calibration set and between levels). Below it, the parts of the study's claim 2 this factor
# bears on, tested on this page's levels as [the conclusions](conclusions) test them on the
# study's (each with its estimate and interval; a chance part with its chance band and p-value,
# a part about sizes with the band its statistic has on random groups, "chance alone"), from 32 images up: the claim speaks of sizes beyond 32, so smaller levels
# are shown above but not tested (`ptqlib.analysis.verdicts.SIZES_FROM`).
#
# The second figure does the same for each class's standard deviation over calibration sets:
# where classes sit inside their band, their variability is what sampling the test images gives.

# %%
data = load(store, cell, "calib_size", sorted({*levels, cell.calib_size}), trials)  # the tests' base too
bands = class_bands(data)
fig, axes = plt.subplots(2, 1, figsize=(7, 7))
chance_strip(bands, "mean_drop", "calibration images", f"{model} W{w_bits}A{a_bits} {metric}", ax=axes[0])
chance_strip(bands, "std", "calibration images", "std over calibration sets", ax=axes[1])
plt.tight_layout()
plt.show()
print("mean drops:", band_test_line([data], "mean_drop"))
print("stds over calibration sets:", band_test_line([data], "std"))
print("\n".join(verdict_lines(factor_tests("calib_size", data, cell.calib_size, levels))))

# %% [markdown]
# ## Worst-case statistics
#
# Each trial's worst class, summarised over trials (mean, std, 5th percentile, minimum, the
# class most often worst, and the mean of each trial's three worst classes), and every class's
# mean drop against FP with a bootstrap 95 % confidence interval over trials (`*`: the interval
# excludes 0). The interval is over calibration sets on this one test set: it says a drop is
# not a calibration draw's luck, not that it would recur on other test images of the class (the
# chance band above is the comparison for that).

# %%
publish_table(worst_class(frame, by=["calib_size"]).set_index("calib_size").round(2), "worst_class")

# %%
publish_table(drop_ci_table(frame, "calib_size"), "drop_ci")
