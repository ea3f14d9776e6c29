# Where BRECQ's activation range search could choose differently from ours for want of candidates:
# its code tries 80 ranges [min, max] * (1 - 0.01 i), i < 80 (down to 21 % of the range), ours 100
# (t = 0.01 .. 1). For ResNet-20 W4A4, BRECQ's reference variant calibration (1,024 images, seeds 0-4),
# each activation quantizer's lp2.4 range on the first 64 images of the whole weight-quantized network
# (BRECQ's initialisation, --act-init network), on the histogram and on the raw values: the chosen
# fraction t of the observed range. A t below 0.21 is a choice BRECQ's code cannot make.
# PTQ_DATA=/work/shared/data .venv/bin/python results/bench/act-candidates.py
import torch
from ptqlib.data import to_float
from ptqlib.quant.recon.passes import init_network_ranges
from ptqlib.study.settings import trial_config
from ptqlib.study.trial import TrialContext

torch.set_num_threads(1)
ctx = TrialContext("resnet20", "cifar10-jpeg")
chosen = {}
for search in ("histogram", "tensor"):
    fractions = []
    for seed in range(5):
        cfg = trial_config(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=1024,
                           optimizer="brecq", variant="reference", seed=seed)
        calib = ctx.calibration_set(cfg)
        qmodel = ctx.calibrated(cfg, calib.images)
        maxima = {}
        hooks = [aq.register_forward_hook(lambda m, i, o: maxima.__setitem__(m.scope, float(i[0].max())))
                 for aq in qmodel.act_quantizers()]
        init_network_ranges(qmodel, to_float(calib.images[:64]), "lp2.4", search)
        for h in hooks:
            h.remove()
        for aq in qmodel.act_quantizers():
            q = aq.quantizer
            hi = float(q.scale) * (q.spec.qmax - int(q.zero_point))
            fractions.append(hi / maxima[aq.scope])
    t = chosen[search] = torch.tensor(fractions)
    print(f"{search}: {len(t)} ranges (19 quantizers x 5 seeds); chosen fraction of the range: min {t.min():.3f}, "
          f"median {t.median():.3f}, max {t.max():.3f}; below 0.21: {int((t < 0.21).sum())}")
print(f"ranges chosen differently by the two searches: {int((chosen['histogram'] != chosen['tensor']).sum())} of "
      f"{len(chosen['tensor'])}; largest difference of the fraction {float((chosen['histogram'] - chosen['tensor']).abs().max()):.3f}")
