"""Write the bundle of reconstruction jobs for the GPU (run here, where the data is).

The jobs are the iteration curve's trials the count decision still waits for (ResNet-20 on
CIFAR-10, W4A4, 1,024 calibration images, the reference variant; the optimizer page's
fixed-sequence test reads the first 10 seeds of each count, from 20,000 down): seeds 0-9 of
AdaRound, BRECQ with the reference's float network (``fp_weights=kept``) and QDrop at 20,000
iterations, then at 5,000, then at 2,000, each left out if the store holds it already. Each is
the trial of ``ptq sweep --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size
1024 --optimizer M --variant reference --iters N [--fp-weights kept] --seed S --trials 1``.

    PTQ_DATA=../shared/data python results/gpu/recon_prepare.py .gpu/recon-jobs.pt
"""
import sys

from ptqlib.study.offload import export_jobs
from ptqlib.study.settings import row_key, trial_config
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import context

CELL = dict(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=1024, variant="reference")
METHODS = [{"optimizer": "adaround"}, {"optimizer": "brecq", "fp_weights": "kept"}, {"optimizer": "qdrop"}]
PRIORITY = [({**method, "iters": iters}, range(10)) for iters in (20_000, 5_000, 2_000) for method in METHODS]

store = ResultsStore("results/trials.sqlite")
done = store.existing_keys()
ctx = context(trial_config(**CELL, optimizer="qdrop"), "cpu")
configs = [cfg for setting, seeds in PRIORITY for seed in seeds
           for cfg in [trial_config(**CELL, **setting, seed=seed)]
           if row_key(cfg, ctx.weights_fp, ctx.data_fp) not in done]
bundle = export_jobs(configs, sys.argv[1])
print(f"{len(bundle['jobs'])} jobs (stored trials left out), {len(bundle['images'])} calibration draws -> {sys.argv[1]}")
for job in bundle["jobs"]:
    c = job["config"]
    print(c["optimizer"], c["recon"].get("fp_weights", "current"), c["seed"], c["recon"]["iters"], c["recon"]["act_iters"])
