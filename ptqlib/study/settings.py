"""The trial settings, each declared once.

A :class:`Setting` says everything the program needs to know about one setting of a trial: its
name (also its store column and, with dashes, its ``ptq`` flag), type, default, allowed values,
help text, whether a sweep may vary it, where it lives in a :class:`~ptqlib.study.trial.TrialConfig`,
how it enters the trial's key and its store column, and how a report prints a level of it.
Everything else is derived from :data:`SETTINGS`:

- the ``ptq`` options (:func:`add_arguments`) and the trial of a command line (:func:`from_args`);
- a trial from flat values (:func:`trial_config`) and back (:func:`values`), so sweeps vary any
  factor by name (``ptqlib.study.sweep.expand_grid``) and a study cell is a set of flat values (:data:`Cell`);
- the trial's key (:func:`key_dict`: settings added after trials were stored are left out at their
  default, so those trials keep their keys);
- the store's configuration columns and their migrations (:func:`columns`, :data:`COLUMNS`,
  :func:`column_sql`);
- the candidate remedies for the worst class that a report tests (:func:`remedies`).

The quantization layer's own configuration classes (``QuantConfig``, ``CalibSpec``,
``ReconConfig``) validate the values they hold; a setting whose value lives in one of them takes
its default from that class, so there is one default for each setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable

from ptqlib.data import calibration_pools, class_label, default_pool
from ptqlib.models import MODELS, check_model
from ptqlib.quant.evaluation import ENGINES, check_engine
from ptqlib.quant.qmodel import PRESETS, QuantConfig
from ptqlib.quant.range_estimators import ACT_SEARCHES, METRICS, WEIGHT_METRICS, check_act_search
from ptqlib.quant.recon import (ACT_INITS, BATCH_DRAWS, FIRST_LAYERS, FP_WEIGHTS, LAST_INPUTS, LAYER_UNITS, METHODS,
                                REFERENCE_ITERS, REFERENCE_ONLY, STEP_GRADS, VARIANTS, ReconConfig, default_recon)
from ptqlib.study.calibset import NOISE_KINDS, SAMPLINGS, CalibSpec

OPTIMIZERS = ("grid", *METHODS)  # grid: observer-based range search (ptqlib.quant.calibration)
_ALWAYS = object()  # a marker: the setting is always part of the key


def _default_of(cls: type, name: str):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _optional_str(text: str) -> str | None:
    """A command-line value where ``none`` stands for no value."""
    return None if text is None or text.lower() == "none" else text


@dataclass(frozen=True)
class Remedy:
    """A level of a setting proposed as a remedy for the worst class, tested against the default."""

    level: Any
    name: str
    reconstruction: bool = False  # it only applies to reconstructed trials


@dataclass(frozen=True)
class Setting:
    name: str  # attribute of a cell, store column, ``--flag`` with dashes
    type: Callable[[str], Any]  # parses a command-line value
    default: Any
    help: str
    path: str  # where the value lives in a TrialConfig: "model", "quant.w_bits", "calib.size" ...
    choices: tuple | None = None  # allowed values, for the help text (the class holding the value checks them)
    factor: bool = False  # a sweep may give several levels
    sql: str = "TEXT"  # the store column's type
    flag: str | None = None  # the command-line flag when it is not ``--name``
    omit_at: Any = _ALWAYS  # left out of the key at this value (it was added after trials were stored)
    omit_also: tuple[str, ...] = ()  # other configuration fields left out with it
    stored_null: Any = _ALWAYS  # the value stored as NULL (as in the rows stored before the column)
    label: Callable[[Any], str] = str  # how a report names a level
    levels: tuple = ()  # the levels the study varies it over (CIFAR-10), when it is one of its factors
    remedy: Remedy | None = None

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        allowed = f" (one of {', '.join(str(c) for c in self.choices)})" if self.choices else ""
        return f"{self.help}{allowed}; default {self.default}"


def _level_name(level) -> str:
    return "balanced" if level is None or level != level else class_label(level)


SETTINGS: tuple[Setting, ...] = (
    Setting("model", str, "resnet20", "the model", "model", choices=MODELS),
    Setting("dataset", str, "cifar10-jpeg", "dataset name (cifar10, cifar10-jpeg, imagenet-val10, fashion-mnist; "
            "folders under $PTQ_DATA) or folder:/path", "dataset", flag="--data"),
    Setting("weights", str, None, "checkpoint path (default: the project's weights for the data)", "weights"),
    Setting("preset", str, _default_of(QuantConfig, "preset"), "which layers are quantized", "quant.preset",
            choices=PRESETS, factor=True),
    Setting("w_bits", int, _default_of(QuantConfig, "w_bits"), "weight bits", "quant.w_bits", factor=True,
            sql="INTEGER", levels=(8, 6, 4)),
    Setting("a_bits", int, _default_of(QuantConfig, "a_bits"), "activation bits", "quant.a_bits", factor=True,
            sql="INTEGER"),
    Setting("metric", str, _default_of(QuantConfig, "metric"), "activation range metric", "quant.metric",
            choices=METRICS, factor=True,
            levels=("minmax", "mse", "kl", "cosine")),
    Setting("weight_metric", str, _default_of(QuantConfig, "weight_metric"), "weight range metric",
            "quant.weight_metric", choices=WEIGHT_METRICS),
    Setting("optimizer", str, OPTIMIZERS[0], "grid (observer range search) or a reconstruction", "optimizer",
            choices=OPTIMIZERS, factor=True, levels=OPTIMIZERS),
    Setting("iters", int, REFERENCE_ITERS, "reconstruction iterations per unit", "recon.iters", sql="INTEGER"),
    Setting("calib_size", int, _default_of(CalibSpec, "size"), "calibration images", "calib.size", factor=True,
            sql="INTEGER", levels=(1, 32, 256, 1024)),
    Setting("noise", float, _default_of(CalibSpec, "noise"), "fraction of calibration images replaced by noise",
            "calib.noise", factor=True, sql="REAL", levels=(0.0, 0.01, 0.05, 0.1, 0.5)),
    Setting("noise_kind", str, NOISE_KINDS[0], "noise images", "calib.noise_kind", choices=NOISE_KINDS),
    Setting("bias_class", _optional_str, None, "class drawn with probability bias_p (none: a balanced draw)",
            "calib.bias_class", factor=True, label=_level_name),
    Setting("bias_p", float, _default_of(CalibSpec, "bias_p"), "probability of the bias class", "calib.bias_p",
            factor=True, sql="REAL"),
    Setting("sampling", str, SAMPLINGS[0], "calibration draw (stratified: class-balanced)", "calib.sampling",
            choices=SAMPLINGS, factor=True, sql="TEXT NOT NULL DEFAULT 'random'", omit_at=SAMPLINGS[0],
            remedy=Remedy("stratified", "Stratified calibration sampling")),
    Setting("pool", _optional_str, None, "the images calibration sets are drawn from: train (the dataset's train "
            "split; nette-train for imagenet-val10) or, for ImageNet, sample1000 (one image of each of the 1000 "
            "classes, topped up from nette-train above 1000); default: sample1000 for imagenet-val10, else train",
            "calib.pool", factor=True,
            omit_at="train", stored_null="train"),
    Setting("class_weighting", _optional_str, None, "reconstruction loss weighted towards the classes "
            "reconstructed worst", "recon.class_weighting", choices=(None, "dro"), omit_at=None,
            omit_also=("recon.dro_eta",), stored_null=None, label=lambda v: "none" if v is None or v != v else v,
            remedy=Remedy("dro", "Class-weighted reconstruction", reconstruction=True)),
    Setting("variant", str, VARIANTS[0], "reconstruction variant (joint: rounding and activation steps learned "
            "together; reference: as the reference code runs each method)", "recon.variant", choices=VARIANTS,
            omit_at=VARIANTS[0], omit_also=tuple(f"recon.{n}" for n in REFERENCE_ONLY), stored_null=VARIANTS[0]),
    Setting("fp_weights", str, FP_WEIGHTS[0], "the float network of BRECQ's reference variant (its targets, and "
            "its second pass's inputs): kept (the float weights kept aside, as the reference code) or current (the "
            "weights the first pass rounded; the trials stored before this setting); other methods cannot tell them "
            "apart", "recon.fp_weights", choices=FP_WEIGHTS, omit_at="current", stored_null="current"),
    Setting("batch_draw", str, BATCH_DRAWS[0], "how a reconstruction step draws its batch: randint (indices "
            "with replacement, QDrop's code; every trial stored before this setting) or randperm (a random "
            "permutation's first images, none twice: BRECQ's code)", "recon.batch_draw", choices=BATCH_DRAWS,
            omit_at=BATCH_DRAWS[0], stored_null=BATCH_DRAWS[0]),
    Setting("step_grad", str, STEP_GRADS[0], "the gradient of learned activation steps: plain (every trial stored "
            "before this setting) or lsq (times 1/sqrt(numel * qmax), LSQ's factor, as QDrop's code)",
            "recon.step_grad", choices=STEP_GRADS, omit_at=STEP_GRADS[0], stored_null=STEP_GRADS[0]),
    Setting("act_init", str, ACT_INITS[0], "where a reconstruction pass that learns activation steps sets their "
            "ranges first: unit (each unit's, on its quantized inputs, just before it is learned; every trial "
            "stored before this setting) or network (all at once before the pass, on the whole weight-quantized "
            "network: BRECQ's code); QDrop's reference variant sets them on the float network either way",
            "recon.act_init", choices=ACT_INITS, omit_at=ACT_INITS[0], stored_null=ACT_INITS[0]),
    Setting("first_layer", str, FIRST_LAYERS[0], "the first quantized layer in a reconstruction: ours "
            "(reconstructed, output at the activation bit-width; every trial stored before this setting) or brecq "
            "(output at 8 bits, left out of reconstruction: BRECQ's code)", "recon.first_layer",
            choices=FIRST_LAYERS, omit_at=FIRST_LAYERS[0], stored_null=FIRST_LAYERS[0]),
    Setting("last_input", str, LAST_INPUTS[0], "the classifier's input in a reconstruction: ours (at 8 bits, as "
            "QDrop's code; every trial stored before this setting) or brecq (at the activation bit-width, where "
            "BRECQ's code leaves it on residual networks)", "recon.last_input",
            choices=LAST_INPUTS, omit_at=LAST_INPUTS[0], stored_null=LAST_INPUTS[0]),
    Setting("layer_unit", str, LAYER_UNITS[0], "AdaRound's units: ours (each layer with what follows it up to the "
            "next layer, for a residual block's last convolution the add and the activation after it; every trial "
            "stored before this setting) or layer (the layer's own output and the activation that takes it alone: "
            "the AdaRound paper and BRECQ's code); other methods work block by block", "recon.layer_unit",
            choices=LAYER_UNITS, omit_at=LAYER_UNITS[0], stored_null=LAYER_UNITS[0]),
    Setting("act_search", str, ACT_SEARCHES[0], "what a reconstruction's activation range searches score their "
            "candidate ranges on: histogram (2048 bins, bin centres for the values; every trial stored before this "
            "setting) or tensor (the raw values, as the reference code; metrics minmax, mse, cosine, lp2.4; it "
            "holds the values it scores, so a whole-network search observes its quantizers in groups of at most "
            "1 GiB of values, one float pass per group)",
            "recon.act_search", choices=ACT_SEARCHES, omit_at=ACT_SEARCHES[0], stored_null=ACT_SEARCHES[0]),
    Setting("engine", str, ENGINES[0], "evaluation: fake quantization in float32, the same model on int8 kernels "
            "(CIFAR ResNets and efficientnet_lite0), fake quantization in another float order (channels-last "
            "batches of 7: the simulation's own float noise), or in float64 (exact arithmetic within float64 "
            "rounding, slow)", "engine", choices=ENGINES,
            omit_at=ENGINES[0], stored_null=ENGINES[0]),
    Setting("seed", int, 0, "the (first) seed", "seed", sql="INTEGER"),
)
BY_NAME: dict[str, Setting] = {}
NAMES: tuple[str, ...] = ()
FACTORS: tuple[str, ...] = ()  # the settings a sweep may vary
COLUMNS: tuple[str, ...] = ()  # the store's configuration columns
STUDY_LEVELS: dict[str, list] = {}  # the study's factors and their levels


def _derive() -> None:
    global NAMES, FACTORS, COLUMNS
    BY_NAME.clear()
    BY_NAME.update((s.name, s) for s in SETTINGS)
    NAMES = COLUMNS = tuple(BY_NAME)
    FACTORS = tuple(s.name for s in SETTINGS if s.factor)
    STUDY_LEVELS.clear()
    STUDY_LEVELS.update((s.name, list(s.levels)) for s in SETTINGS if s.levels)


def register(new: Setting) -> None:
    """Declare one more setting (its value must live in a field of the trial's configuration).
    The command line, keys, store columns and migrations of stores opened afterwards include it."""
    global SETTINGS
    if new.name in BY_NAME:
        raise ValueError(f"setting {new.name!r} is declared already")
    SETTINGS = (*SETTINGS, new)
    _derive()


def unregister(name: str) -> None:
    global SETTINGS
    SETTINGS = tuple(s for s in SETTINGS if s.name != name)
    _derive()


_derive()


@dataclass(frozen=True)
class TrialConfig:
    """Everything that changes a trial's result, besides the exact weights and data (whose
    fingerprints the results store adds to the key)."""

    model: str = BY_NAME["model"].default
    dataset: str = BY_NAME["dataset"].default
    weights: str | None = None  # a checkpoint path; None: the project's default for the data
    quant: QuantConfig = field(default_factory=QuantConfig)
    calib: CalibSpec = field(default_factory=CalibSpec)
    optimizer: str = BY_NAME["optimizer"].default
    seed: int = BY_NAME["seed"].default
    recon: ReconConfig | None = None  # reconstruction settings; None for grid search
    engine: str = BY_NAME["engine"].default  # evaluation: fake quantization in float32, int8 kernels, ... (ptqlib.quant.evaluation)

    def __post_init__(self) -> None:
        check_model(self.model)
        if self.calib.pool not in calibration_pools(self.dataset):
            raise ValueError(f"unknown calibration pool {self.calib.pool!r} for {self.dataset!r}; choose one of "
                             f"{', '.join(calibration_pools(self.dataset))}")
        check_engine(self.engine, self.model)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.optimizer == "grid":
            object.__setattr__(self, "recon", None)
        elif self.recon is None:
            object.__setattr__(self, "recon", default_recon(self.model))
        if self.recon is not None:  # settings this method cannot tell apart at their stored value: one key
            object.__setattr__(self, "recon", self.recon.for_method(self.optimizer))
            check_act_search(self.recon.act_search, self.quant.metric)  # the ranges set before reconstruction
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        """The nested configuration the key hashes (see :func:`key_dict`)."""
        return key_dict(self)

    def key(self) -> str:
        """Canonical hash of the whole configuration, seed included."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:24]

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        recon = ReconConfig(**d["recon"]) if d.get("recon") else None
        return cls(**{**d, "quant": QuantConfig(**d["quant"]), "calib": CalibSpec(**d["calib"]), "recon": recon})


