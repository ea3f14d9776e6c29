"""Write the bundle of reconstruction jobs for the GPU (run here, where the data is).

The jobs are the iteration curve's 20,000-iteration trials the count decision still waits for
(ResNet-20 on CIFAR-10, W4A4, 1,024 calibration images, the reference variant), in priority
order, each left out if the store holds it already: AdaRound seeds 3-14 (its curve is the
widest), BRECQ with the reference's float network (``fp_weights=kept``) seeds 0-14 and with the
rounded one (``current``, its stored curve) seeds 3-14, QDrop seeds 3-9. Each is the trial of
``ptq sweep --model resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size 1024
--optimizer M --variant reference --iters 20000 [--fp-weights F] --seed S --trials 1``.

    PTQ_DATA=../shared/data python results/gpu/recon_prepare.py .gpu/recon-jobs.pt
"""
import sys

from ptqlib.study.offload import export_jobs
from ptqlib.study.settings import row_key, trial_config
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import context

CELL = dict(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=1024, variant="reference",
            iters=20_000)
PRIORITY = [({"optimizer": "adaround"}, range(3, 15)),
            ({"optimizer": "brecq", "fp_weights": "kept"}, range(0, 15)),
            ({"optimizer": "brecq", "fp_weights": "current"}, range(3, 15)),
            ({"optimizer": "qdrop"}, range(3, 10))]

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
