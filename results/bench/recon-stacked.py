"""Reconstructing several seeds at once: does stacking pay on this CPU?

The step of the reference variant's rounding pass (AdaRound's and BRECQ's first pass: the
rounding of a block's two 3x3 convolutions learned with activations in float, BatchNorm folded,
squared output error, Adam) for one ResNet-20 basic block of each stage (16 channels at 32x32,
32 at 16x16, 64 at 8x8), batch 32 out of 1,024 cached images per seed, one thread. K seeds
(each its own cached inputs, targets, rounding and optimiser state) three ways, alternated in one
process:

- ``seq``: one seed's step after another (what a lane does, one trial at a time);
- ``vmap``: the K steps as one, ``torch.func.vmap`` over the stacked parameters and batches
  (the stacked 5-D batches in the default layout: channels-last has no 5-D form for them, so
  this way's convolutions see contiguous inputs where ``seq``'s see channels-last ones);
- ``group``: the K steps as one, seeds side by side in the channels and each convolution a
  grouped convolution with K groups.

Printed: milliseconds per seed and step (lower is better) and the stacked ways' ratio to
``seq``. Before timing, the three ways' first-step losses are compared (same batches).
Run: .venv/bin/python results/bench/recon-stacked.py [K ...]
"""
import sys
import time

import torch
from torch.func import vmap
from torch.nn.functional import conv2d

torch.set_num_threads(1)
ZETA, GAMMA, QMIN, QMAX, ZP = 1.1, -0.1, 0, 15, 8
N, BATCH, STEPS, REPS = 1024, 32, 20, 3


def qweight(logits, base, scale):
    """AdaRound's soft-rounded weight, ``(clamp(floor(w/s) + h(V), qmin, qmax) - z) * s``."""
    h = torch.clamp(torch.sigmoid(logits) * (ZETA - GAMMA) + GAMMA, 0, 1)
    return (torch.clamp(base + h, QMIN, QMAX) - ZP) * scale


def block(p, x, groups=1):
    """A basic block with folded BatchNorm: relu(conv2(relu(conv1(x))) + x)."""
    out_c = p["b1"].shape[-4] * groups
    w1 = qweight(p["l1"], p["b1"], p["s1"]).reshape(out_c, -1, 3, 3)
    w2 = qweight(p["l2"], p["b2"], p["s2"]).reshape(out_c, -1, 3, 3)
    y = torch.relu(conv2d(x, w1, p["c1"].reshape(-1), padding=1, groups=groups))
    return torch.relu(conv2d(y, w2, p["c2"].reshape(-1), padding=1, groups=groups) + x)


def error(p, x, t):
    return (block(p, x) - t).pow(2).sum(1).mean()


def seed_state(c, gen):
    p = {}
    for i in (1, 2):
        p[f"l{i}"] = torch.randn(c, c, 3, 3, generator=gen)
        p[f"b{i}"] = torch.randint(QMIN, QMAX, (c, c, 3, 3), generator=gen).float()
        p[f"s{i}"] = torch.rand(c, 1, 1, 1, generator=gen) * 0.01
        p[f"c{i}"] = torch.randn(c, generator=gen) * 0.1
    return p


def measure(c, hw, k):
    gen = torch.Generator().manual_seed(0)
    seeds = [seed_state(c, gen) for _ in range(k)]
    xs = torch.randn(k, N, c, hw, hw, generator=gen).relu()
    ts = torch.randn(k, N, c, hw, hw, generator=gen).relu()
    cl = torch.channels_last
    x_cl = [x.contiguous(memory_format=cl) for x in xs]
    t_cl = [t.contiguous(memory_format=cl) for t in ts]
    learned = ("l1", "l2")
    single = [{n: v.clone().requires_grad_(n in learned) for n, v in s.items()} for s in seeds]
    opts = [torch.optim.Adam([s[n] for n in learned], lr=1e-3) for s in single]
    stacked = {n: torch.stack([s[n] for s in seeds]).requires_grad_(n in learned) for n in seeds[0]}
    sopt = torch.optim.Adam([stacked[n] for n in learned], lr=1e-3)
    grouped = {n: v.detach().clone().requires_grad_(n in learned) for n, v in stacked.items()}
    gopt = torch.optim.Adam([grouped[n] for n in learned], lr=1e-3)
    batched = vmap(error)

    def seq(idx):
        losses = []
        for j in range(k):
            loss = error(single[j], x_cl[j][idx[j]], t_cl[j][idx[j]])
            opts[j].zero_grad()
            loss.backward()
            opts[j].step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def vm(idx):
        x = torch.stack([xs[j][idx[j]] for j in range(k)])
        t = torch.stack([ts[j][idx[j]] for j in range(k)])
        losses = batched(stacked, x, t)
        sopt.zero_grad()
        losses.sum().backward()
        sopt.step()
        return losses.detach()

    def group(idx):
        x = torch.cat([xs[j][idx[j]] for j in range(k)], 1).contiguous(memory_format=cl)
        t = torch.cat([ts[j][idx[j]] for j in range(k)], 1).contiguous(memory_format=cl)
        diff = (block(grouped, x, groups=k) - t).pow(2).reshape(BATCH, k, c, hw, hw)
        losses = diff.sum(2).mean((0, 2, 3))
        gopt.zero_grad()
        losses.sum().backward()
        gopt.step()
        return losses.detach()

    ways = {"seq": seq, "vmap": vm, "group": group}
    first = torch.randint(N, (k, BATCH), generator=gen)
    losses = {name: f(first) for name, f in ways.items()}
    agree = max(float((losses[n] - losses["seq"]).abs().max() / losses["seq"].abs().max()) for n in ways)
    times = {name: [] for name in ways}
    for _ in range(REPS):
        for name, f in ways.items():
            draws = [torch.randint(N, (k, BATCH), generator=gen) for _ in range(STEPS)]
            t0 = time.perf_counter()
            for idx in draws:
                f(idx)
            times[name].append((time.perf_counter() - t0) / STEPS / k * 1e3)
    best = {name: min(v) for name, v in times.items()}
    print(f"{c:>3} ch {hw:>2}x{hw:<2} K={k}: ms per seed-step (best of {REPS}) "
          + ", ".join(f"{n} {best[n]:.2f}" for n in ways)
          + f"; seq/vmap {best['seq'] / best['vmap']:.2f}x, seq/group {best['seq'] / best['group']:.2f}x"
          + f"; first-step losses agree to {agree:.1e} (relative)", flush=True)


if __name__ == "__main__":
    ks = [int(a) for a in sys.argv[1:]] or [2, 4, 8]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, batch {BATCH}, {STEPS} steps x {REPS} reps")
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        for k in ks:
            measure(c, hw, k)
