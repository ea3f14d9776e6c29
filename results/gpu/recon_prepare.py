"""Write the bundle of reconstruction jobs for the GPU (run here, where the data is).

The jobs are the queue the CPU lanes run, without the trials the store holds. While the
optimizer page has no study-wide count: the iteration curve's trials the count decision still
waits for (``results/missing_trials.py recon``: ResNet-20 on CIFAR-10, W4A4, 1,024 calibration
images, the reference variant; each method's seeds 0-9 from 20,000 iterations down, leaving out
counts whose outcome cannot change the study-wide count). Once it has one: the study's
reconstruction cells at that count (``results/missing_trials.py rerun``, in its stages: every
cell's first seeds before any cell's later ones), the reconstruction trials only (grid search
runs here in seconds), of the first cell's model, dataset and weights only (a bundle holds
one), and the queue's first jobs up to ``MAX_DRAWS`` calibration draws (each about 3 MB; the
device tool carries 64 MiB). Each job is the trial of ``ptq sweep --model M --data
cifar10-jpeg --w-bits W --a-bits 4 --calib-size 1024 --optimizer O --variant reference --iters N
[--fp-weights kept] --seed S --trials 1``.

    PTQ_DATA=../shared/data python results/gpu/recon_prepare.py .gpu/recon-jobs.pt
"""
import sys
from pathlib import Path

from ptqlib.study.offload import draw_key, export_jobs
from ptqlib.study.settings import row_key, trial_config
from ptqlib.study.store import ResultsStore
from ptqlib.study.sweep import context

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from missing_trials import recon_queue, rerun_queue  # noqa: E402  (results/ holds scripts, not a package)

MAX_DRAWS = 16

if len(sys.argv) != 2:
    sys.exit("usage: python results/gpu/recon_prepare.py BUNDLE.pt")
store = ResultsStore("results/trials.sqlite")
done = store.existing_keys()


def missing(queue: list[dict]) -> list:
    return [cfg for given in queue for cfg in [trial_config(**given)] for ctx in [context(cfg, "cpu")]
            if row_key(cfg, ctx.weights_fp, ctx.data_fp) not in done]


configs = missing(recon_queue(store))
if not configs:  # the count is decided, or no trial the decision reads is missing: the study's cells at it
    configs = [c for c in missing(rerun_queue(store)) if c.recon is not None]
    bundled = (configs[0].model, configs[0].dataset, configs[0].weights) if configs else None
    configs = [c for c in configs if (c.model, c.dataset, c.weights) == bundled]
    draws = list(dict.fromkeys(draw_key(c) for c in configs))
    if len(draws) > MAX_DRAWS:  # the queue's first jobs, up to the first that would need one draw more
        configs = configs[:next(i for i, c in enumerate(configs) if draw_key(c) == draws[MAX_DRAWS])]
if not configs:
    sys.exit("neither the count decision nor the study's cells at its count need a reconstruction trial the "
             "store lacks: nothing to offload")
bundle = export_jobs(configs, sys.argv[1])
print(f"{len(bundle['jobs'])} jobs (stored trials left out), {len(bundle['images'])} calibration draws -> {sys.argv[1]}")
for job in bundle["jobs"]:
    c = job["config"]
    print(c["model"], f"W{c['quant']['w_bits']}A{c['quant']['a_bits']}", c["optimizer"],
          c["recon"].get("fp_weights", "current"), c["seed"], c["recon"]["iters"], c["recon"]["act_iters"])
