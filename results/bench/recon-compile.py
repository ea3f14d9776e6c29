# Per-step time of the reconstruction step, eager against torch.compile of each unit (dynamic=False),
# with ptq bench's run of a method in the reference variant:
# .venv/bin/python results/bench/recon-compile.py eager|compile|compile-fallback qdrop|brecq|adaround ITERS
# (PTQ_DATA set, PYTHONPATH at the repository). Under compilation the learned fake quantization clamps
# with tensor bounds (no graph break). Steady median = median step after 5 warm-up steps.
import sys, time, torch
import torch._inductor.config
torch.set_num_threads(1)
import ptqlib.quant.recon.optimize as O
from ptqlib.study.trial import TrialContext  # noqa
MODE = sys.argv[1]  # eager | compile | compile-fallback (inductor draws random numbers with eager's generator)
METHOD = sys.argv[2]
ITERS = int(sys.argv[3])
class Patched(O._EagerSteps):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        if MODE == "compile-fallback":
            torch._inductor.config.fallback_random = True
        if MODE.startswith("compile"):
            self.unit = torch.compile(self.unit, dynamic=False)
        self.t = []
    def __call__(self, step):
        t0 = time.perf_counter(); r = super().__call__(step); self.t.append(time.perf_counter() - t0)
        if step == self.stage.iters - 1:
            import statistics
            warm = self.t[: min(5, len(self.t))]; rest = self.t[5:]
            print(f"unit step: first5 {sum(warm):.2f}s, steady median {statistics.median(rest)*1000:.2f} ms", flush=True)
        return r
O._EagerSteps = Patched
from ptqlib.app.cli import main
sys.exit(main(["bench", "--model", "resnet20", "--data", "cifar10-jpeg", "--w-bits", "4", "--a-bits", "4", "--calib-size", "1024",
               "--optimizer", METHOD, "--variant", "reference", "--iters", str(ITERS), "--threads", "1", "--json"]))