def int8_input_bits(cfg: TrialConfig) -> int:
    """The widest activation an int8 convolution of the trial reads: the activation bit-width, or
    8 where BRECQ's first-layer convention keeps the first layer's output at 8 bits."""
    first_at_8 = cfg.recon is not None and cfg.recon.first_layer == "brecq"
    return max(cfg.quant.a_bits, 8) if first_at_8 else cfg.quant.a_bits


def row_key(cfg: TrialConfig, weights_fp: str, data_fp: str) -> str:
    """The store key of a trial: its configuration and the exact weights and data."""
    return hashlib.sha256(f"{cfg.key()}|{weights_fp}|{data_fp}".encode()).hexdigest()[:24]


def setting(name: str) -> Setting:
    if name not in BY_NAME:
        raise ValueError(f"unknown setting {name!r}; choose from {', '.join(NAMES)}")
    return BY_NAME[name]


def defaults() -> dict:
    return {s.name: s.default for s in SETTINGS}


# --- flat values <-> a trial -------------------------------------------------------------------

def trial_config(**given) -> TrialConfig:
    """The trial of flat setting values (missing ones at their defaults); each value is checked by
    the class that holds it (``QuantConfig``, ``CalibSpec``, ``ReconConfig``, ``TrialConfig``)."""
    unknown = set(given) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown setting {sorted(unknown)[0]!r}; choose from {', '.join(NAMES)}")
    v = {**defaults(), **given}
    if v["pool"] is None:
        v["pool"] = default_pool(v["dataset"])
    nested: dict[str, dict] = {"quant": {}, "calib": {}, "recon": {}}
    top = {}
    for s in SETTINGS:
        group, _, attr = s.path.rpartition(".")
        (nested[group] if group else top)[attr] = v[s.name]
    recon = None
    if v["optimizer"] != "grid":
        recon = dataclasses.replace(default_recon(v["model"], nested["recon"]["iters"], nested["recon"]["variant"],
                                                  v["optimizer"]), **nested["recon"])
    return TrialConfig(**top, quant=QuantConfig(**nested["quant"]), calib=CalibSpec(**nested["calib"]), recon=recon)


