# %% [markdown]
# # Do the study's conclusions hold here?
#
# The study (Yuan et al. 2023) drew four conclusions. Each is tested here in its parts
# (`ptqlib.analysis.verdicts`, also `ptq verdicts --model M --data D`): every part is an estimate
# from the stored trials with a 95 % bootstrap interval over calibration seeds (widened for few
# seeds, see [the method](method)), and either a stated effect size that the whole interval must
# clear (a part about sizes) or a chance band (a part about classes): the same statistic on
# *pseudo-classes*, random groups of test images of the real classes' sizes, which is what it would
# be if quantization errors ignored classes. A part is **supported** when its interval clears the
# effect size (or when fewer than 5 % of the random groupings reach it), **contradicted** when the
# interval lies on the other side (or when more than half of the random groupings reach it),
# **inconclusive** in between, and **not enough data** when a cell has fewer than 5 trials; in the
# lists below a supported part *holds*, a contradicted one *does not hold* and an inconclusive one
# is *open*. A part about sizes also gives the band its statistic has on the random groups
# ("chance alone"); where that band lies beyond the effect size too, random groups would pass the
# part as well, and it is listed as *holds, as random groups would too*: its chance part decides
# whether the classes show it. A claim holds when all its parts do (claim 3: at some bit-width,
# each width one more chance to pass, so its intervals are widened to 1 - 0.05 / k for the k
# widths and its chance parts Holm-adjusted over them). A trial's *worst
# class* is its class of lowest accuracy; in claim 4, *the class losing most to grid search* is the
# class whose mean accuracy over the paired seeds falls most from grid search's. The effect sizes,
# stated once in `ptqlib.analysis.verdicts.Effects`: "much more" is at least twice; "robust" is a
# change under 1 point; "barely reduces" keeps at least 70 % of the std; "more reliable" is a worst
# class gaining 1 point more than the average, or a class spread or variability at most 80 % of grid
# search's.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 256
bias_classes = ["airplane", "bird", "cat", "ship"]
calib_sizes = [32, 256, 1024]  # the sizes compared (up to the largest the calibration pool allows)
bias_calib_size = None  # calibration images of the bias cells (None: calib_size)
bit_widths = [8, 6, 4]
recon_iters = 500
recon_trials = 50  # BRECQ trials per weighting in the remedy comparison (the study's 50 pairs)
trials = 50
chance_draws = 1000
compare = ["resnet20", "resnet32", "resnet44", "resnet56"]  # models shown side by side on this dataset
compare_imagenet = ["efficientnet_lite0"]  # and beside them, on imagenet-val10 at its own default cell
imagenet_pool = "train"  # their calibration pool: the 10-class one holds their 50-trial cells

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from ptqlib.analysis.conclusions import remedy_verdicts
from ptqlib.analysis.plotting import verdict_matrix
from ptqlib.app.report import optimizer_study, publish_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell
from ptqlib.analysis.verdicts import (all_parts, design_for, findings, paired_trials, parts_frame, reconstruction_claim,
                                     side_by_side)

store = ResultsStore(store_path)
settings = dict(w_bits=w_bits, a_bits=a_bits, metric=metric, calib_size=calib_size, weights=weights, trials=trials,
                bias_classes=tuple(bias_classes), bias_size=bias_calib_size, sizes=tuple(calib_sizes),
                bit_widths=tuple(bit_widths), recon_size=max(calib_sizes), recon_iters=recon_iters)
design = design_for(model, dataset, pool=pool, **settings)
parts = all_parts(store, design, chance_draws)
display(Markdown(findings(parts, f"{model} on {dataset}")))
display(Markdown(f"Claim 4 rests on the `{design.recon_variant}` variant's reconstructions at {recon_iters} "
                 f"iterations per unit ({design.recon_size} calibration images; paired trials per method: "
                 f"{paired_trials(parts, design.methods)}); the reference code runs 20,000, and each method as its "
                 "code runs it is the `reference` variant. The [optimizer section](optimizer) (ResNet-20 on "
                 "CIFAR-10) measures what more iterations and the reference variant change."))

