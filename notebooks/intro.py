# %% [markdown]
# # How reliable is post-training quantization, class by class?
#
# Post-training quantization (PTQ) papers report one number: the average top-1 accuracy of
# the quantized model. This report asks what that average hides. It reproduces and extends the
# benchmark of Yuan et al., *Benchmarking the Reliability of Post-training Quantization: a
# Particular Focus on Worst-case Performance* (arXiv 2303.13003, 2023): quantize a model many
# times with randomly drawn calibration sets and measure the accuracy of **every class** and
# of the **worst class**, not only the average.
#
# Every number below, and every verdict, is computed from the results store
# (`results/trials.sqlite`, built on first use from the parts committed in `results/trials/`) by
# the `ptqlib` package of this repository (the prose between them says how to read them);
# `make report` regenerates the book and `ptq section NAME -p KEY VALUE` reruns one section with
# new parameters.

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

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from ptqlib.analysis.aggregate import inventory
from ptqlib.analysis.plotting import drop_boxplot
from ptqlib.app.report import publish_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, factor_frame
from ptqlib.analysis.stats import largest_drop, largest_drop_lines
from ptqlib.analysis.verdicts import all_parts, class_bands, design_for, headline, load, verdict_lines

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size)
tidy = factor_frame(store, cell, "noise", [0.0], trials)
bands = class_bands(load(store, cell, "noise", [0.0], trials))
assert len(tidy), "the default cell has no trials in the store"
design = design_for(model, dataset, pool=pool, w_bits=w_bits, a_bits=a_bits, metric=metric, calib_size=calib_size,
                    weights=weights, trials=trials)
parts = all_parts(store, design)
top = largest_drop(tidy)
print(f"The answer, for {model} at W{w_bits}A{a_bits} ({metric} ranges, {calib_size} calibration images), "
      f"over {top['trials']} calibration sets drawn at random (95 % bootstrap intervals over them):")
print("\n".join(f"- {line}" for line in largest_drop_lines(top)))
first = [p for p in parts if p.claim == "1"]
print(f"- the {len(first)} tests of the study's first claim, against the stated effect sizes and against chance "
      "(random groups of as many test images, the conclusions' chance model):")
print("\n".join(verdict_lines(first, indent="  ")))

# %% [markdown]
# Each box is one class's drop over the calibration sets; the grey band is where a class's mean
# drop falls when the test images are grouped at random instead of by class (the chance model of
# the [conclusions](conclusions)). A class whose mean drop lies outside the band is hit more (or
# less) than a random group of as many images; chance alone puts about one class in twenty
# there (the [reliability page](reliability) counts them against that).

# %%
drop_boxplot(tidy, title=f"{model} W{w_bits}A{a_bits} {metric}: accuracy drop per class over calibration sets",
             band=(bands["drop_low"].iloc[0], bands["drop_high"].iloc[0]))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What this replication finds
#
# The study's four claims, each tested in its parts against a stated effect size or against
# chance (the [conclusions](conclusions) give every part's estimate, interval and chance band,
# and the same tests on every model). Claim 4 is tested on the 50-seed reconstruction cells,
# which ran the `joint` variant at 500 iterations per unit; [the optimizer page](optimizer)
# measures how far that is from the reference code's 20,000 and tests claim 4 on the reference
# variant too.

# %%
display(Markdown(headline(parts)))

# %% [markdown]
# Where this comes from and how far it goes: the sections vary one factor at a time (noise,
# class bias, calibration size, bit-width, calibration metric, optimizer) and give worst-case
# statistics with confidence intervals, each on ResNet-20 (CIFAR-10), and all but the optimizer
# with the same study on EfficientNet-Lite0 (ImageNet, calibrated from the 10-class pool) on the
# page below it; [Depth](depth) repeats the default cell, sizes, metrics and bit-widths on
# ResNet-32, -44 and -56; [The EfficientNet-Lite family](family) does the same for Lite0, -1 and
# -2 calibrated from all 1000 ImageNet classes; [Simulated vs integer](integer) checks the
# simulated quantization against integer kernels; [Can PTQ protect the worst
# class?](protect) tries two remedies and looks below accuracy (churn, calibration error,
# forgotten images, corrupted inputs); [Conclusions](conclusions) tests each of the study's
# claims in its parts, with intervals and chance bands, on every model; [Rerun it yourself](rerun) says
# how to rerun a section and what a rerun reproduces.
#
# ## What this edition contains
# The number of trials stored for every setting (a setting's trials differ only in the seed
# of the calibration draw). The study's cells are meant to have 50 trials; fewer is by design
# for some (the iteration curve's first 10 seeds per count, the 20 of Lite1 and Lite2) and, for
# others, trials still being computed; each section says how many trials it shows. Seconds per trial are as measured by the runs that
# produced them (calibration plus evaluation on the whole test set, on a 2-core CPU shared with
# other jobs); `ptq bench` gives controlled timings.

# %%
pd.set_option("display.max_rows", None)  # the whole inventory, every setting
publish_table(inventory(store.trials()).round(2), "inventory")
