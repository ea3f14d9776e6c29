"""FBGEMM's int8 convolutions with per-channel weight zero points against exact integer
arithmetic (float64 convolution of the dequantized values, rounded to the output grid): ordinary
convolutions on full-range uint8 activations, and depthwise ones with activations in 0..255 and in
0..127. Prints, per case, the largest difference in output levels and how many outputs differ.
Run: .venv/bin/python results/bench/fbgemm-zero-points.py"""
import warnings

import torch

warnings.filterwarnings("ignore")  # quantized tensor types are deprecated
torch.backends.quantized.engine = "fbgemm"
torch.manual_seed(0)


def case(groups, cin, cout, k, stride, xmax, zw_kind):
    x = torch.randint(0, xmax, (2, cin, 14, 14)).float()
    sx, zx, so, zo = 0.05, 7, 0.5, 100
    xq = torch._make_per_tensor_quantized_tensor(x.to(torch.uint8), sx, zx)
    wq = torch.randint(0, 256, (cout, cin // groups, k, k))  # 8-bit asymmetric levels
    zw = torch.randint(0, 256, (cout,)) if zw_kind == "random" else torch.full((cout,), 128)
    sw = torch.rand(cout) * 0.01 + 0.001
    w = torch._make_per_channel_quantized_tensor((wq - 128).to(torch.int8), sw.double(), zw - 128, 0)
    bias = torch.randn(cout)
    packed = torch.ops.quantized.conv2d_prepack(w, bias, [stride] * 2, [k // 2] * 2, [1, 1], groups)
    y = torch.ops.quantized.conv2d(xq, packed, so, zo).int_repr().double()
    exact = torch.nn.functional.conv2d((x - zx).double() * sx, (wq - zw.view(-1, 1, 1, 1)).double()
                                       * sw.double().view(-1, 1, 1, 1), bias.double(), stride, k // 2, 1, groups)
    ref = (exact / so).round().add(zo).clamp(0, 255)
    return int((y - ref).abs().max()), int((y != ref).sum()), ref.numel()


print("kind        k stride activations weight_zp  max_levels_off differing/outputs")
for groups, cin, cout, k in [(1, 32, 64, 1), (1, 16, 32, 3)]:
    off, n, total = case(groups, cin, cout, k, 1, 256, "random")
    print(f"ordinary    {k} 1      0..255      random     {off:14d} {n}/{total}")
for xmax in (256, 128):
    for zw in ("random", "128"):
        for k in (3, 5):
            for stride in (1, 2):
                off, n, total = case(64, 64, 64, k, stride, xmax, zw)
                print(f"depthwise   {k} {stride}      0..{xmax - 1:<8d} {zw:10s} {off:14d} {n}/{total}")
