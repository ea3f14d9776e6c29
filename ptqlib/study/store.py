"""The results store: one SQLite file, one row per trial, keyed by the trial's full
configuration hash (:meth:`TrialConfig.key`) together with fingerprints of the weights and
the data it ran on (:func:`row_key`): replacing a checkpoint or a dataset never lets old rows
pass for new ones.

A row holds the readable configuration, per-class accuracy, average and worst class, the
calibration set's class histogram, timings, the device, the library version, fingerprints of the
data and weights, and the trial's predicted label for every test image (uint16, zlib-compressed), so
later analyses (prediction flips, consistently forgotten images) need no recomputation. The
float model's reference is stored once per model, weights and data.

Every row is written in its own transaction (SQLite WAL journal): a process killed at any
moment loses no finished trial and leaves no partial row, and several processes may write
one store (each waits for the write lock; two sweeps of the same grid may both compute a
missing trial, and the second copy is dropped).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptqlib import __version__
from ptqlib.study.trial import TrialConfig, TrialContext, TrialResult

DEFAULT_STORE = Path("results/trials.sqlite")
CONFIG_COLUMNS = ("model", "dataset", "weights", "preset", "w_bits", "a_bits", "metric", "weight_metric",
                  "optimizer", "iters", "calib_size", "noise", "noise_kind", "bias_class", "bias_p", "sampling",
                  "class_weighting", "variant", "engine", "seed")
FILTER_COLUMNS = (*CONFIG_COLUMNS, "weights_fp", "data_fp")
SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY, config_key TEXT NOT NULL, config TEXT NOT NULL,
    model TEXT, dataset TEXT, weights TEXT, preset TEXT, w_bits INTEGER, a_bits INTEGER, metric TEXT,
    weight_metric TEXT, optimizer TEXT, iters INTEGER, calib_size INTEGER, noise REAL, noise_kind TEXT, bias_class TEXT,
    bias_p REAL, sampling TEXT NOT NULL DEFAULT 'random', class_weighting TEXT, variant TEXT, engine TEXT, seed INTEGER,
    avg REAL NOT NULL, worst_class TEXT NOT NULL, worst_acc REAL NOT NULL, per_class TEXT NOT NULL,
    calib_counts TEXT NOT NULL, noise_images INTEGER NOT NULL, preds BLOB NOT NULL,
    calib_s REAL, eval_s REAL, version TEXT, data_fp TEXT, weights_fp TEXT, created REAL, ece REAL, device TEXT);
CREATE TABLE IF NOT EXISTS fp_reference (
    model TEXT, dataset TEXT, weights_fp TEXT, data_fp TEXT, weights TEXT, avg REAL, per_class TEXT,
    preds BLOB, created REAL, ece REAL, PRIMARY KEY (model, dataset, weights_fp, data_fp));
CREATE TABLE IF NOT EXISTS test_labels (data_fp TEXT PRIMARY KEY, labels BLOB NOT NULL);
"""
# columns added after stores were first written: (table, column, definition)
MIGRATIONS = (("trials", "iters", "INTEGER"), ("trials", "sampling", "TEXT NOT NULL DEFAULT 'random'"),
              ("trials", "class_weighting", "TEXT"), ("trials", "ece", "REAL"), ("fp_reference", "ece", "REAL"),
              ("trials", "device", "TEXT"),  # device: NULL for trials stored before it was recorded (all CPU)
              ("trials", "variant", "TEXT"),  # variant: NULL for grid search and the joint reconstruction
              ("trials", "engine", "TEXT"))  # engine: NULL for fake quantization (every trial stored before it)


def pack_preds(preds: torch.Tensor) -> bytes:
    assert preds.max() < 2**16, "labels must fit in uint16"
    return zlib.compress(preds.numpy().astype(np.uint16).tobytes(), 6)


def unpack_preds(blob: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype=np.uint16).astype(np.int64)


def config_columns(cfg: TrialConfig) -> dict:
    q, c = cfg.quant, cfg.calib
    return {"model": cfg.model, "dataset": cfg.dataset, "weights": cfg.weights, "preset": q.preset,
            "w_bits": q.w_bits, "a_bits": q.a_bits, "metric": q.metric, "weight_metric": q.weight_metric,
            "optimizer": cfg.optimizer, "iters": cfg.recon.iters if cfg.recon else None, "calib_size": c.size,
            "noise": c.noise, "noise_kind": c.noise_kind,
            "bias_class": c.bias_class, "bias_p": c.bias_p, "sampling": c.sampling,
            "class_weighting": cfg.recon.class_weighting if cfg.recon else None,
            # NULL for the joint variant, as in the rows stored before the column existed
            "variant": cfg.recon.variant if cfg.recon and cfg.recon.variant != "joint" else None,
            "engine": None if cfg.engine == "fake" else cfg.engine, "seed": cfg.seed}  # NULL: fake, as stored before


