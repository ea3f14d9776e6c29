# Every activation quantizer of ResNet-20 W4A4 (grid calibration, 64 images): does any see a negative input
# on 64 calibration images? (QDrop's observer runs its 2-D search only on two-sided data.)
# PTQ_DATA=/work/shared/data .venv/bin/python results/bench/activation-signs.py
import torch
from ptqlib.study.trial import TrialContext
from ptqlib.study.settings import trial_config
cfg = trial_config(model="resnet20", dataset="cifar10-jpeg", w_bits=4, a_bits=4, calib_size=64)
ctx = TrialContext("resnet20", "cifar10-jpeg")
calib = ctx.calibration_set(cfg)
q = ctx.quantize(cfg, calib.images, calib.labels)
mins = []
hooks = [aq.register_forward_hook(lambda m, i, o: mins.append((m.scope, float(i[0].min())))) for aq in q.act_quantizers()]
with torch.no_grad():
    q(calib.images[:64].float().div(255))
print(len(mins), "quantizers; negative inputs:", [s for s, v in mins if v < 0])
