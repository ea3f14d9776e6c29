# %% [markdown]
# # Can PTQ protect the worst class?
#
# The sections before measure how much a quantized model's worst class depends on the
# calibration draw. This section tries two remedies that need no extra data, and measures
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
# (Holm-corrected over the classes). A remedy "protects the worst class" when, on the seeds it
# shares with its baseline, the 95 % bootstrap interval of its mean worst-class gain lies above
# 0 while that of the average's change lies above -1 point (it costs the average less than a
# point); it fails when the worst class's interval lies below 0 or the average's below -1
# (`ptqlib.analysis.conclusions.protects_worst_class`). The spread over trials is reported
# beside it, not tested.

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
recon_calib_size = 1024
recon_iters = 500
recon_trials = 50
exemplars_per_class = 6
robustness_file = "results/robustness/resnet20-w4a4-mse-256.json"  # written by `ptq robustness`
compute_missing = False  # True: run the missing trials first (needs PTQ_DATA)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from ptqlib.analysis.aggregate import ece_table
from ptqlib.analysis.cells import Cell
from ptqlib.analysis.changes import (caption, cell_predictions, churn_line, churn_table, corruption_summary, ece_line,
                                    forgotten_images, forgotten_line)
from ptqlib.analysis.conclusions import protects_worst_class
from ptqlib.analysis.files import read_robustness
from ptqlib.analysis.runs import latest_fp_reference
from ptqlib.analysis.plotting import delta_heatmap, image_grid, worst_class_boxes
from ptqlib.analysis.remedies import ensure_remedy_trials, missing_lines, remedy_comparisons
from ptqlib.app.report import publish_figure, publish_table, published_figure
from ptqlib.study.store import ResultsStore

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size)
recon_cell = cell.replace(calib_size=recon_calib_size, optimizer="brecq", iters=recon_iters)
if compute_missing:
    print(ensure_remedy_trials(store, cell, trials, recon_cell, recon_trials))
comparisons = remedy_comparisons(store, cell, trials, recon_cell, recon_trials)

# %% [markdown]
# ## The remedies
#
# Each remedy the study's settings declare, against its setting's default on the same seeds:
# each trial's worst-class and average accuracy, the worst-case statistics per level, each
# class tested between the two levels, and the verdict. Class-balanced sets are tested with
# grid search on the default cell, class-weighted reconstruction with BRECQ on the
# reconstruction's larger calibration sets.

# %%
for c in comparisons:
    display(Markdown(f"### {c.name}\n\n`{c.factor}` = `{c.alt}` against `{c.base}`: {c.setting.help}."))
    if c.frame.empty:
        print(f"No trials of this comparison for {model} in the store.", *missing_lines(store, c), sep="\n")
        continue
    print(c.count_line())
    if not c.both:
        print("Only one side of this comparison is in the store.", *missing_lines(store, c), sep="\n")
    worst_class_boxes(c.frame, c.factor, [c.base, c.alt], title=c.title)
    plt.tight_layout()
    plt.show()
    publish_table(c.worst_class().round(2), f"worst_class_{c.factor}")
    if c.both:
        publish_table(c.paired().round(4), f"paired_{c.factor}")
    print(protects_worst_class(c.frame, c.factor, c.base, c.alt, c.name).text())

# %% [markdown]
# ## What quantization changes below the accuracy
#
# For the default cell (random sampling): how many test predictions change against the FP
# model (*churn*; "lost" were right before and wrong after, "gained" the reverse), how the
# expected calibration error (ECE, 15 bins) moves (the default cell against the FP model, then
# every stored cell of the model for reference), and which images are *forgotten*: those
# whose most frequent prediction over all trials differs from the FP prediction
# (quantization-identified exemplars, after Hooker et al. 2019). Churn and forgotten images are
# descriptions of the default cell's trials (their spread over trials is printed), not tests.

# %%
predictions = cell_predictions(store, cell, trials)
assert predictions is not None, f"the default cell of {model} has no trials in the store"
flips = churn_table(predictions.preds, predictions.fp_preds, predictions.labels)
print(churn_line(flips))
fp = latest_fp_reference(store, model, dataset, weights)
print(ece_line(store, cell, fp))
print("Every stored cell of the model, for reference (trials run before ECE was stored have none):")
publish_table(ece_table(store.trials(model=model, dataset=dataset, weights_fp=fp["weights_fp"],
                                     data_fp=fp["data_fp"])).round(2), "ece")

# %%
forgotten = forgotten_images(predictions)
print(forgotten_line(forgotten, len(predictions.preds)))
publish_table(forgotten.per_class.round(2), "forgotten")

# %%
from ptqlib.data import DataError, load_split, readable_names
from ptqlib.models import model_info

names = predictions.names
try:
    test = load_split(dataset, "test", model_info(model).input_size)
except DataError as exc:
    test, missing_data = None, exc
else:  # predictions outside the test classes (1000-way ImageNet) get their names too
    names = dict(enumerate(readable_names(test.class_names))) | names
if test is not None and len(forgotten.indices):
    shown = forgotten.shown(predictions.labels, predictions.classes, exemplars_per_class)
    captions = [caption(names, predictions.labels[i], predictions.fp_preds[i], forgotten.mode[i],
                        forgotten.agreement[i]) for i in shown]
    display(publish_figure(image_grid(test.images[shown].numpy(), captions, columns=exemplars_per_class,
                                      title="forgotten images, by true class: FP prediction / modal quantized "
                                            "prediction"), "forgotten"))
elif test is None:  # the figure an execution with the images published, if one did
    committed = published_figure("forgotten")
    if committed is not None:
        display(committed)
    else:
        print(f"The test images are not available here, so the forgotten images are not shown ({missing_data}).")

# %% [markdown]
# ## Corrupted inputs
#
# Does quantization cost more on corrupted images, and for which classes? The FP model and
# quantized models of the default cell (the first seeds of the study) are evaluated on
# copies of the test split with five corruptions at three severities, made offline at fixed
# seeds (see `ptqlib.analysis.robustness`). Colour: mean change of accuracy from FP to quantized on
# the same inputs; text: its std over the quantized models. With a few quantized models (the
# title says how many) this is a description of those models, not a test: no interval or chance
# comparison is made, and a class's change on 50 ImageNet test images moves in steps of 2 points.

# %%
from pathlib import Path

if not Path(robustness_file).exists():
    print(f"{robustness_file} does not exist; make it with: ptq robustness --model {model} --data {dataset} "
          f"--w-bits {w_bits} --a-bits {a_bits} --metric {metric} "
          f"--calib-size {calib_size} --trials 3 --out {robustness_file}")
else:
    robustness = read_robustness(robustness_file)
    summary = corruption_summary(robustness)
    delta_heatmap(summary.change, summary.change_std, "corruption and severity",
                  f"{robustness.model}: quantized - FP accuracy ({summary.quantized_models} quantized models)",
                  text_format="{:.2f}")
    plt.xticks(rotation=60, ha="right")
    plt.tight_layout()
    plt.show()
    print(summary.line(robustness.seconds))
