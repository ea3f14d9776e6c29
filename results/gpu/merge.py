"""Merge the lanes' stores into one (INSERT OR IGNORE: a trial's key is its configuration)."""
import sqlite3
import sys

from ptqlib.study.store import ResultsStore

out, lanes = sys.argv[1], sys.argv[2:]
ResultsStore(out).trials()  # creates the schema
con = sqlite3.connect(out)
for i, path in enumerate(lanes):
    con.execute(f"ATTACH DATABASE ? AS lane{i}", (path,))
    for table in ("trials", "fp_reference", "test_labels"):
        con.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM lane{i}.{table}")
    con.commit()
    con.execute(f"DETACH DATABASE lane{i}")
print("merged:", con.execute("SELECT class_weighting, device, count(*), avg(calib_s) FROM trials GROUP BY 1, 2").fetchall())
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.close()
