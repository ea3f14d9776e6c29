# %% [markdown]
# # A first look: one calibration set, four settings
#
# Before the many-trial study, one quantization per setting of the fine-tuned ResNet-20 on
# the JPEG CIFAR-10 copy (`reference` preset, 256 calibration images, seed 0), run with
# `ptq quantize ... --json` and stored in `results/quantize/`. The average hides how unequal
# the damage is across classes.

# %% tags=["parameters"]
results_dir = "results/quantize"
recon_dir = "results/recon"
model = "resnet20"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ptqlib.app.report import publish_table

runs = [json.loads(p.read_text()) for p in Path(results_dir).glob(f"{model}-*.json")]
runs.sort(key=lambda r: (-r["config"]["quant"]["w_bits"], r["config"]["quant"]["metric"]))
assert runs, f"no results for {model} in {results_dir}"


def label(run):
    q = run["config"]["quant"]
    return f"W{q['w_bits']}A{q['a_bits']} {q['metric']}"


fp = pd.Series(runs[0]["fp_per_class"], name="FP")
per_class = pd.DataFrame({label(r): r["per_class"] for r in runs})
drop = per_class.rsub(fp, axis=0)
summary = pd.DataFrame({
    label(r): {"average %": r["avg"], "drop of the average": r["fp_avg"] - r["avg"],
               "worst class": r["worst_class"], "worst-class accuracy %": r["worst_class_acc"],
               "largest class drop": drop[label(r)].max(), "seconds": r["seconds"]}
    for r in runs}).T
publish_table(summary.round(2), "summary")

# %%
ax = drop.plot.bar(figsize=(9, 3.5), width=0.8)
ax.axhline(0, color="black", lw=0.8)
ax.set_ylabel("accuracy drop vs FP (points)")
ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()

# %%
for name in drop.columns:
    avg_drop = summary.loc[name, "drop of the average"]
    print(f"{name}: the average drops {avg_drop:.2f} points; class '{drop[name].idxmax()}' drops "
          f"{drop[name].max():.2f} points ({drop[name].max() / max(avg_drop, 1e-9):.1f}x the average drop)"
          if avg_drop > 0.05 else f"{name}: the average drops {avg_drop:.2f} points; the largest class drop is "
          f"{drop[name].max():.2f} points ({drop[name].idxmax()})")

# %% [markdown]
# ## Reconstruction, one calibration set
#
# Grid search against AdaRound, BRECQ and QDrop on the same 1024 calibration images (seed 0),
# with the number of reconstruction iterations per unit each run used (the reference uses
# 20 000), from `results/recon/` (`ptq quantize ... --calib-size 1024 --optimizer NAME --iters N --json`).

# %%
recon_runs = [json.loads(p.read_text()) for p in Path(recon_dir).glob(f"{model}-*.json") if p.stat().st_size]
assert recon_runs, f"no reconstruction results for {model} in {recon_dir}"


def recon_label(run):
    q, recon = run["config"]["quant"], run["config"].get("recon")
    return (f"W{q['w_bits']}A{q['a_bits']}", run["config"]["optimizer"], recon["iters"] if recon else None)


recon = pd.DataFrame([{"bits": recon_label(r)[0], "optimizer": recon_label(r)[1], "iterations": recon_label(r)[2],
                       "average %": r["avg"], "FP %": r["fp_avg"], "worst class": r["worst_class"],
                       "worst-class %": r["worst_class_acc"], "minutes": r["seconds"] / 60} for r in recon_runs])
order = {"grid": 0, "adaround": 1, "brecq": 2, "qdrop": 3}
recon = recon.sort_values(["bits", "optimizer"], key=lambda c: c.map(order) if c.name == "optimizer" else c,
                          ascending=[False, True]).reset_index(drop=True)
publish_table(recon.round(2), "reconstruction")

# %%
for bits, group in recon.groupby("bits", sort=False):
    grid = group[group["optimizer"] == "grid"]
    if grid.empty:
        continue
    base = grid["average %"].iloc[0]
    print(f"{bits}: grid {base:.2f} %; " + "; ".join(
        f"{r.optimizer} ({r.iterations:.0f} it.) {r['average %'] - base:+.2f} points, worst class {r['worst-class %']:.1f} %"
        for _, r in group[group["optimizer"] != "grid"].iterrows()))
