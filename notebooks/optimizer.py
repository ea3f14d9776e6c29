# %% [markdown]
# # Optimization algorithm
#
# Grid search (observer ranges, MSE) against the reconstruction methods AdaRound (layer by
# layer), BRECQ (block by block, with learned activation steps) and QDrop (BRECQ with
# activations randomly left unquantized during reconstruction). All four use the same
# calibration sets (1024 images, the reference setting of the reconstruction methods).
# The reconstructions here run **`iters` iterations per unit**, fewer than the reference's
# 20 000, to fit a CPU, in the **`variant`** variant; the table says how many trials each method
# has, and the last parts of this page measure what more iterations give and test the study's
# claim 4 on the reference variant.

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
levels = ["grid", "adaround", "brecq", "qdrop"]
iters = 500
trials = 50
variant = "joint"  # the reconstruction variant compared above: "joint" or "reference"
curve_methods = ["adaround", "brecq", "qdrop"]  # the iteration-count study
# the curves: a name, the cell's changes and optionally the methods (default: curve_methods)
curve_series = {"joint": {"variant": "joint"}, "reference": {"variant": "reference"},
                "reference, fp_weights=current": {"variant": "reference", "fp_weights": "current", "methods": ["brecq"]}}
curve_iters = [500, 2000, 5000, 20000]
curve_trials = 10  # seeds per count the curve reads (the first ones), and the fixed sample of the count decision
tolerance = 0.3  # converged: mean worst class within this many points of the largest count's
target_iters = 20000  # the reference code's count, which the chosen count is compared with
choice_margin = 1.0  # the chosen count's mean worst class must be shown within this many points of target_iters's
choice_alpha = 0.05  # the level of each of the count decision's tests
study_curve = "reference"  # the curve the count is chosen on: the configuration the study's cells are to be rerun in
reference_iters = 500  # claim 4 on the reference variant: iterations per unit
reference_trials = 50
# the study's reconstruction cells rerun at the chosen count, in the study_curve's configuration:
# this page's cell with reference_trials seeds (rerun_trials where they would take more than
# rerun_budget_hours of calibration here), and each of rerun_cells (its changes to this page's
# cell) with rerun_trials seeds, grid search beside them on the same calibration sets
rerun_cells = {"W2A4": {"w_bits": 2}, "resnet56": {"model": "resnet56"}}
rerun_trials = 20
rerun_budget_hours = 10.0
compute_missing = False

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

from ptqlib.analysis.aggregate import (backlog_lines, class_summary, count_choices, curve_lines, decision_backlog,
                                      gap_lines, ordered_levels, reversal_lines, worst_class)
from ptqlib.analysis.plotting import equivalence_lines, iteration_lines, mean_std_lines
from ptqlib.app.report import publish_table
from ptqlib.analysis.stats import (drop_ci_table, marked_differences, paired_gain_lines, paired_tests,
                                   significant_change_lines)
from ptqlib.study.store import ResultsStore
from ptqlib.analysis.cells import (Cell, curve_cell, curve_reversals, ensure_trials, factor_frame, iteration_curves,
                                  reference_curves, rerun_seeds, study_count, trial_counts)
from ptqlib.analysis.verdicts import design_for, paired_trials, parts_frame, reconstruction_claim, rerun_designs

store = ResultsStore(store_path)
cell = Cell(model=model, dataset=dataset, pool=pool, weights=weights, w_bits=w_bits, a_bits=a_bits, metric=metric,
            calib_size=calib_size, iters=iters, variant=variant)
if compute_missing:
    print(ensure_trials(store, cell, "optimizer", levels, trials))
    for method in curve_methods:
        print(ensure_trials(store, replace(cell, optimizer=method, variant="reference"), "iters", curve_iters,
                            curve_trials))
frame = factor_frame(store, cell, "optimizer", levels, trials)
assert len(frame), "no trials for this factor in the store"
counts = trial_counts(frame, "optimizer")
print("trials per optimizer:", ", ".join(f"{k}: {n}" for k, n in counts.items()),
      f"(reconstruction: the {variant} variant, {iters} iterations per unit)")

