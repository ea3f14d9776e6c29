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
from ptqlib.study import settings
from ptqlib.study.settings import TrialConfig, row_key  # noqa: F401 (row_key: the store's key, defined with the settings)
from ptqlib.study.trial import TrialContext, TrialResult

DEFAULT_STORE = Path("results/trials.sqlite")
RESULT_COLUMNS = (("avg", "REAL NOT NULL"), ("worst_class", "TEXT NOT NULL"), ("worst_acc", "REAL NOT NULL"),
                  ("per_class", "TEXT NOT NULL"), ("calib_counts", "TEXT NOT NULL"), ("noise_images", "INTEGER NOT NULL"),
                  ("preds", "BLOB NOT NULL"), ("calib_s", "REAL"), ("eval_s", "REAL"), ("version", "TEXT"),
                  ("data_fp", "TEXT"), ("weights_fp", "TEXT"), ("created", "REAL"), ("ece", "REAL"),
                  ("device", "TEXT"))  # device NULL: stored before it was recorded (all CPU)
TABLES = """
CREATE TABLE IF NOT EXISTS fp_reference (
    model TEXT, dataset TEXT, weights_fp TEXT, data_fp TEXT, weights TEXT, avg REAL, per_class TEXT,
    preds BLOB, created REAL, ece REAL, PRIMARY KEY (model, dataset, weights_fp, data_fp));
CREATE TABLE IF NOT EXISTS test_labels (data_fp TEXT PRIMARY KEY, labels BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS parts (name TEXT PRIMARY KEY, loaded REAL);
CREATE TABLE IF NOT EXISTS packed (row TEXT PRIMARY KEY, part TEXT NOT NULL);
"""


def schema() -> str:
    """The store's tables; the trials' configuration columns are the declared settings."""
    columns = ", ".join(f"{name} {sql}" for name, sql in (*settings.column_sql(), *RESULT_COLUMNS))
    return f"CREATE TABLE IF NOT EXISTS trials (key TEXT PRIMARY KEY, config_key TEXT NOT NULL, " \
           f"config TEXT NOT NULL, {columns});\n{TABLES}"


def migrations() -> list[tuple[str, str, str]]:
    """Columns a store written before they existed gets on opening: every setting and result
    column that may be NULL (or has a default), and the float reference's ECE."""
    return [*(("trials", name, sql) for name, sql in (*settings.column_sql(), *RESULT_COLUMNS)
              if "NOT NULL" not in sql or "DEFAULT" in sql), ("fp_reference", "ece", "REAL")]


def filter_columns() -> tuple[str, ...]:
    return (*settings.COLUMNS, "weights_fp", "data_fp")


PART_TABLES = {"trials": "key", "fp_reference": "model || '|' || dataset || '|' || weights_fp || '|' || data_fp",
               "test_labels": "data_fp"}  # each table's rows, and what names a row
# columns a store written before they existed gets on opening: every setting and result column
# that may be NULL (or has a default), and the float reference's ECE
MIGRATIONS = (*(("trials", name, sql) for name, sql in (*settings.column_sql(), *RESULT_COLUMNS)
                if "NOT NULL" not in sql or "DEFAULT" in sql),
              ("fp_reference", "ece", "REAL"))


def pack_preds(preds: torch.Tensor) -> bytes:
    assert preds.max() < 2**16, "labels must fit in uint16"
    return zlib.compress(preds.numpy().astype(np.uint16).tobytes(), 6)


def unpack_preds(blob: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype=np.uint16).astype(np.int64)


def _copy_sql(con: sqlite3.Connection, src: str, dst: str, table: str, where: str = "") -> str:
    """Copy rows of ``table`` from schema ``src`` to ``dst`` by column name (a part written before
    a column existed leaves it NULL); rows ``dst`` has are kept."""
    src_columns = {row[1] for row in con.execute(f"PRAGMA {src}.table_info({table})")}
    names = ", ".join(row[1] for row in con.execute(f"PRAGMA {dst}.table_info({table})") if row[1] in src_columns)
    return f"INSERT OR IGNORE INTO {dst}.{table} ({names}) SELECT {names} FROM {src}.{table} {where}"


def trial_row(result: TrialResult, ctx: TrialContext, device: str | None = None) -> dict:
    """Everything stored of a trial, as plain values (picklable across processes). ``device``:
    where its quantization ran, if not on ``ctx``'s device (a reconstruction run elsewhere)."""
    cfg = result.config
    worst = min(result.per_class, key=result.per_class.get)
    return {"key": row_key(cfg, ctx.weights_fp, ctx.data_fp), "config_key": cfg.key(),
            "config": json.dumps(cfg.to_dict(), sort_keys=True), **settings.columns(cfg),
            "avg": result.avg, "worst_class": worst, "worst_acc": result.per_class[worst],
            "per_class": json.dumps(result.per_class), "calib_counts": json.dumps(result.calib_counts),
            "noise_images": result.noise_images, "preds": pack_preds(result.preds),
            "calib_s": result.calib_seconds, "eval_s": result.eval_seconds, "version": __version__,
            "data_fp": ctx.data_fp, "weights_fp": ctx.weights_fp, "created": time.time(), "ece": result.ece,
            "device": device or str(ctx.device)}


