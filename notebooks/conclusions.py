# %% [markdown]
# # Do the study's conclusions hold here?
#
# The study (Yuan et al. 2023) drew four conclusions. Each is checked below against the
# results in the store, with the numbers it rests on and the rule used (see
# `ptqlib.conclusions`); a conclusion whose cells have too few trials is marked as such.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
weights = None
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 256
bias_classes = ["airplane", "bird", "cat", "ship"]
calib_sizes = [32, 256, 1024]  # the sizes compared (up to the largest the calibration pool allows)
bias_calib_size = None  # calibration images of the bias cells (None: calib_size)
recon_iters = 500
recon_trials = 50  # BRECQ trials per weighting in the remedy comparison (the study's 50 pairs)
trials = 50

# %%
from dataclasses import replace

import pandas as pd

from ptqlib.conclusions import VERDICT_LABELS, all_verdicts, remedy_verdicts
from ptqlib.store import ResultsStore
from ptqlib.study import Cell

store = ResultsStore(store_path)
cell = Cell(model, dataset, w_bits, a_bits, metric, calib_size, weights=weights)
verdicts = all_verdicts(store, cell, trials, bias_classes, replace(cell, calib_size=max(calib_sizes), iters=recon_iters),
                        tuple(calib_sizes), bias_calib_size)
table = pd.DataFrame([{"conclusion": v.conclusion, "verdict": VERDICT_LABELS[v.supported], "trials": v.trials,
                       "evidence": v.evidence} for v in verdicts], index=range(1, len(verdicts) + 1))
pd.set_option("display.max_colwidth", None)
table

# %%
for i, v in enumerate(verdicts, 1):
    print(f"{i}. {v.conclusion}\n   -> {VERDICT_LABELS[v.supported]} ({v.trials} trials): {v.evidence}\n")

# %% [markdown]
# ## Beyond the study: can the worst class be protected?
#
# The two remedies tried in [Can PTQ protect the worst class?](protect), checked by the same
# rule: a significant gain of the mean worst-class accuracy over paired seeds, a smaller
# spread, and no significant loss of average accuracy.

# %%
recon_cell = replace(cell, calib_size=max(calib_sizes), optimizer="brecq", iters=recon_iters)
for v in remedy_verdicts(store, cell, trials, recon_cell, recon_trials):
    print(f"- {v.conclusion}\n   -> {VERDICT_LABELS[v.supported]} ({v.trials} trials): {v.evidence}\n")
