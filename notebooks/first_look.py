# %% [markdown]
# # A first look: one calibration set, four settings
#
# Before the many-trial study, one quantization per setting of the fine-tuned ResNet-20 on
# the JPEG CIFAR-10 copy (`reference` preset, 256 calibration images, seed 0), run with
# `ptq quantize ... --json` and stored in `results/quantize/`. The average hides how unequal
# the damage is across classes.

# %% tags=["parameters"]
results_dir = "results/quantize"
model = "resnet20"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

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
summary.round(2)

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