# %%
summary = ordered_levels(class_summary(frame, by=["optimizer"]), "optimizer", levels)
mean_std_lines(summary.sort_values("optimizer"), "optimizer")
plt.tight_layout()
plt.show()
publish_table(summary.pivot(index="class", columns="optimizer", values="mean").round(2), "class_means")

# %%
print(*paired_gain_lines(frame, "optimizer", "grid"), sep="\n")

# %% [markdown]
# ## Paired against grid search
#
# A seed gives every method the same calibration set, so each class can be compared seed by
# seed: the mean difference from grid search in points (Wilcoxon signed-rank test over the
# seeds both have, Holm-corrected over the classes; `*`: significant at 5 %), and for the
# significant classes its 95 % bootstrap interval over the seeds (one class's, not widened for
# the several classes as the test is). Which classes does a reconstruction method make worse
# than grid search?

# %%
paired = paired_tests(frame, "optimizer", "grid", levels)
print(*significant_change_lines(paired, "grid"), sep="\n")
marked_differences(paired)

# %% [markdown]
# ## Worst-case statistics
#
# Each trial's worst class, summarised over trials (mean, std, 5th percentile, minimum, the
# class most often worst, and the mean of each trial's three worst classes), and every class's
# mean drop against FP with a bootstrap 95 % confidence interval over trials (`*`: the interval
# excludes 0). The interval is over calibration sets on this one test set: it says a drop is
# not a calibration draw's luck, not that it would recur on other test images of the class (the
# chance band of [the reliability page](reliability) is the comparison for that).

# %%
publish_table(worst_class(frame, by=["optimizer"]).set_index("optimizer").round(2), "worst_class")

# %%
publish_table(drop_ci_table(frame, "optimizer"), "drop_ci")

# %% [markdown]
# ## How many iterations?
#
# Each method at several iteration counts per unit on the first seeds' calibration sets (each
# count over the seeds it has), in both variants: `joint` (the trials above: AdaRound learns
# the rounding with the activations quantized at their grid-search ranges, BRECQ and QDrop
# learn the rounding and the activation steps together) and `reference` (each method as its reference code
# runs it: BRECQ in two stages, AdaRound with float activations, QDrop with ranges set on the
# float network; see [the conventions](recon_conventions)); BRECQ's reference-variant trials
# whose second pass ran on the float network of the rounded weights (`fp_weights=current`) are
# their own curve. Each count is compared with the reference count, the largest with at least
# three trials, on the trials of both (the first `curve_trials` seeds of each): the change of the
# mean worst class with its 95 % interval from the **partially overlapping samples t-test**
# (Derrick, Russ, Toher and White 2017; `ptqlib.analysis.stats.mean_difference`), which takes
# the seeds both counts ran as pairs, through the correlation of their worst classes (`shared_r`
# in the table; a negative one widens the interval), and the other seeds as independent; with
# every seed shared it is the paired t-test, with none Welch's. A count is taken as converged
# when that whole interval lies within `tolerance` points either way (an equivalence test: a
# count whose interval is too wide, for lack of seeds, is not called converged; the table's
# `equivalent_within` is the margin the two one-sided tests at 5 % show, the 90 % interval's
# farther end, a weaker reading of the same numbers). Minutes are the
# median wall-clock time a trial spent calibrating (reconstruction included), with the threads it
# ran with and beside whatever else the machine ran then: trials of different counts ran at
# different times and loads, so the minutes say roughly what a trial cost, not how the cost
# grows with the count (that is measured by `ptq bench`, under `results/bench/`); a trial
# resumed from a checkpoint written before trials recorded the time of the units it restores
# counts only the resumed part, so a few trials at the reference code's count record too few
# minutes (the median damps that).
# Where a count is not shown converged, the line says about how many seeds run at both counts
# would show it, if the change, the spreads and their correlation held (`seeds_needed` in the
# table), or that no number would, its change alone being beyond the tolerance; a count whose interval lies clear of 0 is named as differing from the reference
# (better or worse; each such line is one uncorrected test at 5 %). Until a method has three
# trials at `target_iters`, its lines name the smaller count it is compared with, and
# "converged" means converged relative to that count only.

