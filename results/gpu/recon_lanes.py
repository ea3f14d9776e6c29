"""One lane of reconstruction jobs on the GPU (see README.md): the jobs of one method from the
bundle, in order, until ``--deadline`` (seconds since the epoch), written to ``--out`` after each
(``ptqlib.study.offload.run_jobs``, as ``ptq offload run`` does, with the method filter and the
deadline added)."""
import argparse

import torch

from ptqlib.study.offload import load_bundle, run_jobs

p = argparse.ArgumentParser()
p.add_argument("--bundle", required=True)
p.add_argument("--method", required=True)
p.add_argument("--out", required=True)
p.add_argument("--deadline", type=float, required=True)
p.add_argument("--iters", type=int, default=None, help="override (smoke tests only)")
a = p.parse_args()
torch.set_num_threads(1)
bundle = load_bundle(a.bundle)
if a.iters:
    for job in bundle["jobs"]:
        job["config"]["recon"]["iters"] = a.iters
        job["config"]["recon"]["act_iters"] = max(1, a.iters // 4)
results = run_jobs(bundle, a.out, "cuda" if torch.cuda.is_available() else "cpu", optimizer=a.method,
                   deadline=a.deadline, log=lambda line: print(f"{a.method}: {line}", flush=True))
print(f"{a.method}: done, {len(results)} jobs", flush=True)