class ResultsStore:
    """The SQLite store at ``path``, and beside it the folder of its committed parts (``path``
    without its suffix: ``results/trials/`` for ``results/trials.sqlite``).

    Sweeps write trials into the SQLite file, one transaction each. What is committed to the
    repository are the parts: :meth:`pack` writes the rows no part holds yet into a new part file,
    which is never changed afterwards, so a commit of results adds about the size of its new trials.
    Opening a store loads the parts it has not loaded yet (:meth:`load_parts`), so a fresh clone's
    first use builds the SQLite file from the parts; nothing is recomputed."""

    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)
        self.parts_dir = self.path.with_suffix("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as con:
            con.executescript(schema())
            for table, column, definition in migrations():
                if column not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        self.load_parts()

    def part_files(self) -> list[Path]:
        return sorted(self.parts_dir.glob("*.sqlite")) if self.parts_dir.is_dir() else []

    def load_parts(self) -> list[str]:
        """Load every part not loaded before (rows the store has are kept); returns their names."""
        with self._connection() as con:
            loaded = {name for (name,) in con.execute("SELECT name FROM parts")}
        new = [p for p in self.part_files() if p.name not in loaded]
        for part in new:
            with self._connection() as con:
                con.execute("ATTACH DATABASE ? AS part", (f"{part.resolve().as_uri()}?immutable=1",))
                for table, row in PART_TABLES.items():
                    con.execute(_copy_sql(con, "part", "main", table))
                    con.execute(f"INSERT OR IGNORE INTO main.packed SELECT {row}, ? FROM part.{table}", (part.name,))
                # OR IGNORE: another process opening the store may have loaded the same part meanwhile
                con.execute("INSERT OR IGNORE INTO main.parts VALUES (?, ?)", (part.name, time.time()))
        return [p.name for p in new]

    def merge(self, other: str | Path) -> int:
        """Copy the rows of another store (e.g. one a separate sweep or machine wrote) that this one
        lacks; returns the number of new trials."""
        if not Path(other).is_file():
            raise ValueError(f"results store {str(other)!r} does not exist")
        before = len(self.existing_keys())
        with self._connection() as con:
            con.execute("ATTACH DATABASE ? AS other", (f"{Path(other).resolve().as_uri()}?mode=ro",))
            for table in PART_TABLES:
                con.execute(_copy_sql(con, "other", "main", table))
        return len(self.existing_keys()) - before

    def pack(self, name: str) -> Path | None:
        """Write the rows that no part holds yet into a new part ``NNNN-name.sqlite`` (the next
        number); None when there is nothing new. The part is written under a temporary name and
        renamed when complete."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"part name {name!r}: use letters, digits, '-' and '_'")
        with self._connection() as con:
            new = sum(con.execute(f"SELECT count(*) FROM {table} WHERE {row} NOT IN (SELECT row FROM packed)"
                                  ).fetchone()[0] for table, row in PART_TABLES.items())
        if not new:
            return None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name.split("-")[0]) for p in self.part_files() if p.name.split("-")[0].isdigit()]
        final = self.parts_dir / f"{1 + max(numbers, default=0):04d}-{name}.sqlite"
        tmp = final.with_name(final.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with sqlite3.connect(tmp) as part:
            part.executescript(schema())
        part.close()
        with self._connection() as con:
            con.execute("ATTACH DATABASE ? AS part", (str(tmp),))
            for table, row in PART_TABLES.items():
                con.execute(_copy_sql(con, "main", "part", table, f"WHERE {row} NOT IN (SELECT row FROM main.packed)"))
                con.execute(f"INSERT INTO main.packed SELECT {row}, ? FROM part.{table}", (final.name,))
            con.execute("INSERT INTO main.parts VALUES (?, ?)", (final.name, time.time()))
        with sqlite3.connect(tmp) as part:  # compact, one self-contained file
            part.execute("VACUUM")
        part.close()
        tmp.replace(final)
        return final

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

    def check_keys(self) -> dict:
        """Recompute every stored trial's configuration key and row key with the current settings
        code, from its stored configuration and fingerprints. A trial whose recomputed key differs
        from its stored one would not be found by a rerun of its configuration, which would compute
        it again beside it. Returns the number of trials and the stored keys of those whose
        configuration key differs, whose row key differs, and whose stored configuration no longer
        makes a valid trial (with the reason)."""
        with self._connection() as con:
            rows = con.execute("SELECT key, config_key, config, weights_fp, data_fp FROM trials ORDER BY key").fetchall()
        config_differ, row_differ, invalid = [], [], {}
        for key, config_key, config, weights_fp, data_fp in rows:
            try:
                cfg = TrialConfig.from_dict(json.loads(config))
            except (ValueError, TypeError, KeyError) as exc:
                invalid[key] = f"{type(exc).__name__}: {exc}"
                continue
            if cfg.key() != config_key:
                config_differ.append(key)
            if row_key(cfg, weights_fp, data_fp) != key:
                row_differ.append(key)
        return {"trials": len(rows), "config_keys_differ": config_differ, "row_keys_differ": row_differ,
                "invalid": invalid}

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
        unknown = set(where) - set(filter_columns())
        if unknown:
            raise ValueError(f"cannot filter on {sorted(unknown)}; columns: {', '.join(filter_columns())}")
        results = [name for name, _ in RESULT_COLUMNS if name != "preds" or with_preds]
        cols = ", ".join(["key", "config_key", "config", *settings.COLUMNS, *results])
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
                rows.append({**{c: getattr(t, c) for c in settings.COLUMNS}, "key": t.key, "class": cls,
                             "acc": acc, "fp_acc": ref.get(cls, np.nan), "drop": ref.get(cls, np.nan) - acc})
        return pd.DataFrame(rows, columns=[*settings.COLUMNS, "key", "class", "acc", "fp_acc", "drop"])

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
