# %% [markdown]
# # Calibration metric
#
# How activation ranges are chosen: MinMax, MSE, KL (entropy) and Cosine. Mean ± std over
# trials of each class's accuracy, and the worst class of each trial. Each metric is then
# compared with `base` on the seeds both ran: the mean per-seed change of the average and of the
# worst class with its Student-t interval, widened for the page's several comparisons
# (Bonferroni: each at 1 - 0.05 / k for k comparisons, so that the chance of any interval
# clearing 0 by chance alone stays at most 5 %; "higher"/"lower" where it clears 0), and the
# Wilcoxon p-value Holm-adjusted over the same k.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None  # None: the project's default weights for the dataset
w_bits = 4
a_bits = 4
calib_size = 256
levels = ["minmax", "mse", "kl", "cosine"]
base = "mse"  # the level the others are compared with (the study's default metric)
trials = 50
compute_missing = False

# %%
import matplotlib.pyplot as plt

from ptqlib.analysis.aggregate import class_summary, worst_class
from ptqlib.analysis.plotting import chance_strip, mean_std_lines
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import drop_ci_table, level_contrast_lines, level_contrasts
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials, factor_frame, trial_counts
from ptqlib.analysis.verdicts import band_test_line, class_bands, load

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset,
            pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, calib_size=calib_size)
if compute_missing:
    print(ensure_trials(store, cell, "metric", levels, trials))
frame = factor_frame(store, cell, "metric", levels, trials)
assert len(frame), "no trials for this factor in the store"
print("trials per metric:", ", ".join(f"{lv}: {n}" for lv, n in trial_counts(frame, "metric").items()))

# %%
summary = class_summary(frame, by=["metric"])
mean_std_lines(summary, "metric")
plt.tight_layout()
plt.show()
publish_table(summary.pivot(index="class", columns="metric", values="mean").round(2), "class_means")

# %%
worst = worst_class(frame, by=["metric"]).set_index("metric")
print("\n".join(level_contrast_lines(level_contrasts(frame, "metric", base, levels), base)))

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
# which keeps the dependence between the classes of one calibration set and between levels).

# %%
data = load(store, cell, "metric", levels, trials)
bands = class_bands(data)
chance_strip(bands, "mean_drop", "calibration metric", f"{model} W{w_bits}A{a_bits}")
plt.tight_layout()
plt.show()
print(band_test_line([data], "mean_drop"))

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
publish_table(worst.round(2), "worst_class")

# %%
publish_table(drop_ci_table(frame, "metric"), "drop_ci")