def _get(cfg: TrialConfig, path: str):
    obj = cfg
    for part in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj


def values(cfg: TrialConfig) -> dict:
    """The flat setting values of a trial (reconstruction settings at their defaults for grid search)."""
    out = {}
    for s in SETTINGS:  # a value its class left out as meaningless (noise kind without noise) is the default
        value = _get(cfg, s.path)
        out[s.name] = s.default if value is None else value
    return out


def key_dict(cfg: TrialConfig) -> dict:
    """The nested configuration that a trial's key hashes: settings at their ``omit_at`` value are
    left out (with their ``omit_also`` fields), and so is the reconstruction of grid search."""
    d = dataclasses.asdict(cfg)
    if d["recon"] is None:
        del d["recon"]
    for s in SETTINGS:
        if s.omit_at is _ALWAYS or (s.path.startswith("recon.") and cfg.recon is None):
            continue
        if _get(cfg, s.path) == s.omit_at:
            for path in (s.path, *s.omit_also):
                group, _, attr = path.rpartition(".")
                (d[group] if group else d).pop(attr, None)  # another setting may have left it out already
    return d


# --- the store's columns -----------------------------------------------------------------------

def columns(cfg: TrialConfig) -> dict:
    """The store's configuration columns of a trial: reconstruction settings NULL for grid search,
    and each setting's ``stored_null`` value NULL."""
    out = {}
    for s in SETTINGS:
        value = _get(cfg, s.path)
        out[s.name] = None if (s.stored_null is not _ALWAYS and value == s.stored_null) else value
    return out


