# %% [markdown]
# # Data and models
#
# The CIFAR-10 copy used here (`cifar10-jpeg`) was **re-encoded as JPEG by its publisher**:
# it is lossy, and the standard pretrained CIFAR ResNets lose about 11 points on its test
# split (ResNet-20: 91.8 % on the original, 81.0 % here). Every CIFAR model in this report was
# therefore fine-tuned on the train split of this copy with `ptq train` (SGD, one-cycle
# schedule, random crop and flip) starting from the public pretrained checkpoint. The table
# below is read from the training cards committed next to the weights in `weights/`.

# %% tags=["parameters"]
weights_dir = "weights/cifar10-jpeg"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

cards = {p.stem: json.loads(p.read_text()) for p in sorted(Path(weights_dir).glob("*.json"))}
assert cards, f"no training cards in {weights_dir}"
recipe = pd.DataFrame({
    name: {"start": Path(c["config"]["init"]).name if c["config"]["init"] else "scratch",
           "epochs": c["config"]["epochs"], "peak lr": c["config"]["peak_lr"],
           "minutes (CPU)": round(c["train_seconds"] / 60, 1),
           "test acc. before %": c["test_accuracy_before"], "test acc. after %": round(c["test_accuracy"], 2)}
    for name, c in cards.items()}).T
recipe

# %% [markdown]
# ## Float accuracy of every class

# %%
per_class = pd.DataFrame({name: c["per_class"] for name, c in cards.items()})
ax = per_class.plot.bar(figsize=(9, 3.5), width=0.8)
ax.set_ylabel("FP test accuracy (%)")
ax.set_ylim(max(0, per_class.values.min() - 10), 100)
ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()
per_class.round(2)

# %%
worst = per_class.idxmin()
print("Weakest class of each float model:",
      ", ".join(f"{m}: {worst[m]} ({per_class.loc[worst[m], m]:.1f} %)" for m in per_class.columns))