# %%
curves = iteration_curves(store, cell, curve_series, curve_methods, curve_iters, curve_trials, tolerance)
if curves.empty:
    print("no reconstruction trials at these iteration counts in the store")
else:
    iteration_lines(curves, by=["variant", "method"])
    plt.tight_layout()
    plt.show()
    publish_table(curves.round(2), "iterations")
    print("\n".join(curve_lines(curves, tolerance)))

# %% [markdown]
# ### Does the worst class rise with the count?
#
# Each count is its own run of the whole schedule (the warm-up, the annealing of the rounding
# regulariser and the learning rate's decay are set as shares of the count), not a checkpoint of
# a longer run, so more iterations need not give a better worst class, and a curve above may dip.
# Every pair of counts of each method's curve is compared on the trials of both, by the same
# test as above (the seeds both ran paired, the others independent), two-sided, with Holm's
# correction over every pair of every curve at 5 %: a pair named below is a change beyond chance, more
# iterations making the worst class worse or better; a dip in the figure that no pair shows is
# within what the seeds' spread gives by chance.

# %%
print("\n".join(reversal_lines(curve_reversals(store, cell, curve_series, curve_methods, curve_iters, curve_trials)))
      or "no curve with two counts in the store")

# %% [markdown]
# ### The count the study runs at
#
# Convergence in the strict sense above needs the `seeds_needed` of the table, and a trial at
# `target_iters` costs the minutes in the table, so the count the study's reconstruction cells
# run at is a decision made on weaker evidence, and stated as one, on the same comparison. For
# the `study_curve` curve (the configuration the study's reconstruction cells are to be rerun
# in at the chosen count; the 50-seed cells at the top of this page and the conclusions page's
# first claim 4 are the `variant` variant at `iters` iterations, and [the conclusions
# page](conclusions) tests claim 4 again at the chosen count once there is one), per
# method, a **fixed-sequence test**: from the largest count below `target_iters` down (`curve_iters`), each count is tested
# once it and `target_iters` have `curve_trials` trials, a number fixed in advance (testing again
# as trials arrive would let a count pass by chance): is its mean worst class shown within
# `choice_margin` points of `target_iters`'s **either way** by the two one-sided tests at
# `choice_alpha` (TOST: the `1 - 2 choice_alpha` interval inside ±`choice_margin`)? The sequence
# stops at the first count that fails or still waits for trials; the chosen count is the last
# that passed (`target_iters` itself when the first count tested fails: then no smaller count is
# shown to give what the reference's count gives), so every count from it up to `target_iters`
# passed, and the chance of choosing a
# count outside the margin stays at most `choice_alpha` with no correction for the several
# tests. A count better than `target_iters` by more than the margin fails too: its cells would
# not measure what the reference's reconstructions give. The figure draws each count's change
# with the interval the test reads against the band of ±`choice_margin` (hollow: the count or
# `target_iters` not yet on the test's fixed sample, seeds 0 to `curve_trials` - 1). The margin is a
# judgement, stated here: about one trial's seed-to-seed spread of the worst class (the range of
# `worst_std` is printed below), and ten test images of a CIFAR-10 class. The study takes the
# largest of the methods' counts, which every method passed on the way down. It is decided once
# every method has a count, or once the largest count decided so far is at least what each other
# method can still end at (the count it passed last): then no further test can change it. Until
# then there is no study-wide count; the last lines say which trials each method's decision still
# waits for, leaving out the counts whose outcome cannot change the study-wide count, and about
# how long they take here. The other curves get a count by the same rule, for reading only.

# %%
study_cell = curve_cell(cell, curve_series[study_curve])
study_methods = curve_series[study_curve].get("methods", curve_methods)
chosen, chosen_line, study_frame = study_count(store, study_cell, study_methods, curve_iters, curve_trials,
                                               target_iters, choice_margin, choice_alpha)