def column_sql() -> list[tuple[str, str]]:
    """``(column, SQL type)`` of every setting, in declaration order."""
    return [(s.name, s.sql) for s in SETTINGS]


# --- the command line ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """One option per setting; with ``many`` the factors take several levels (a grid)."""
    for s in SETTINGS:
        many_levels = many and s.factor
        parser.add_argument(s.option, dest=s.name, type=s.type, nargs="+" if many_levels else None,
                            default=[s.default] if many_levels else s.default, help=s.describe())


def from_args(args: argparse.Namespace) -> tuple[dict, dict[str, list]]:
    """The flat setting values of parsed options (the first level of each factor; checked by
    building their trial) and the factors given more than one level."""
    given = {s.name: getattr(args, s.name) for s in SETTINGS}
    factors = {name: v for name, v in given.items() if isinstance(v, list) and len(v) > 1}
    first = {name: v[0] if isinstance(v, list) else v for name, v in given.items()}
    trial_config(**first)
    return first, factors


def sweep_command(given: dict, trials: int) -> str:
    """The ``ptq sweep`` command that runs seeds 0 to ``trials - 1`` of the trial settings
    ``given`` (a name -> value; a cell's): one option per setting whose value is not its
    default, ``none`` for a missing value."""
    unknown = set(given) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown setting {sorted(unknown)[0]!r}; choose from {', '.join(NAMES)}")
    parts = ["ptq", "sweep"]
    for s in SETTINGS:
        if s.name in given and given[s.name] != s.default:
            parts += [s.option, "none" if given[s.name] is None else shlex.quote(str(given[s.name]))]
    return " ".join([*parts, "--trials", str(trials)])

# --- what reports derive -------------------------------------------------------------------------

def label(name: str, level) -> str:
    """How a report names a level of a setting."""
    return setting(name).label(level)


def remedies() -> list[tuple[Setting, Remedy]]:
    return [(s, s.remedy) for s in SETTINGS if s.remedy is not None]


Cell = dataclasses.make_dataclass(
    "Cell", [(s.name, Any, field(default=s.default)) for s in SETTINGS if s.name != "seed"], frozen=True,
    namespace={
        "__doc__": "A cell of the study: every setting but the seed (see :data:`SETTINGS`).",
        "trial_config": lambda self, seed=0: trial_config(**dataclasses.asdict(self), seed=seed),
        "where": lambda self: {k: v for k, v in columns(self.trial_config()).items() if k != "seed"},
        "replace": lambda self, **changes: dataclasses.replace(self, **changes),
        "command": lambda self, trials: sweep_command(dataclasses.asdict(self), trials),
    })
Cell.__module__ = __name__
