# %% [markdown]
# # Reconstruction conventions: the reference code and ours
#
# Reconstruction trials carry a `variant` (store column `variant`: NULL for `joint`, `reference`
# otherwise; CLI `--variant`). Every reconstruction trial stored before the variant existed ran
# `joint`, and keeps its key. Sources: yhhhli/BRECQ (`main_imagenet.py`, `quant/block_recon.py`,
# `quant/layer_recon.py`, `quant/quant_layer.py`, `quant/quant_model.py`, `quant/data_utils.py`,
# `quant/adaptive_rounding.py`), wimh966/QDrop (`qdrop/solver/main_imagenet.py`,
# `qdrop/solver/recon.py`, `qdrop/quantization/fake_quant.py`, `qdrop/quantization/observer.py`,
# `exp/w2a4/*/config.yaml`), and the AdaRound paper (Nagel et al. 2020).
#
# What the differences do, taken together, is measured in the first section below; the
# remaining ones, one at a time, after it.
#
# | convention | reference code | ours, `joint` | ours, `reference` |
# |---|---|---|---|
# | BRECQ: what is learned | stage 1: rounding only, activations float (`act_quant=False`, `iters_w` 20000); stage 2: activation step sizes only (`iters_a` 5000) | rounding and step sizes together, one pass | as the reference: two passes |
# | BRECQ stage-2 learning rate | `--lr` default 4e-4 in `main_imagenet.py` (the function default in `block_recon.py` is 4e-5, overridden), cosine decay | (none: steps learned in the one pass, lr 4e-5) | 4e-4, cosine over the second pass's iterations, a quarter of the first's (5000 at 20000; 125 at this page's 500) |
# | BRECQ stage-2 loss | `lp_loss` p = 2.4: `|out - tgt|^p` summed over channels, mean (`--p 2.4`) | squared error (p = 2) | p = 2.4 |
# | BRECQ stage-2 data | `asym=False`: the float network's block inputs and outputs (quantization off uses the kept float weights, `org_weight`) | quantized inputs, float targets | as the reference (`fp_weights=kept`); the trials stored before that setting ran on the network whose weights stage 1 had rounded (`fp_weights=current`): the difference is measured below |
# | BRECQ activation-range init | one forward of the whole quantized network (hard-rounded weights) on 64 images; each quantizer initialised on its first call, later ones see earlier ones quantized; `scale_method='mse'`: 80 candidates `[min, max] * (1 - 0.01 i)`, score mean `|x - q(x)|^2.4` on the raw tensor | per unit, on its quantized inputs (256 images), the trial's metric (`mse`: 100 candidates `t = 0.01..1`, squared error on a 2048-bin histogram) | per unit on its quantized inputs (64 images, earlier units' steps already learned), `lp2.4` on the histogram (100 candidates down to 1 %, not 80 down to 21 %); the whole-network initialisation is `--act-init network`, the raw-tensor scoring `--act-search tensor`: both measured below |
# | AdaRound: activations during reconstruction | float (BRECQ code's `layer_reconstruction` with `act_quant=False`; paper: weights only) | quantized with grid ranges | float |
# | AdaRound: a layer's unit | the layer's own output and its activation, `f_a(Wx)` (paper; BRECQ code's `layer_reconstruction` on a `QuantModule`: a block's last convolution has `disable_act_quant` and no activation, so its loss is on the convolution's output, before the residual add) | the layer with what follows it up to the next layer: for a block's last convolution the shortcut, the add, the ReLU and the block's output quantizer, on quantized and float block inputs | same as joint; the reference's unit is `--layer-unit layer`: the difference is measured below |
# | QDrop: what is learned | rounding and LSQ step sizes jointly (`recon.py`: `w_opt` Adam default lr, `a_opt` Adam `scale_lr` 4e-5, cosine) | same | same |
# | QDrop: drop placement | unit input (`torch.where(rand < drop_prob, quant_inp, fp_inp)`) and every `post_act_fake_quantize` inside the unit, `drop_prob` 0.5 = probability of keeping the quantized value | same | same |
# | QDrop activation-range init | observers on the float network, 256 images in one batch, `MSEObserver` (p = 2.4, 100 candidates; 1-D search for one-sided data, 2-D range x zero-point search otherwise) | per unit on quantized inputs, trial metric | float network, 256 images, `lp2.4` on the histogram (1-D candidates only) (on the CIFAR ResNets every activation quantizer's input is non-negative, so QDrop's code runs its 1-D search there, over the same 100 candidates as `lp2.4`; what differs is the raw tensor against our 2048-bin histogram: `--act-search tensor` scores the raw values, measured below) |
# | LSQ gradient scaling | `grad_factor = 1/sqrt(numel * qmax)` on the step's gradient (QDrop) | none | none; QDrop's factor is `--step-grad lsq` (under Adam a constant factor c only turns epsilon into epsilon / c): the difference is measured below |
# | lambda (rounding regulariser) | 0.01; MobileNetV2 0.1 (BRECQ README, QDrop config); MNASNet 0.2 (QDrop config); ResNet-18/50, RegNetX 0.01 | 0.01, MobileNetV2 0.1 | reference values |
# | iterations, batch | 20000 per unit, batch 32, `b_range` (20, 2), warm-up 0.2 | `--iters` (this page's cells: `iters`), 32, same | same |
# | reconstruction loss (rounding) | `lp_loss` p = 2 (sum over channels, mean) | same | same |
# | batch sampling | BRECQ `randperm(N)[:32]`; QDrop `randint(N, (32,))` | `randint` with a seeded generator | same; BRECQ's draw is `--batch-draw randperm`: the difference is measured below |
# | weight ranges | BRECQ: per channel, 80 shrink candidates, L_2.4; QDrop: `MSEObserver` per channel, 2-D search (100 widths x every zero point), L_2.4 | per channel, 100 shrink candidates, squared error (`weight_metric=mse`) | same as joint; the BRECQ code's search is `--weight-metric lp2.4`, the QDrop code's `--weight-metric lp2.4-2d`: both measured below |
# | first layer | BRECQ `set_first_last_layer_to_8bit`: first and last weights 8 bit, first layer's output 8 bit, first layer not reconstructed (`ignore_reconstruction`); QDrop: first/last weights 8 bit, all reconstructed | `reference` preset: first/last weights 8 bit, all reconstructed | same as joint; BRECQ's treatment is `--first-layer brecq`: the difference is measured below |
# | last layer's input | QDrop: 8 bit (`a_list[-1].set_bit(8)`); BRECQ: 8 bits set on `module_list[-2].act_quantizer`, on ResNets the last block's last convolution, built with `disable_act_quant=True`, so the setting never acts and the classifier's input, the block's own output quantizer, stays at the activation bit-width | 8 bit (`reference` preset) | same as joint; BRECQ's effective treatment is `--last-input brecq`: the difference is measured below |
# | calibration images | drawn from the ImageNet training loader, whose transform is `RandomResizedCrop(224)` and `RandomHorizontalFlip()` (BRECQ `data/imagenet.py`; QDrop's loader likewise): each image a random crop and flip | the stored images as they are (CIFAR-10: the 32x32 training images; ImageNet: the pool's centre crops) | same: not a setting and not measured. The study's object is the calibration set itself, each a seeded draw of fixed images; a random crop of each would add a second source of variation between seeds. |

