# %% [markdown]
# # Simulated vs integer
#
# Every number in this report comes from *fake* quantization: weights and activations are
# rounded to their integer grid and computed in float32. A deployed model runs integer
# kernels instead. Here the same quantized models run both ways: `--engine int8` evaluates a
# calibrated model on oneDNN's int8 convolutions with the trial's own scales, zero points and
# clamps (`ptqlib.quant.integer`), and each such trial is paired with the stored fake-quantized
# trial of the same configuration and calibration seed. The calibration does not depend on the
# engine, so a pair is one quantized model evaluated twice: any difference is the engines'.
#
# The default cell of each model (W4A4 for the CIFAR ResNets, W6A6 for EfficientNet-Lite0; MSE
# range search on 256 calibration images) has int8 trials on its **first 20 seeds** only (the
# fake-quantized cells have 50): the int8 trials were run on a 2-core CPU beside other work. The
# agreement and accuracy parts rest on those pairs (bootstrap intervals over seeds); the two
# yardstick parts rest on the seeds that also ran `fake-reordered` or `fake-float64` (fewer; the
# lines say how many) with Student-t intervals, and are wider.
# At 8 bits, per-channel asymmetric weights need integers up to 9 bits once their zero point is
# taken out, and oneDNN's int8 convolutions take no weight zero point: the engine runs such a
# layer as two or three int8 convolutions whose accumulators it sums before requantizing
# (`ptq bench` measures it below; sweeps run the int8 engine up to 7-bit weights).
#
# For each cell: how many test images get the same prediction from both engines (the claim
# tested: at least 99.9 %, as a mean over seeds with a 95 % bootstrap interval), how each class's
# accuracy moves from fake to int8 (with intervals over seeds), whether those moves fall on
# some classes more than on random groups of as many test images (the pseudo-classes of
# [the method](method)), and whether the int8 model moves more predictions than float32
# rounding alone moves: the chance yardstick of the engine `fake-reordered`, the same
# fake-quantized model evaluated again on channels-last batches of 7 (other kernels, another
# summation order; `ptqlib.quant.evaluation.Reordered`), on the same seeds. Last, which of the two
# engines strays from exact arithmetic: the engine `fake-float64` evaluates the same
# fake-quantized model in float64 (`ptqlib.quant.evaluation.Float64`: the weights' grid values,
# every activation rounded from a float64 value, exact within float64 rounding), and per seed the
# images fake quantization predicts differently from it are set against those the int8 model
# predicts differently from it.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
# [model, dataset, weight bits, activation bits] and optionally the calibration pool (default: the dataset's)
cells = [["resnet20", "cifar10-jpeg", 4, 4], ["resnet32", "cifar10-jpeg", 4, 4], ["resnet44", "cifar10-jpeg", 4, 4],
         ["resnet56", "cifar10-jpeg", 4, 4], ["efficientnet_lite0", "imagenet-val10", 6, 6, "train"]]
weights = None  # None: each model's project weights for the dataset
metric = "mse"
calib_size = 256
trials = 20
chance_draws = 1000
bench_folder = "results/bench"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ptqlib.analysis import engines
from ptqlib.analysis.cells import Cell
from ptqlib.analysis.verdicts import parts_frame
from ptqlib.app.report import publish_table
from ptqlib.study.store import ResultsStore

store = ResultsStore(store_path)
cell_of = {f"{m} W{w}A{a}" + (f" ({pool[0]} pool)" if pool else ""):
           Cell(model=m, dataset=d, pool=pool[0] if pool else None, w_bits=w, a_bits=a, metric=metric,
                calib_size=calib_size, weights=weights) for m, d, w, a, *pool in cells}
comparisons = [engines.compare(store, cell, trials, label=label, chance_draws=chance_draws)
               for label, cell in cell_of.items()]
missing = [c.label for c in comparisons if not c.trials]
comparisons = engines.across_cells([c for c in comparisons if c.trials])
if missing:
    print("No int8 trials paired with fake ones in this store for:", ", ".join(missing))
assert comparisons, f"no cell has both fake and int8 trials in {store_path}"
summary = engines.summary(comparisons)
publish_table(summary.set_index("cell").round(4), "summary")

# %% [markdown]
# Per cell: seed pairs, the mean and lowest share of images (%) on which the engines agree and
# how many seeds fall below 99.9 %, the mean number of differing images, both accuracies and
# their difference (int8 minus fake, points, with a bootstrap interval over seeds), the largest
# mean class difference against its chance band, the int8 minus the float-noise disagreement
# (images a seed) with its interval, the fake minus the int8 disagreement with exact arithmetic,
# and the four verdicts. The chance test runs once per cell, so with several cells one p-value
# under 0.05 comes by chance now and then: each line gives it Holm-corrected over the cells
# too, and the class-concentration verdict is "supported" only where the corrected p is below
# 0.05.

# %%
print("\n".join(engines.summary_lines(summary)))

# %% [markdown]
# ## Agreement per seed
#
# Each dot is one calibration seed: the share of test images whose predicted label is the same
# under fake quantization and on the int8 kernels. The dashed line is the 99.9 % target.

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
for i, c in enumerate(comparisons):
    jitter = np.random.default_rng(i).uniform(-0.15, 0.15, c.trials)
    ax.scatter(i + jitter, c.agreement["agreement"], s=14, alpha=0.7)
ax.axhline(engines.TARGET_AGREEMENT, color="C3", ls="--", lw=1, label=f"{engines.TARGET_AGREEMENT:g} %")
ax.set_xticks(range(len(comparisons)), [c.label for c in comparisons], rotation=15)
ax.set_ylabel("images predicted alike (%)")
ax.legend(loc="lower left")
plt.tight_layout()
plt.show()
per_seed = pd.concat([c.agreement.assign(cell=c.label) for c in comparisons], ignore_index=True)
publish_table(per_seed.set_index(["cell", "seed"]).round(3), "per_seed")