def row_key(cfg: TrialConfig, weights_fp: str, data_fp: str) -> str:
    """The store key of a trial: its configuration and the exact weights and data."""
    return hashlib.sha256(f"{cfg.key()}|{weights_fp}|{data_fp}".encode()).hexdigest()[:24]


def trial_row(result: TrialResult, ctx: TrialContext) -> dict:
    """Everything stored of a trial, as plain values (picklable across processes)."""
    cfg = result.config
    worst = min(result.per_class, key=result.per_class.get)
    return {"key": row_key(cfg, ctx.weights_fp, ctx.data_fp), "config_key": cfg.key(),
            "config": json.dumps(cfg.to_dict(), sort_keys=True), **config_columns(cfg),
            "avg": result.avg, "worst_class": worst, "worst_acc": result.per_class[worst],
            "per_class": json.dumps(result.per_class), "calib_counts": json.dumps(result.calib_counts),
            "noise_images": result.noise_images, "preds": pack_preds(result.preds),
            "calib_s": result.calib_seconds, "eval_s": result.eval_seconds, "version": __version__,
            "data_fp": ctx.data_fp, "weights_fp": ctx.weights_fp, "created": time.time(), "ece": result.ece,
            "device": str(ctx.device)}


class ResultsStore:
    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as con:
            con.executescript(SCHEMA)
            for table, column, definition in MIGRATIONS:
                if column not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @contextmanager
    def _connection(self):
        """A connection whose block is one transaction (committed, or rolled back on error)."""
        con = sqlite3.connect(self.path, timeout=120)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            with con:
                yield con
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"results store {str(self.path)!r} is not a usable SQLite file ({exc})") from None
        finally:
            con.close()

    def existing_keys(self) -> set[str]:
        with self._connection() as con:
            return {k for (k,) in con.execute("SELECT key FROM trials")}

    def add_trial(self, row: dict) -> bool:
        """Insert one trial atomically; False when the store already had it."""
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connection() as con:
            cur = con.execute(f"INSERT OR IGNORE INTO trials ({cols}) VALUES ({marks})", tuple(row.values()))
        return cur.rowcount == 1

    def keys_without_ece(self) -> set[str]:
        """Trials stored before the store kept the expected calibration error."""
        with self._connection() as con:
            return {k for (k,) in con.execute("SELECT key FROM trials WHERE ece IS NULL")}

    def fill_ece(self, row: dict) -> None:
        """Record the ECE of a stored trial that predates ECE, from ``row``, a rerun of it. The
        rerun must reproduce the stored predictions exactly; otherwise nothing is written."""
        with self._connection() as con:
            stored = con.execute("SELECT preds FROM trials WHERE key = ?", (row["key"],)).fetchone()
            if stored is None:
                raise KeyError(f"trial {row['key']} is not in the store")
            if bytes(stored[0]) != bytes(row["preds"]):
                raise ValueError(f"trial {row['key']}: the rerun does not reproduce the stored predictions, "
                                 "so its ECE is not recorded")
            con.execute("UPDATE trials SET ece = ? WHERE key = ? AND ece IS NULL", (row["ece"], row["key"]))

    def add_fp(self, ctx: TrialContext) -> None:
        """The float model's reference and the test labels (kept once; a missing ECE is filled in)."""
        with self._connection() as con:
            con.execute("INSERT OR IGNORE INTO fp_reference (model, dataset, weights_fp, data_fp, weights, avg, "
                        "per_class, preds, created, ece) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (ctx.model_name, ctx.dataset, ctx.weights_fp, ctx.data_fp, ctx.weights_arg, ctx.fp_avg,
                         json.dumps(ctx.fp_per_class), pack_preds(ctx.fp_preds), time.time(), ctx.fp_ece))
            con.execute("UPDATE fp_reference SET ece = ? WHERE model = ? AND dataset = ? AND weights_fp = ? "
                        "AND data_fp = ? AND ece IS NULL",
                        (ctx.fp_ece, ctx.model_name, ctx.dataset, ctx.weights_fp, ctx.data_fp))
            con.execute("INSERT OR IGNORE INTO test_labels VALUES (?, ?)", (ctx.data_fp, pack_preds(ctx.test.labels)))

    def predictions(self, **where) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
        """The selected trials (one fingerprint pair), their predictions ``[trials, images]``, and
        the float model's predictions and the test labels ``[images]``."""
        trials = self.trials(with_preds=True, **where)
        if trials.empty:
            raise ValueError(f"no trials match {where}")
        pairs = trials[["model", "dataset", "weights_fp", "data_fp"]].drop_duplicates()
        if len(pairs) != 1:
            raise ValueError(f"the selection mixes {len(pairs)} models, weights or data; filter on weights_fp and data_fp")
        model, dataset, weights_fp, data_fp = pairs.iloc[0]
        with self._connection() as con:
            fp = con.execute("SELECT preds FROM fp_reference WHERE model = ? AND dataset = ? AND weights_fp = ? "
                             "AND data_fp = ?", (model, dataset, weights_fp, data_fp)).fetchone()
            labels = con.execute("SELECT labels FROM test_labels WHERE data_fp = ?", (data_fp,)).fetchone()
        if fp is None or labels is None:
            raise ValueError(f"the store has no float reference or test labels for {model} on {dataset} "
                             "(run any trial of it with this version to record them)")
        preds = np.stack([unpack_preds(b) for b in trials.pop("preds")])
        return trials, preds, unpack_preds(fp[0]), unpack_preds(labels[0])

    def latest_fingerprints(self, model: str, dataset: str, weights: str | None) -> dict | None:
        """``weights_fp`` and ``data_fp`` of the most recent FP reference of a model, dataset
        and weights argument (``None``: the project's default weights): the trials a report
        should show."""
        with self._connection() as con:
            row = con.execute("SELECT weights_fp, data_fp FROM fp_reference WHERE model = ? AND dataset = ? "
                              "AND weights IS ? ORDER BY created DESC LIMIT 1",
                              (model, dataset, weights)).fetchone()
        return None if row is None else {"weights_fp": row[0], "data_fp": row[1]}

    def trials(self, with_preds: bool = False, **where) -> pd.DataFrame:
        """One row per trial; ``where`` filters on configuration columns (``w_bits=4``)."""
        unknown = set(where) - set(FILTER_COLUMNS)
        if unknown:
            raise ValueError(f"cannot filter on {sorted(unknown)}; columns: {', '.join(FILTER_COLUMNS)}")
        cols = "key, config_key, config, " + ", ".join(CONFIG_COLUMNS) + \
            ", avg, worst_class, worst_acc, per_class, calib_counts, noise_images, calib_s, eval_s, version, " \
            "data_fp, weights_fp, created, ece, device" + (", preds" if with_preds else "")
        clauses = " AND ".join(f"{k} IS ?" for k in where)
        sql = f"SELECT {cols} FROM trials" + (f" WHERE {clauses}" if where else "") + " ORDER BY key"
        with self._connection() as con:
            frame = pd.read_sql_query(sql, con, params=tuple(where.values()))
        for col in ("per_class", "calib_counts"):
            frame[col] = frame[col].map(json.loads)
        return frame

    def fp_reference(self) -> pd.DataFrame:
        with self._connection() as con:
            frame = pd.read_sql_query("SELECT model, dataset, weights, weights_fp, data_fp, avg, per_class, created, "
                                      "ece FROM fp_reference", con)
        frame["per_class"] = frame["per_class"].map(json.loads)
        return frame

    def per_class(self, **where) -> pd.DataFrame:
        """Tidy frame: one row per trial and class, with the FP accuracy and the drop."""
        trials = self.trials(**where)
        fp = {(r.model, r.dataset, r.weights_fp, r.data_fp): r.per_class for r in self.fp_reference().itertuples()}
        rows = []
        for t in trials.itertuples():
            ref = fp.get((t.model, t.dataset, t.weights_fp, t.data_fp), {})
            for cls, acc in t.per_class.items():
                rows.append({**{c: getattr(t, c) for c in CONFIG_COLUMNS}, "key": t.key, "class": cls,
                             "acc": acc, "fp_acc": ref.get(cls, np.nan), "drop": ref.get(cls, np.nan) - acc})
        return pd.DataFrame(rows, columns=[*CONFIG_COLUMNS, "key", "class", "acc", "fp_acc", "drop"])

    def export(self, path: str | Path) -> Path:
        """Write the tidy per-class frame to ``.csv`` or ``.parquet``."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ValueError(f"folder {str(path.parent)!r} does not exist")
        frame = self.per_class()
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            raise ValueError(f"unknown export format {path.suffix!r}; use .csv or .parquet")
        return path
