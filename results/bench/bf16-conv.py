"""Two 3x3 convolutions with a ReLU between, forward and backward at batch 32 (the shapes of a
ResNet-20 unit in each stage), float32 against bfloat16 autocast, contiguous and channels-last,
one thread; milliseconds per step, the mean over the second of two interleaved rounds of 50 steps.
Run: .venv/bin/python results/bench/bf16-conv.py"""
import time

import torch

torch.set_num_threads(1)
for c, hw in [(16, 32), (32, 16), (64, 8)]:
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(32, c, hw, hw).contiguous(memory_format=fmt)
        w1 = torch.randn(c, c, 3, 3, requires_grad=True)
        w2 = torch.randn(c, c, 3, 3, requires_grad=True)

        def step(bf16: bool) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = torch.conv2d(torch.relu(torch.conv2d(x, w1, padding=1)), w2, padding=1)
                loss = (y.float() - x).pow(2).mean()
            loss.backward()

        ms = {}
        for bf16 in (False, True, False, True):
            for _ in range(5):
                step(bf16)
            t0 = time.perf_counter()
            for _ in range(50):
                step(bf16)
            ms["bfloat16" if bf16 else "float32"] = (time.perf_counter() - t0) / 50 * 1e3
        print(f"{c:3d} channels {hw:2d}x{hw:<2d} {'channels-last' if fmt is torch.channels_last else 'contiguous':13s}"
              f" float32 {ms['float32']:6.2f} ms  bfloat16 {ms['bfloat16']:6.2f} ms")
