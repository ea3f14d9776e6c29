"""Write the bundle of reconstruction jobs for the GPU (run here, where the data is).

The jobs are the iteration curve's trials the count decision still waits for, exactly the queue
the CPU lanes run (``results/missing_trials.py recon``: the optimizer page's study curve,
ResNet-20 on CIFAR-10, W4A4, 1,024 calibration images, the reference variant; each method's
seeds 0-9 from 20,000 iterations down, leaving out counts whose outcome cannot change the
study-wide count), without the trials the store holds. Each is the trial of ``ptq sweep --model
resnet20 --data cifar10-jpeg --w-bits 4 --a-bits 4 --calib-size 1024 --optimizer M --variant
reference --iters N [--fp-weights kept] --seed S --trials 1``.

    PTQ_DATA=../shared/data python results/gpu/recon_prepare.py .gpu/recon-jobs.pt
"""
import sys
from pathlib import Path

from ptqlib.study.offload import export_jobs
from ptqlib.study.settings import row_key, trial_config
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import context

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from missing_trials import recon_queue  # noqa: E402  (results/ holds scripts, not a package)

if len(sys.argv) != 2:
    sys.exit("usage: python results/gpu/recon_prepare.py BUNDLE.pt")
store = ResultsStore("results/trials.sqlite")
done = store.existing_keys()
configs = [cfg for given in recon_queue(store) for cfg in [trial_config(**given)]
           if row_key(cfg, context(cfg, "cpu").weights_fp, context(cfg, "cpu").data_fp) not in done]
if not configs:
    sys.exit("the count decision needs no trial the store lacks (every one it still reads is stored, or none can "
             "change the study-wide count): nothing to offload")
bundle = export_jobs(configs, sys.argv[1])
print(f"{len(bundle['jobs'])} jobs (stored trials left out), {len(bundle['images'])} calibration draws -> {sys.argv[1]}")
for job in bundle["jobs"]:
    c = job["config"]
    print(c["optimizer"], c["recon"].get("fp_weights", "current"), c["seed"], c["recon"]["iters"], c["recon"]["act_iters"])
