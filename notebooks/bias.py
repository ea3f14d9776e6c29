# %% [markdown]
# # Class bias in the calibration set
#
# One class is drawn with probability 50 % and the others uniformly. Colour: the change of
# each class's mean accuracy against a balanced calibration set; text: the change of its
# standard deviation over trials. Columns: the class the calibration set is biased towards.

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
bias_classes = ["airplane", "bird", "cat", "ship"]
bias_p = 0.5
trials = 50
compute_missing = False

# %%
import matplotlib.pyplot as plt

from ptqlib.analysis.aggregate import class_range_lines, heatmap_data, worst_class
from ptqlib.data import class_label
from ptqlib.analysis.plotting import chance_strip, delta_heatmap
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import drop_ci_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials, factor_frame, level_label, trial_counts
from ptqlib.analysis.verdicts import band_test_line, class_bands, factor_tests, load, verdict_lines

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size, bias_p=bias_p)
levels = [None, *bias_classes]
if compute_missing:
    print(ensure_trials(store, cell, "bias_class", levels, trials))
frame = factor_frame(store, cell, "bias_class", levels, trials)
frame["bias"] = [level_label("bias_class", lv) for lv in frame["bias_class"]]
counts = trial_counts(frame, "bias")
assert "balanced" in counts.index, "the balanced baseline has no trials in the store"
print("trials per calibration set:", ", ".join(f"{k}: {n}" for k, n in counts.items()))

# %%
d_mean, d_std = heatmap_data(frame, "bias", baseline="balanced")
order = [c for c in ["balanced", *map(class_label, bias_classes)] if c in d_mean.columns]
d_mean, d_std = d_mean[order], d_std[order]
delta_heatmap(d_mean, d_std, f"calibration biased towards (p = {bias_p})",
              f"{model} W{w_bits}A{a_bits} {metric}, {calib_size} calibration images")
plt.tight_layout()
plt.show()

# %%
print("\n".join(class_range_lines(d_mean[d_mean.columns[1:]], "biased towards {}", "average", signed=True,
                                  itself=True)))

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
# a part about sizes with the band its statistic has on random groups, "chance alone").

# %%
data = load(store, cell, "bias_class", levels, trials)
bands = class_bands(data)
bands["level"] = [level_label("bias_class", lv) for lv in bands["level"]]
chance_strip(bands, "mean_drop", "calibration set biased towards", f"{model} W{w_bits}A{a_bits} {metric}")
plt.tight_layout()
plt.show()
print("mean drops:", band_test_line([data], "mean_drop"))
print("\n".join(verdict_lines(factor_tests("bias_class", data, None, levels))))

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
publish_table(worst_class(frame, by=["bias"]).set_index("bias").round(2), "worst_class")

# %%
publish_table(drop_ci_table(frame, "bias"), "drop_ci")