# %% [markdown]
# ## Every part
#
# `effect`: the stated effect size the interval must clear (`> 2`: above 2), or `chance`: the
# part is a permutation test against the pseudo-classes, whose central 95 % is the chance band.
# Claim 3's intervals are at 1 - 0.05 / k for its k bit-widths and `p (adjusted)` is its chance
# parts' p Holm-adjusted over them; `random groups pass`: the chance band lies beyond the effect
# size too.

# %%
pd.set_option("display.max_colwidth", 80)
publish_table(parts_frame(parts).set_index(["claim", "part"]), "parts")

# %% [markdown]
# ## Claim 4 at the chosen count
#
# The [optimizer section](optimizer) chooses how many iterations per unit the reconstructions
# get (its study-wide count: each smaller count is tested against the reference code's 20,000,
# and where none is shown within the margin for some method, the count is 20,000 itself, the
# reference's, chosen rather than shown converged) and reruns the study's reconstruction cells at
# that count with each method as its reference code runs it (the `reference` variant). Once it
# has a count, claim 4 again on those trials, where this page's cell is the one the count was
# decided on, with the seeds stored so far (the table's trials column; the rerun's planned number is
# on the optimizer section). While the rerun goes on these verdicts are interim: the number of
# seeds is fixed in advance, not by the verdicts, and each interval is as wide as the seeds
# stored so far allow.

# %%
study = optimizer_study(store)
print(study.line)
chosen = study.design_on(trials, model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits,
                         a_bits=a_bits, metric=metric, calib_size=max(calib_sizes))
if isinstance(chosen, str):
    print(chosen)
else:
    chosen_parts = reconstruction_claim(store, chosen, chance_draws)
    display(Markdown(findings(chosen_parts, f"{model} on {dataset} at {chosen.recon_iters:,} iterations per unit, "
                              f"`{chosen.recon_variant}` variant ({chosen.recon_size} calibration images; "
                              f"paired trials per method: {paired_trials(chosen_parts, chosen.methods)})",
                              claims=("4",))))
    publish_table(parts_frame(chosen_parts).set_index(["claim", "part"]), "claim4_chosen_count")

# %% [markdown]
# ## Side by side
#
# The same tests on each model (colour: verdict; text: estimate, in brackets the trials it rests
# on; the table under the figure gives each part's interval and chance band). The ImageNet models are
# tested at their own default cell (W6A6, sizes up to 1000, bias cells of 128 images), so some
# of their parts have names of their own; a blank cell is a part a model is not tested on.

# %%
designs = {f"{m}": replace(design, cell=replace(design.cell, model=m)) for m in compare}
designs |= {f"{m} (ImageNet, pool {imagenet_pool})": design_for(m, "imagenet-val10", pool=imagenet_pool, trials=trials,
                                                                 recon_iters=recon_iters)
            for m in compare_imagenet}
table = side_by_side(store, designs, chance_draws)
verdict_matrix(table, "The study's claims, part by part")
plt.tight_layout()
plt.show()
publish_table(table, "side_by_side")

# %% [markdown]
# ## Beyond the study: can the worst class be protected?
#
# The two remedies tried in [Can PTQ protect the worst class?](protect) (on EfficientNet-Lite0:
# [its page](protect_lite0)), each against its
# baseline on the same calibration sets: supported when the 95 % interval of the worst class's
# mean per-seed gain lies above 0 and the average loses less than 1 point (its interval above
# -1); contradicted when the worst class's interval lies below 0 or the average's below -1.

# %%
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size)
recon_cell = replace(cell, calib_size=max(calib_sizes), optimizer="brecq", iters=recon_iters)
print(*(f"- {v.text()}" for v in remedy_verdicts(store, cell, trials, recon_cell, recon_trials)), sep="\n\n")