choices = count_choices(curves, reference_curves(cell, curve_series), target_iters, choice_margin, curve_trials,
                        curve_iters, choice_alpha)
if choices.empty:
    print("no reference-variant curve in the store")
else:
    publish_table(choices, "chosen_iters")
    study = curves[curves["variant"] == study_curve]
    equivalence_lines(study, choice_margin, target_iters, choice_alpha, curve_trials)
    plt.title(f"{study_curve}: each count against {target_iters:,} ({1 - 2 * choice_alpha:.0%} intervals)", fontsize=9)
    plt.tight_layout()
    plt.show()
    print(f"{study_curve}: worst class std over seeds {study['worst_std'].min():.2f} to {study['worst_std'].max():.2f} "
          f"points; minutes a trial at {target_iters}: "
          + ", ".join(f"{r.method} {r.minutes:.0f}" for r in study[study["iters"] == target_iters].itertuples()))
    print(chosen_line)
    print("\n".join(backlog_lines(decision_backlog(study_frame, curve_iters, target_iters, curve_trials,
                                                    choice_margin, choice_alpha, study_methods), study_methods)))

# %% [markdown]
# ## Claim 4 on the reference variant
#
# The study's claim 4 tested as on [the conclusions page](conclusions), on the trials of the
# reference variant (each method as its reference code runs it) at the count `reference_iters`
# per unit (this page's short count, not the reference code's own, `target_iters`): each method against
# grid search on the same calibration sets. Read it with the curve above: the line below it
# gives each method's worst class at `reference_iters`
# against the reference curve's largest count (`target_iters` once it has three trials; the line
# names it), that is how far these reconstructions are from the reference code's count.
#
# The `detail` column names the class the one-class parts are about, with its mean accuracy under
# grid search and under the method. Read the class losing most with it: where grid search's
# model collapses onto a few classes (as it can at 2 bits), it predicts those classes for most
# images and so scores high on them, and any working model "loses" there. Such a loss says what
# grid search's model guesses, not that reconstruction harms the class.

# %%
design = design_for(model, dataset, pool=pool, w_bits=w_bits, a_bits=a_bits, metric=metric, weights=weights,
                    trials=reference_trials, recon_size=calib_size, recon_iters=reference_iters,
                    recon_variant="reference")
publish_table(parts_frame(reconstruction_claim(store, design)).set_index("part"), "claim4_reference")
print("\n".join(gap_lines(curves, study_curve, reference_iters)))

# %% [markdown]
# And at the study-wide count chosen above, once there is one: the same test on the trials at
# that count in the `study_curve` configuration, on this page's cell and on each of
# `rerun_cells` (their changes to it), each table saying how many seeds each part has. This
# page's cell runs `reference_trials` seeds unless the trials still to run would take more than
# `rerun_budget_hours` of calibration here at the curve's times, and then `rerun_trials`, as the
# line says; each other cell runs `rerun_trials` seeds, whatever they cost.

# %%
if np.isfinite(chosen):
    seeds, why = rerun_seeds(study_frame, int(chosen), study_methods, reference_trials, rerun_trials,
                             rerun_budget_hours)
    print(f"claim 4 at the chosen count, {int(chosen)} iterations per unit; this page's cell: {why}")
    for name, design in rerun_designs(study_cell, study_methods, int(chosen), rerun_cells, seeds, rerun_trials):
        if name or int(chosen) != reference_iters:  # this page's cell at reference_iters is the table above
            c, chosen_parts = design.cell, reconstruction_claim(store, design)
            print(f"{c.model} W{c.w_bits}A{c.a_bits} on {c.dataset}: paired trials per method "
                  f"{paired_trials(chosen_parts, design.methods)}, of {design.trials} to run")
            publish_table(parts_frame(chosen_parts).set_index("part"), "claim4_chosen" + (f"_{name}" if name else ""))
else:
    print(f"no study-wide count chosen yet: claim 4 is shown at {reference_iters} iterations per unit only")
