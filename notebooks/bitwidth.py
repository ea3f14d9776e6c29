# %% [markdown]
# # Bit-width
#
# Weights and activations at the same bit-width, at each width of `levels` (the first line below
# says which the store has; `reference` preset: first and last layers' weights and the last
# layer's input stay at 8 bits). Box plots of the per-class drop over trials at each width.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None  # None: the project's default weights for the dataset
metric = "mse"
calib_size = 256
levels = [8, 6, 4]
trials = 50
compute_missing = False

# %%
import matplotlib.pyplot as plt

from ptqlib.analysis.aggregate import class_range_lines, class_summary, worst_class
from ptqlib.analysis.plotting import chance_strip, drop_boxplot
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import drop_ci_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials, factor_frame, trial_counts
from ptqlib.analysis.verdicts import band_test_line, class_bands, factor_tests, load, verdict_lines

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, metric=metric, calib_size=calib_size)
if compute_missing:
    print(ensure_trials(store, cell, "w_bits", levels, trials))
frame = factor_frame(store, cell, "w_bits", levels, trials)
assert len(frame), "no trials for this factor in the store"
present = [b for b in levels if b in set(frame["w_bits"])]
print("trials per bit-width:", ", ".join(f"W{b}A{b}: {n}" for b, n in trial_counts(frame, "w_bits").items()))

# %%
fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.6), sharey=True, squeeze=False)
for ax, bits in zip(axes[0], present):
    drop_boxplot(frame[frame["w_bits"] == bits], title=f"W{bits}A{bits}", ax=ax)
plt.tight_layout()
plt.show()

# %%
summary = class_summary(frame, by=["w_bits"])
drops = summary.pivot(index="class", columns="w_bits", values="mean_drop")[present]
publish_table(drops.round(2), "class_drops")

# %%
print("\n".join(class_range_lines(drops, "W{0}A{0}, mean drop", "average")))

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
# which keeps the dependence between the classes of one calibration set and between levels). Below it, the parts of the study's claim 3 this factor
# bears on, tested on this page's levels as [the conclusions](conclusions) test them on the
# study's (claim 3 at each width, a width being one more chance to pass: the size parts'
# intervals are at 1 - 0.05 / k for the k widths tested, the chance parts' p Holm-adjusted over
# them; each with its estimate and interval; a chance part with its chance band and p-value,
# a part about sizes with the band its statistic has on random groups, "chance alone").

# %%
data = load(store, cell, "w_bits", levels, trials)
bands = class_bands(data)
chance_strip(bands, "mean_drop", "bit-width (weights = activations)", f"{model} {metric}")
plt.tight_layout()
plt.show()
print("mean drops:", band_test_line([data], "mean_drop"))
print("\n".join(verdict_lines(factor_tests("w_bits", data, None, levels))))

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
publish_table(worst_class(frame, by=["w_bits"]).set_index("w_bits").round(2), "worst_class")

# %%
publish_table(drop_ci_table(frame, "w_bits"), "drop_ci")
