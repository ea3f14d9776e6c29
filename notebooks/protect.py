# %% [markdown]
# # Can PTQ protect the worst class?
#
# The sections before show that a quantized model's worst class moves from one calibration
# draw to the next. This section tries two remedies that need no extra data, and measures
# what quantization changes below the accuracy numbers.
#
# - **Class-balanced (stratified) calibration sets**: every class gets the same number of
#   calibration images, instead of a uniform random draw in which some classes are rare.
# - **Class-weighted reconstruction** (BRECQ with a distributionally robust loss): each
#   calibration image's reconstruction error is weighted by how badly its class is currently
#   reconstructed, `K * softmax(eta * L_c / mean(L))` over running per-class errors `L_c`.
#
# Both are compared with their baseline on the **same seeds**, so each pair of trials differs
# only by the remedy; differences are tested per class with the Wilcoxon signed-rank test
# (Holm-corrected over the classes). A remedy "protects the worst class" when it raises the
# mean worst-class accuracy and lowers its spread over trials without costing average accuracy.

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
weights = None  # None: the project's default weights for the dataset
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 256
trials = 50
recon_calib_size = 1024
recon_iters = 500
recon_trials = 50
recon_missing = ""  # why the class-weighted comparison may lack trials (shown only then)
exemplars_per_class = 6
robustness_file = "results/robustness/resnet20-w4a4-mse-256.json"  # written by `ptq robustness`
compute_missing = False  # True: run the missing trials first (needs PTQ_DATA)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ptqlib.analysis.aggregate import worst_class
from ptqlib.analysis.conclusions import protects_worst_class
from ptqlib.data import class_label
from ptqlib.analysis.plotting import image_grid, worst_class_boxes
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import churn, modal_predictions, paired_test
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, ensure_trials, factor_frame, trial_counts

store = ResultsStore(store_path)
cell = Cell(model, dataset, w_bits, a_bits, metric, calib_size, weights=weights)
recon_cell = Cell(model, dataset, w_bits, a_bits, metric, recon_calib_size, weights=weights, optimizer="brecq",
                  iters=recon_iters)
if compute_missing:
    print(ensure_trials(store, cell, "sampling", ["random", "stratified"], trials))
    print(ensure_trials(store, recon_cell, "class_weighting", [None, "dro"], recon_trials))
sampling = factor_frame(store, cell, "sampling", ["random", "stratified"], trials)
weighting = factor_frame(store, recon_cell, "class_weighting", [None, "dro"], recon_trials)
weighting["weighting"] = weighting["class_weighting"].fillna("none")
print("trials per sampling:", ", ".join(f"{k}: {n}" for k, n in trial_counts(sampling, "sampling").items()))
print(f"BRECQ trials ({recon_calib_size} images, {recon_iters} iterations per block) per weighting:",
      ", ".join(f"{k}: {n}" for k, n in trial_counts(weighting, "weighting").items()))


# %%
def show_remedy(frame: pd.DataFrame, factor: str, base: str, alt: str, name: str, title: str,
                missing: str = "") -> None:
    """Worst class and average per trial, the worst-case table, the per-class paired test and
    the verdict of the remedy ``alt`` against ``base``; ``missing`` says why there may be none."""
    if frame.empty:
        print(f"No trials of this comparison for {model} in the store. {missing}".strip())
        return
    if not {base, alt} <= set(frame[factor]):
        print(f"Only one side of this comparison is in the store. {missing}".strip())
    worst_class_boxes(frame, factor, [base, alt], title=title)
    plt.tight_layout()
    plt.show()
    publish_table(worst_class(frame, by=[factor]).set_index(factor).round(2), f"worst_class_{factor}")
    if {base, alt} <= set(frame[factor]):
        publish_table(paired_test(frame, factor, base, alt).round(4), f"paired_{factor}")
    v = protects_worst_class(frame, factor, base, alt, name)
    print(f"{v.verdict.capitalize()} -- {v.conclusion}")
    print(v.evidence)


# %% [markdown]
# ## Class-balanced calibration sets
#
# Grid search (`mse` ranges) on 256 calibration images: each trial's worst-class and average
# accuracy, then each class tested between the two samplings.

# %%
show_remedy(sampling, "sampling", "random", "stratified", "Stratified sampling", f"{model} W{w_bits}A{a_bits} {metric}")

# %% [markdown]
# ## Class-weighted reconstruction
#
# BRECQ on the same calibration sets, with the plain loss and with the class-weighted loss.

# %%
show_remedy(weighting, "weighting", "none", "dro", "Class-weighted BRECQ", f"{model} W{w_bits}A{a_bits} BRECQ",
            recon_missing)

# %% [markdown]
# ## What quantization changes below the accuracy
#
# For the default cell (random sampling): how many test predictions change against the FP
# model (*churn*; "lost" were right before and wrong after, "gained" the reverse), how the
# expected calibration error (ECE, 15 bins) moves, and which images are *forgotten*: those
# whose most frequent prediction over all trials differs from the FP prediction
# (quantization-identified exemplars, after Hooker et al. 2019).

# %%
where = {**cell.where(), **(store.latest_fingerprints(model, dataset, weights) or {})}
runs, preds, fp_preds, labels = store.predictions(**where)
first = runs["seed"].argsort().to_numpy()[:trials]  # the first seeds, as in the other sections
runs, preds = runs.iloc[first], preds[first]
flips = pd.DataFrame([churn(p, fp_preds, labels) for p in preds])
print(f"{len(preds)} trials: on average {flips['flip_rate'].mean():.2f} % of test predictions change "
      f"(std {flips['flip_rate'].std():.2f}); {flips['lost'].mean():.2f} % go from right to wrong and "
      f"{flips['gained'].mean():.2f} % from wrong to right, so {flips['lost_share'].mean():.1f} % of the flips "
      f"were right before.")
