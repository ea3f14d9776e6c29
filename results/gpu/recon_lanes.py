"""One lane of reconstruction jobs on the GPU (see README.md): lane ``--lane`` of ``--lanes``
takes the bundle's jobs ``lane, lane + lanes, ...`` (the bundle is in priority order), in order,
until ``--deadline`` (seconds since the epoch), written to ``--out`` after each
(``ptqlib.study.offload.run_jobs``, as ``ptq offload run`` does, with the lane's share of the
jobs and the deadline added)."""
import argparse

import torch

from ptqlib.study.offload import load_bundle, run_jobs

p = argparse.ArgumentParser()
p.add_argument("--bundle", required=True)
p.add_argument("--lane", type=int, required=True)
p.add_argument("--lanes", type=int, required=True)
p.add_argument("--out", required=True)
p.add_argument("--deadline", type=float, required=True)
p.add_argument("--iters", type=int, default=None, help="override (smoke tests only)")
a = p.parse_args()
assert 0 <= a.lane < a.lanes, "lane must be in 0 .. lanes - 1"
torch.set_num_threads(1)
bundle = load_bundle(a.bundle)
bundle = dict(bundle, jobs=bundle["jobs"][a.lane::a.lanes])
if a.iters:
    for job in bundle["jobs"]:
        job["config"]["recon"]["iters"] = a.iters
        job["config"]["recon"]["act_iters"] = max(1, a.iters // 4)
results = run_jobs(bundle, a.out, "cuda" if torch.cuda.is_available() else "cpu", deadline=a.deadline,
                   log=lambda line: print(f"lane {a.lane}: {line}", flush=True))
print(f"lane {a.lane}: done, {len(results)} jobs", flush=True)
