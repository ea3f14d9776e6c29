"""Coverage of the verdicts' bootstrap intervals on few seeds: for n normal trials (true mean 0),
how often the 95 % interval of the mean covers 0, read at the plain percentile tails (2.5 %) and
at the expanded tails ``ptqlib.analysis.verdicts.bootstrap_interval`` reads
(:func:`~ptqlib.analysis.verdicts.expanded_tail`). 400 samples per n, so each share is within
about 1 to 2 points of the true coverage. Run: PYTHONPATH=. .venv/bin/python results/stats/bootstrap-coverage.py
"""
import numpy as np

from ptqlib.analysis import verdicts as V

SAMPLES, RESAMPLES = 400, 2000
rng = np.random.default_rng(0)
print(f"{'trials':>6} {'expanded tail':>13} {'plain 95 %':>10} {'expanded':>9}")
for n in (5, 7, 10, 20, 50):
    plain = expanded = 0
    for k, x in enumerate(rng.normal(0.0, 1.0, (SAMPLES, n))):
        means = x[np.random.default_rng(k).integers(0, n, (RESAMPLES, n))].mean(-1)
        low, high = np.quantile(means, [0.025, 0.975])
        plain += low <= 0 <= high
        low, high = V.bootstrap_interval(lambda i: x[i].mean(-1), [n], paired=False, seed=k)
        expanded += low <= 0 <= high
    print(f"{n:>6} {V.expanded_tail(n):>13.5f} {plain / SAMPLES:>10.3f} {expanded / SAMPLES:>9.3f}")