# %% tags=["parameters"]
store_path = "results/trials.sqlite"
model = "resnet20"
dataset = "cifar10-jpeg"
pool = None  # calibration pool; None: the dataset's default (sample1000 for ImageNet, else train)
weights = None
w_bits = 4
a_bits = 4
metric = "mse"
calib_size = 1024
methods = ["adaround", "brecq", "qdrop"]
iters = 500
trials = 50
# the conventions measured one at a time: name -> [setting, ours, the reference's, methods]
conventions = {"BRECQ's second-pass float network": ["fp_weights", "current", "kept", ["brecq"]],
               "weight range search": ["weight_metric", "mse", "lp2.4", ["adaround", "brecq", "qdrop"]],
               "batch sampling": ["batch_draw", "randint", "randperm", ["brecq"]],
               "LSQ gradient scaling": ["step_grad", "plain", "lsq", ["qdrop"]],
               "BRECQ's activation-range initialisation": ["act_init", "unit", "network", ["brecq"]],
               "BRECQ's first layer": ["first_layer", "ours", "brecq", ["brecq"]],
               "activation range search on the raw values": ["act_search", "histogram", "tensor", ["brecq", "qdrop"]],
               "QDrop's weight range search": ["weight_metric", "mse", "lp2.4-2d", ["qdrop"]],
               "AdaRound's unit: the layer's own output": ["layer_unit", "ours", "layer", ["adaround"]],
               "BRECQ's last layer's input": ["last_input", "ours", "brecq", ["brecq"]]}

