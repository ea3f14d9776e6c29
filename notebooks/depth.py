# %% [markdown]
# # Depth: ResNet-20, -32, -44 and -56
#
# The same study on four depths of the CIFAR ResNet, each fine-tuned on the JPEG copy (see
# [Data and models](models)): does a deeper network make the worst class safer (tested below),
# and do the factors act on it as they act on ResNet-20? Each factor is varied alone around the
# default cell; every point is a mean over trials (error bars: std over trials); the table of
# trials says how many each cell has.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
models = ["resnet20", "resnet32", "resnet44", "resnet56"]
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None  # None: each model's project weights for the dataset
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 256
factors = {"calib_size": [1, 32, 256, 1024], "metric": ["minmax", "mse", "kl", "cosine"], "w_bits": [8, 6, 4]}
trials = 50

# %%
from dataclasses import replace

import matplotlib.pyplot as plt

from ptqlib.analysis.aggregate import model_summary_lines, sorted_by
from ptqlib.analysis.plotting import summary_lines, verdict_matrix
from ptqlib.analysis.stats import contrast_lines, model_contrasts
from ptqlib.analysis.verdicts import design_for, side_by_side
from ptqlib.app.report import publish_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, default_summaries, models_frame, models_summaries

store = ResultsStore(store_path)
cell = Cell(model=models[0], dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size)
summaries, counts = models_summaries(store, cell, models, factors, trials)
assert summaries, "no trials of these models in the store"
publish_table(counts.T, "trials")  # trials per cell (the default cell appears under each factor)

# %%
fig, axes = plt.subplots(2, len(summaries), figsize=(5 * len(summaries), 7), squeeze=False)
for col, (factor, summary) in enumerate(summaries.items()):
    levels = factors[factor]
    summary_lines(summary, factor, "worst_mean", levels, ax=axes[0, col]).set_ylabel("worst-class accuracy (%)")
    summary_lines(summary, factor, "avg_mean", levels, ax=axes[1, col]).set_ylabel("average accuracy (%)")
    axes[0, col].set_title(f"varying {factor}")
fig.suptitle(f"W{w_bits}A{a_bits} {metric}, {calib_size} images unless varied: mean ± std over trials")
plt.tight_layout()
plt.show()

# %% [markdown]
# Per model and level: the average and the worst class (mean and std over trials, and the
# class most often worst), the median over classes of a class's std over trials, and the
# largest mean drop of a class against FP.

# %%
for factor, summary in summaries.items():
    publish_table(sorted_by(summary, {"model": models, factor: factors[factor]}).set_index(["model", factor]).round(2),
                  f"summary_{factor}")

# %%
print("\n".join(model_summary_lines(default_summaries(store, cell, models, trials))))

# %% [markdown]
# ## Is a deeper network's worst class safer?
#
# Each deeper model against the shallowest at the default cell, on two per-trial statistics: the
# worst class's accuracy, and the largest class drop against the model's own float accuracy
# (the quantization's harm to its most affected class). The change is the deeper model's mean
# minus the shallowest's, with its interval (`ptqlib.analysis.stats.model_contrasts`: a seed
# draws the same calibration images for every depth, so the shared seeds are paired); an
# interval clear of 0 is a difference chance alone does not explain; the comparisons share the 5 %
# (Bonferroni), so each interval is wider than 95 %.

# %%
contrasts = model_contrasts(models_frame(store, cell, models, "noise", [0.0], trials), models[0])
if len(contrasts):
    publish_table(contrasts.round(2).assign(confidence=contrasts["confidence"]).set_index(["model", "statistic"]),
                  "model_contrasts")  # the confidence unrounded: 0.9875, not 0.99
print("\n".join(contrast_lines(contrasts, models[0])))


# %% [markdown]
# ## The study's claims at each depth
#
# The tests of [the conclusions page](conclusions) (`ptqlib.analysis.verdicts`) on every depth: each part
# an estimate with its interval, against a stated effect size or against chance (colour:
# verdict; text: estimate, in brackets the trials it rests on; the table under the figure gives
# each part's interval and chance band). Claims 2 (noise and bias) and 4 need cells a deeper model may not
# have: a part reads "not enough data" where its cell has too few trials.

# %%
design = design_for(models[0], dataset, pool=pool, w_bits=w_bits, a_bits=a_bits, metric=metric, calib_size=calib_size,
                    weights=weights, trials=trials)
table = side_by_side(store, {m: replace(design, cell=replace(design.cell, model=m)) for m in models})
verdict_matrix(table, f"{dataset}: the study's claims at each depth")
plt.tight_layout()
plt.show()
publish_table(table, "verdicts")