# %% [markdown]
# ## Per class: int8 minus fake accuracy
#
# Per class, the mean over seeds of the int8 accuracy minus the fake one, with its 95 % bootstrap
# interval over seeds. The grey band is the chance band of a single class: the central 95 % of
# the same mean difference over random groups of test images of the classes' size (the same
# random splits applied to both engines and every seed). A red dot lies outside it, on either
# side: a class whose images move more (or less) than a random group's would; with ten classes,
# one outside by chance is expected now and then. Whether the largest difference is beyond
# chance *taking all classes into account* is the second verdict of the table above.

# %%
columns = min(3, len(comparisons))
rows = -(-len(comparisons) // columns)
fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.8 * rows), squeeze=False)
for ax, c in zip(axes.flat, comparisons):
    engines.plot_class_gap(c.classes, ax=ax, title=c.label)  # each its own scale
for ax in axes.flat[len(comparisons):]:
    ax.set_visible(False)
plt.tight_layout()
plt.show()
classes = pd.concat([c.classes.assign(cell=c.label) for c in comparisons], ignore_index=True)
publish_table(classes.set_index(["cell", "class"]).round(3), "classes")

# %% [markdown]
# ## The tested parts
#
# The four parts per cell, as the [conclusions](conclusions) test theirs: the agreement against
# its stated target (supported when the whole interval lies above it, contradicted when it
# lies below); the largest class difference against chance (supported when fewer than 5 %
# of random splits give as large a difference, that share Holm-adjusted over the cells:
# `p (adjusted)`; contradicted when more than half of them do); and the
# images the int8 model predicts differently from fake quantization minus those the reordered
# fake model predicts differently, per seed (supported, "int8 moves more than float noise", when
# the interval of the mean lies above 0; contradicted when it lies below); and the images fake
# quantization predicts differently from the float64 model minus those the int8 model predicts
# differently from it, per seed (supported, "the float32 simulation strays from exact arithmetic
# more often than the int8 kernels", above 0; contradicted below).

# %%
parts = pd.concat([parts_frame(c.parts).assign(cell=c.label) for c in comparisons], ignore_index=True)
publish_table(parts.drop(columns="claim").set_index(["cell", "part"]), "parts")

# %% [markdown]
# ## Why the engines differ
#
# Both engines use the same grids, clamps and zero points, fold BatchNorm the same way, round a
# residual sum once and keep the first convolution and the classifier in float. They differ only
# where a requantization rounds: fake quantization rounds a float32 convolution output, whose
# partial sums were rounded in the order of its algorithm; oneDNN accumulates the integer
# products exactly in int32 and then scales in its own float order. A value within a float32
# rounding error of a tie between two levels can land one level apart (how many output
# elements did, given the same input levels, on a few cells: `results/bench/README.md`,
# `int8-agreement`). Whether that moves a prediction depends on the network and on the
# calibration, seed by seed in the strip plot above. One way a network could amplify such
# moves, a hypothesis this page does not test: a depthwise convolution's large BN-folded weights
# turn one level of its input into several of its output, as they would the fake-quantized
# model's own float noise. The third part measures that noise on every cell: the same fake model evaluated on
# channels-last batches of 7 instead of contiguous batches of 128 (`fake-reordered` trials, same
# seeds). Where the int8 model moves no more predictions than reordering does, the disagreement
# is float32 rounding amplified by the network, not a property of integer kernels; where it moves
# more, the int8 path itself adds to it.
#
# Reordering measures the size of float noise, not who is right. The fourth part asks exact
# arithmetic: the same model in float64, where a convolution's sum and a requantization are
# exact to about 1e-16 of a value. The int8 kernels accumulate exactly and round once, in
# float32, at the requantization; float32 fake quantization rounds every partial sum too. Where
# fake quantization strays from the float64 model on more images than the int8 model does, the
# two engines' disagreement is mostly the simulation's own rounding, and the integer model is the
# closer of the two to the quantized network the grids define.

# %% [markdown]
# ## Speed
#
# `ptq bench` measured the float pass, fake quantization and the int8 engine in one run (one
# thread; the machine was shared with other jobs, `results/bench/README.md`). Ratios are to the
# float32 pass over the same test images; a whole int8 trial includes the calibration, which
# for EfficientNet-Lite0 includes its MSE weight search (a sweep does it once per setting, a
# bench run every time).

# %%
bench = engines.bench_table(bench_folder)
publish_table(bench.set_index(["model", "w_bits", "a_bits"]), "bench")

# %% [markdown]
# The stored trials themselves: median seconds per trial calibrating (for int8, the conversion
# included) and evaluating the test set, as each sweep recorded them. The two engines' trials
# ran at different times with different thread counts and neighbours on the machine, so this
# compares orders of magnitude, not kernels.

# %%
seconds = pd.concat([engines.stored_seconds(store, cell, trials) for cell in cell_of.values()], ignore_index=True)
seconds = seconds.pivot(index="model", columns="engine", values=["trials", "calib_s", "eval_s"])
seconds = seconds.reindex([m for m, *_ in cells]).dropna(how="all")
seconds["trials"] = seconds["trials"].astype("Int64")
if ("eval_s", "int8") in seconds and ("eval_s", "fake") in seconds:
    seconds[("eval_s", "int8 / fake")] = seconds[("eval_s", "int8")] / seconds[("eval_s", "fake")]
publish_table(seconds.round(3), "stored_seconds")