fp_ece = store.fp_reference().set_index(["weights_fp", "data_fp"]).loc[(where["weights_fp"], where["data_fp"]), "ece"]
print(f"ECE of the FP model: {fp_ece:.2f} %. Quantized, over the trials that recorded it "
      "(trials run before ECE was stored have none):")
settings = ["w_bits", "a_bits", "metric", "optimizer", "variant", "iters", "calib_size", "noise", "bias_class",
            "sampling", "class_weighting"]
recorded = store.trials(model=model, dataset=dataset, weights_fp=where["weights_fp"], data_fp=where["data_fp"])
recorded = recorded[recorded["ece"].notna()]
recorded = recorded.fillna({"bias_class": "-", "class_weighting": "-", "variant": "-", "iters": 0})
publish_table(recorded.groupby(settings)["ece"].agg(trials="size", mean="mean", std="std").round(2), "ece")

# %%
mode, agreement = modal_predictions(preds)
forgotten = np.flatnonzero(mode != fp_preds)
present = np.unique(labels)  # stored per-class results follow the label order of the present classes
name = {c: class_label(n) for c, n in zip(present.tolist(), runs.iloc[0]["per_class"])}


def label_name(label: int) -> str:
    return name.get(int(label), f"label {label}")


per_class = pd.DataFrame({"test images": [(labels == c).sum() for c in present],
                          "forgotten": [(labels[forgotten] == c).sum() for c in present]},
                         index=[name[c] for c in present.tolist()])
per_class["forgotten %"] = 100 * per_class["forgotten"] / per_class["test images"]
print(f"{len(forgotten)} test images ({100 * len(forgotten) / len(labels):.2f} %) are forgotten: their modal "
      f"prediction over {len(preds)} trials differs from the FP model's."
      + (f" Most: '{per_class['forgotten %'].idxmax()}' ({per_class['forgotten %'].max():.2f} % of its images)."
         if len(forgotten) else ""))
publish_table(per_class.round(2), "forgotten")

# %%
from ptqlib.data import DataError, load_split, readable_names
from ptqlib.models import model_info

try:
    test = load_split(dataset, "test", model_info(model).input_size)
except DataError as exc:
    test = None
    print(f"The test images are not available here, so the forgotten images are not shown ({exc}).")
else:  # predictions outside the test classes (1000-way ImageNet) get their names too
    name = dict(enumerate(readable_names(test.class_names))) | name
if test is not None and len(forgotten):
    shown = np.concatenate([forgotten[labels[forgotten] == c][:exemplars_per_class] for c in present])
    captions = [f"{label_name(labels[i])}\nFP: {label_name(fp_preds[i])}\nQ: {label_name(mode[i])}\n"
                f"({100 * agreement[i]:.0f} % of trials)" for i in shown]
    image_grid(test.images[shown].numpy(), captions, columns=exemplars_per_class,
               title="forgotten images, by true class: FP prediction / modal quantized prediction")
    plt.show()

# %% [markdown]
# ## Corrupted inputs
#
# Does quantization cost more on corrupted images, and for which classes? The FP model and
# quantized models of the default cell (the first seeds of the study) are evaluated on
# copies of the test split with five corruptions at three severities, made offline at fixed
# seeds (see `ptqlib.analysis.robustness`). Colour: mean change of accuracy from FP to quantized on
# the same inputs; text: its std over the quantized models.

# %%
import json
from pathlib import Path

from ptqlib.analysis.plotting import delta_heatmap
from ptqlib.analysis.robustness import quantization_change

path = Path(robustness_file)
if not path.exists():
    print(f"{path} does not exist; make it with: ptq robustness --model {model} --data {dataset} "
          f"--w-bits {w_bits} --a-bits {a_bits} --metric {metric} "
          f"--calib-size {calib_size} --trials 3 --out {path}")
else:
    result = json.loads(path.read_text())
    rob = pd.DataFrame(result["rows"])
    change, change_std = (f.rename(index=class_label) for f in quantization_change(rob))
    n_quant = rob.loc[rob["model"] == "quantized", "seed"].nunique()
    delta_heatmap(change, change_std, "corruption and severity",
                  f"{result['config']['model']}: quantized - FP accuracy ({n_quant} quantized models)",
                  text_format="{:.2f}")
    plt.xticks(rotation=60, ha="right")
    plt.tight_layout()
    plt.show()
    fp_avg = rob[rob["model"] == "fp"].groupby(["corruption", "severity"])["acc"].mean()
    print(f"Computed in {result['seconds'] / 60:.1f} min. Quantization changes the average by "
          f"{change.loc['Average', 'clean']:+.2f} points on clean images and by {change.loc['Average'].drop('clean').min():+.2f} "
          f"({change.loc['Average'].drop('clean').idxmin()}) to {change.loc['Average'].drop('clean').max():+.2f} "
          f"({change.loc['Average'].drop('clean').idxmax()}) on corrupted ones; the largest class loss is "
          f"{change.drop(index='Average').min().min():+.2f} points ('{change.drop(index='Average').min(axis=1).idxmin()}', "
          f"{change.drop(index='Average').min().idxmin()}). FP average accuracy per corruption: "
          + ", ".join(f"{c} {s}: {a:.1f}" for (c, s), a in fp_avg.items()) + ".")
