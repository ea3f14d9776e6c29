# %% [markdown]
# # A first look: one calibration set per setting
#
# Before the many-trial study, one quantization per setting of the fine-tuned ResNet-20 on
# the JPEG CIFAR-10 copy (`reference` preset, 256 calibration images, seed 0), run with
# `ptq quantize ... --json` and stored in `results/quantize/` (the table lists the settings).
# Each number here comes from a single calibration set: this page shows what the study
# measures, with no interval and no comparison with chance, and draws no conclusion; the
# following pages repeat each setting over many calibration sets and test what this page can
# only show.

# %% tags=["parameters"]
results_dir = "results/quantize"
recon_dir = "results/recon"
model = "resnet20"

# %%
import matplotlib.pyplot as plt

from ptqlib.analysis.files import quantize_runs
from ptqlib.analysis.runs import (class_drops, drop_lines, gain_lines, gains_over_grid, largest_drops,
                                  reconstruction_table, run_summary, sort_runs)
from ptqlib.app.report import publish_table

runs = sort_runs(quantize_runs(results_dir, f"{model}-*.json"))
assert runs, f"no results for {model} in {results_dir}"
drop = class_drops(runs)
publish_table(run_summary(runs).round(2), "summary")

# %%
ax = drop.plot.bar(figsize=(9, 3.5), width=0.8)
ax.axhline(0, color="black", lw=0.8)
ax.set_ylabel("accuracy drop vs FP (points)")
ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()

# %%
print(*drop_lines(largest_drops(runs)), sep="\n")

# %% [markdown]
# ## Reconstruction, one calibration set
#
# Grid search against AdaRound, BRECQ and QDrop on the same 1024 calibration images (seed 0),
# with the number of reconstruction iterations per unit each run used (the reference uses
# 20 000), one run each (the [optimizer page](optimizer) has the many-seed comparison), from
# `results/recon/` (`ptq quantize ... --calib-size 1024 --optimizer NAME --iters N --json`).

# %%
recon = reconstruction_table(quantize_runs(recon_dir, f"{model}-*.json"))
assert len(recon), f"no reconstruction results for {model} in {recon_dir}"
publish_table(recon.round(2), "reconstruction")

# %%
print(*gain_lines(gains_over_grid(recon)), sep="\n")
