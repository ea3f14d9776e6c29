"""One lane of reconstruction jobs on the GPU (see README.md): runs the jobs of one method from
the bundle in order, and after each writes all its results so far to ``--out`` (atomically), so
that a lane stopped by the time limit keeps every finished job. A job starts only if the last
one's duration, with a margin, fits before ``--deadline`` (seconds since the epoch)."""
import argparse
import os
import time

import torch

from ptqlib.study.offload import load_bundle, run_job

p = argparse.ArgumentParser()
p.add_argument("--bundle", required=True)
p.add_argument("--method", required=True)
p.add_argument("--out", required=True)
p.add_argument("--deadline", type=float, required=True)
p.add_argument("--iters", type=int, default=None, help="override (smoke tests only)")
a = p.parse_args()
torch.set_num_threads(1)
device = "cuda" if torch.cuda.is_available() else "cpu"
bundle = load_bundle(a.bundle)
if a.iters:
    for job in bundle["jobs"]:
        job["config"]["recon"]["iters"] = a.iters
        job["config"]["recon"]["act_iters"] = max(1, a.iters // 4)
mine = [i for i, job in enumerate(bundle["jobs"]) if job["config"]["optimizer"] == a.method]
results, last = [], 0.0
for i in mine:
    left = a.deadline - time.time()
    if last * 1.1 > left:
        print(f"{a.method}: job {i} not started, {left:.0f} s left, the last took {last:.0f} s", flush=True)
        break
    t0 = time.time()
    res = run_job(bundle, i, device)
    last = time.time() - t0
    results.append(res)
    torch.save(results, a.out + ".tmp")
    os.replace(a.out + ".tmp", a.out)
    iters = sum(u["iters"] for u in res["units"])
    print(f"{a.method}: job {i} seed {res['config']['seed']} on {device}: {res['recon_seconds']:.1f} s, "
          f"{iters / res['recon_seconds']:.0f} it/s over {len(res['units'])} units", flush=True)
print(f"{a.method}: done, {len(results)} jobs", flush=True)
