# Per-step time of the reconstruction step, eager against torch.compile of each unit (dynamic=False),
# with ptq bench's QDrop run: .venv/bin/python results/bench/recon-compile.py eager|compile qdrop 300
# (PTQ_DATA set, PYTHONPATH at the repository; TENSOR_ZP=1: the learned fake quantization clamps with
# tensor bounds, which removes dynamo's one graph break). Steady median = median step after 5 warm-up steps.
import os, sys, time, torch
torch.set_num_threads(1)
import ptqlib.quant.recon.optimize as O
from ptqlib.study.trial import TrialContext  # noqa
MODE = sys.argv[1]  # eager | compile
METHOD = sys.argv[2]
ITERS = int(sys.argv[3])
orig_call = O._EagerSteps.__call__
times = {}
class Patched(O._EagerSteps):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        if MODE == "compile":
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
if MODE == "compile" and os.environ.get("TENSOR_ZP"):
    import ptqlib.quant.quantizer as Q
    def forward(ctx, x, scale, zero_point, qmin, qmax, keep):
        t = torch.mul(x, 1.0 / scale)
        q = torch.round(t)
        zp = zero_point.to(x.dtype)
        qc = torch.clamp(q, qmin - zp, qmax - zp)
        inside = q.eq_(qc)
        out = qc * scale
        if keep is not None:
            out = torch.lerp(x, out, keep)
        d_scale = None
        if ctx.needs_input_grad[1]:
            d_scale = torch.sub(qc, t.mul_(inside), out=t)
            if keep is not None:
                d_scale.mul_(keep)
        d_x = inside
        if keep is not None and ctx.needs_input_grad[0]:
            d_x = inside.sub_(1).mul_(keep).add_(1)
        ctx.save_for_backward(d_x, d_scale, scale)
        return out
    Q._LearnedFakeQuant.forward = staticmethod(forward)
from ptqlib.app.cli import main
sys.exit(main(["bench", "--model", "resnet20", "--data", "cifar10-jpeg", "--w-bits", "4", "--a-bits", "4", "--calib-size", "1024",
               "--optimizer", METHOD, "--variant", "reference", "--iters", str(ITERS), "--threads", "1", "--json"]))
