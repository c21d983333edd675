"""Eval-mode conv + folded BN epilogue on the CPU: oneDNN's convolution with
fused post-ops (bias + ReLU, bias + add + ReLU) vs the convolution followed by
a separate ReLU / the fused add_relu kernel, and vs eager PyTorch. This is
the measurement behind resnet_fast.functional.conv_bn_relu's CPU eval path.

    python benchmarks/conv_epilogue.py [--batch 16] [--json FILE]
"""

import argparse

import torch
import torch.nn.functional as F

import resnet_fast.functional as RF
from resnet_fast.harness.report import dump_json_if_asked
from resnet_fast.harness.timing import time_ms

# (C_in, C_out, H, kernel): ResNet-50 convolutions (stride 1).
CONVS = [(64, 64, 56, 3), (256, 64, 56, 1), (64, 256, 56, 1), (128, 128, 28, 3),
         (512, 128, 28, 1), (256, 256, 14, 3), (1024, 256, 14, 1), (512, 2048, 7, 1)]  # fmt: skip


def best_ms(fn, rounds=15):
    return time_ms(fn, rounds, warmup=3)[0]


def measure(batch, cin, cout, h, k):
    cl = torch.channels_last
    x = torch.randn(batch, cin, h, h).contiguous(memory_format=cl)
    w = torch.randn(cout, cin, k, k).contiguous(memory_format=cl)
    b = torch.randn(cout)
    r = torch.randn(batch, cout, h, h).contiguous(memory_format=cl)
    pad, ones = [k // 2] * 2, [1, 1]
    pointwise = torch.ops.mkldnn._convolution_pointwise

    def conv():
        return F.conv2d(x, w, b, 1, k // 2)

    return {
        "C_in": cin,
        "C_out": cout,
        "H": h,
        "k": k,
        "relu_separate_ms": best_ms(lambda: torch.relu_(conv())),
        "relu_postop_ms": best_ms(lambda: pointwise(x, w, b, pad, ones, ones, 1, "relu", [], "")),
        "add_relu_eager_ms": best_ms(lambda: torch.relu_(conv() + r)),
        "add_relu_fused_kernel_ms": best_ms(lambda: RF.add_relu(conv(), r)),
        "add_relu_postop_ms": best_ms(
            lambda: pointwise.binary(x, r, w, b, pad, ones, ones, 1, "add", 1.0, "relu", [], "")
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    print(f"{'conv':>18} | {'relu: sep':>9} {'post-op':>8} | {'add+relu: eager':>15} "
          f"{'add_relu':>9} {'post-op':>8}")  # fmt: skip
    with torch.no_grad():
        for cin, cout, h, k in CONVS:
            row = measure(args.batch, cin, cout, h, k)
            rows.append(row)
            print(
                f"{cin:5d}->{cout:5d} {h:3d} k{k} | {row['relu_separate_ms']:9.2f} "
                f"{row['relu_postop_ms']:8.2f} | {row['add_relu_eager_ms']:15.2f} "
                f"{row['add_relu_fused_kernel_ms']:9.2f} {row['add_relu_postop_ms']:8.2f}"
            )
    dump_json_if_asked(args.json, {"batch": args.batch, "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    main()