# %% [markdown]
# ## The measured effect of the variant
#
# Each method in its `reference` variant against its `joint` variant on the same calibration
# sets (the seeds both have), at `iters` iterations per unit: the mean per-seed difference
# (reference minus joint, points) of the average and of each trial's worst class, with a 95 %
# Student-t interval over the seeds (ten or so: a percentile bootstrap would be too narrow) and
# the Wilcoxon signed-rank p-value. This is the effect of
# all the differences of the table together; those that can be set either way are measured one at a
# time below.

# %%
from dataclasses import replace

from ptqlib.app.report import publish_table
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import Cell, paired_effects

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size, iters=iters)
table, missing = paired_effects(store, cell, {"variant": ["variant", "joint", "reference", methods]}, trials)
if len(table):
    table = table.droplevel("comparison").rename(columns={"a": "joint", "b": "reference", "b - a": "reference - joint"})
    publish_table(table.round(3), "variant_effect")
else:
    print(f"no method has trials of both variants at {iters} iterations in the store")

# %% [markdown]
# ## The remaining differences, one at a time
#
# Each convention below can be set either way in the `reference` variant (a setting of the trial,
# part of its key); its effect is measured as the variant's was: the same calibration sets, at
# `iters` iterations per unit, the mean per-seed difference (the reference's convention minus
# ours, points) of the average and of each trial's worst class, with a 95 % Student-t interval
# over the seeds and the Wilcoxon signed-rank p-value (chance alone: differences centred on
# zero; each test uncorrected, so among the table's twenty-odd tests one p-value under 0.05
# comes by chance now and then). A convention without trials of both settings in the store is
# listed as not measured. The table's `ours` is the convention the earlier trials ran with: for
# `fp_weights` that is `current`, while the `reference` variant now runs `kept` by default.
#
# - **BRECQ's second-pass float network** (`fp_weights`): the kept float weights (`kept`, the
#   reference) against the weights its first pass rounded (`current`, the earlier trials).
# - **Weight range search** (`weight_metric`): the BRECQ code's per-channel search (`lp2.4`: 80
#   candidates from the full range down to 21 %, `|w - q(w)|^2.4`) against ours (`mse`: 100
#   candidates down to 1 %, squared error), measured on all three methods.
# - **QDrop's weight range search** (`weight_metric`): the QDrop code's `MSEObserver` on each
#   output channel, width and zero point searched together (100 widths of the channel's span
#   times every zero point of the grid, `|w - q(w)|^2.4`: `lp2.4-2d`) against ours; measured on
#   QDrop, whose code it is.
# - **Batch sampling** (`batch_draw`): BRECQ's code draws each step's 32 images as the start of
#   a random permutation (`randperm`: no image twice in a batch) where ours, like QDrop's code,
#   draws them with replacement (`randint`); measured on BRECQ, whose code it is.
# - **LSQ gradient scaling** (`step_grad`): QDrop's code multiplies each learned step's gradient
#   by `1/sqrt(numel * qmax)` of the quantized tensor (`lsq`); ours leaves it as it is (`plain`).
#   Under Adam that only makes epsilon weigh `sqrt(numel * qmax)` times more (about 3e-5 instead
#   of 1e-8 for a 32-image batch of 16 channels at 32x32 and 4 bits); measured on QDrop.
# - **BRECQ's activation-range initialisation** (`act_init`): its code sets every range once,
#   before the second pass, on the whole weight-quantized network, each quantizer after the ones
#   before it are quantized (`network`); ours sets each unit's just before that unit is learned,
#   on its quantized inputs, after the earlier units' steps were learned (`unit`). Both search
#   `lp2.4` on the histogram (the reference searches the raw tensor: the next but one item).
# - **BRECQ's first layer** (`first_layer`): its code quantizes the first layer's output at 8
#   bits and leaves the layer out of reconstruction (`brecq`); ours reconstructs it and keeps its
#   output at the activation bit-width (`ours`); QDrop's code treats it as ours does.
# - **Activation range search on the raw values** (`act_search`): the reference code scores each
#   candidate range on the calibration batch's activation tensor itself (`tensor`); ours on a
#   2048-bin histogram of it, bin centres standing for the values (`histogram`), which keeps one
#   pass over any number of images. Same candidates and metric (`lp2.4` in the reference
#   variant); every range search of the reconstruction switches, the initial one before it
#   included. Measured on BRECQ and QDrop.
# - **AdaRound's unit: the layer's own output** (`layer_unit`): the AdaRound paper learns each
#   layer on the output of the layer and its activation, and BRECQ's code's layer
#   reconstruction does the same on its `QuantModule`s; a residual block's last convolution has
#   no activation of its own there (the ReLU comes after the add), so its loss is on the
#   convolution's output (`layer`). Ours cuts the network between layers, so that unit runs on
#   to the shortcut, the add, the ReLU and the block's output quantizer (`ours`), and its loss
#   also sees the error the shortcut brings (ResNet-20's shortcuts hold no layer; where a
#   shortcut is a convolution, the add goes with that convolution's unit instead). Measured on
#   AdaRound.
# - **BRECQ's last layer's input** (`last_input`): BRECQ's code means to quantize the
#   classifier's input at 8 bits, but on ResNets the 8 bits go to a quantizer the block never
#   applies (the last convolution's, `disable_act_quant`), so the classifier's input, the last
#   block's output, stays at the activation bit-width (`brecq`); ours, like QDrop's code, quantizes
#   it at 8 bits (`ours`). Measured on BRECQ.

# %%
table, missing = paired_effects(store, replace(cell, variant="reference"), conventions, trials)
if len(table):
    publish_table(table.rename(columns={"a": "ours", "b": "reference's", "b - a": "reference's - ours"}).round(3),
                  "convention_effects")
if missing:
    print(f"not measured at {iters} iterations (fewer than three seeds with trials of both settings): "
          + "; ".join(missing))

# %% [markdown]
# ## A difference left unset
#
# BRECQ's code searches each activation range over 80 candidates, from the whole observed range
# down to 21 % of it; ours over 100, down to 1 %. The two sets coincide from 21 % up (ties of two
# candidates' scores aside, which BRECQ's loop breaks towards the wider range), so the difference
# matters only where a range narrower than 21 % of the observed one wins. Whether one does here is
# measured instead of set: the record below (`results/bench/act-candidates.py`, on this cell's
# BRECQ initialisation: 64 images, the whole weight-quantized network, seeds 0-4) gives the
# fractions of the observed range chosen on the histogram and on the raw values, and how many
# ranges the two searches set differently.

# %%
from pathlib import Path

record = Path("results/bench/act-candidates.txt")
print(record.read_text().strip() if record.exists() else f"{record} is not in this checkout")
