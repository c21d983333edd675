"""Inference 3x3 convolutions on the CPU, each alone: oneDNN's direct
convolution (folded weight prepacked, bias + residual + ReLU fused: the
eval-mode default) vs the Winograd F(4x4, 3x3) op (resnet_fast/conv/winograd.py)
vs the tap-by-tap op (resnet_fast/conv/taps.py), for every stride-1 3x3
convolution shape of a CIFAR ResNet-18 at batch 64 and of a ResNet-18 at the
given ImageNet-style configs; fp32, channels_last, with a residual add and
ReLU in the epilogue. Each row also gives each path's largest error against a
float64 convolution, relative to the largest output. (In a model the choice
is timed in the model: resnet_fast.tune.)

    python benchmarks/conv_algorithms.py [--configs 16x64] [--json FILE]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resnet_fast.conv import taps, winograd
from resnet_fast.harness.cli import conv_bench_parser
from resnet_fast.harness.environment import set_threads, steady_allocator
from resnet_fast.harness.report import write_benchmark_json
from resnet_fast.harness.timing import interleaved_ms, summarize

CPU = torch.device("cpu")
CL = torch.channels_last


def shapes(configs: str) -> list[tuple[str, int, int, int]]:
    """(model, batch, channels, side) of each stage's stride-1 3x3 convolution."""
    cifar = [("cifar_resnet18", 64, c, s) for c, s in ((64, 32), (128, 16), (256, 8), (512, 4))]
    imagenet = []
    for config in configs.split(",") if configs else []:
        batch, resolution = map(int, config.split("x"))
        side = resolution // 4  # after the stride-2 stem and max-pool
        for c in (64, 128, 256, 512):
            imagenet.append(("resnet18", batch, c, max(side, 1)))
            side //= 2
    return cifar + imagenet


def measure(batch: int, channels: int, side: int, rounds: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, side, side, generator=gen).contiguous(memory_format=CL)
    r = torch.randn(batch, channels, side, side, generator=gen).contiguous(memory_format=CL)
    w = torch.randn(channels, channels, 3, 3, generator=gen) * (2 / (9 * channels)) ** 0.5
    b = torch.randn(channels, generator=gen) * 0.1
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
        w.contiguous().to_mkldnn(), [1, 1], [1, 1], [1, 1], 1, list(x.shape)
    )
    tiles = winograd.weight_tiles(w)
    by_tap = taps.weight_taps(w)
    geometry = ([1, 1], [1, 1], [1, 1], 1)

    def onednn():
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, r, packed, b, *geometry, "add", 1.0, "relu", [], ""
        )

    def by_winograd():
        return winograd.conv3x3(x, tiles, b, r, True)

    def tap_by_tap():
        return taps.conv(x, by_tap, b, r, True)

    with torch.no_grad():
        exact = F.relu(F.conv2d(x.double(), w.double(), b.double(), padding=1) + r.double())
        scale = exact.abs().max()
        errors = {
            name: ((fn().double() - exact).abs().max() / scale).item()
            for name, fn in (("onednn", onednn), ("winograd", by_winograd), ("taps", tap_by_tap))
        }
        fns = {"onednn": onednn, "winograd": by_winograd, "taps": tap_by_tap}
        times = {
            k: summarize(v)["median_ms"] for k, v in interleaved_ms(fns, CPU, rounds, 3).items()
        }
    return {
        "input": [batch, channels, side, side],
        **{f"{k}_ms": v for k, v in times.items()},
        "speedup_of_winograd": times["onednn"] / times["winograd"],
        "speedup_of_taps": times["onednn"] / times["taps"],
        **{f"{k}_max_rel_error": v for k, v in errors.items()},
    }


def main() -> None:
    parser = conv_bench_parser(
        __doc__.splitlines()[0], "ResNet-18 BATCHxRESOLUTION, comma-separated"
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    print(f"{threads} threads, allocator: {steady_allocator()}")
    print(
        f"{'model':>15} {'input':>20} | {'oneDNN ms':>9} {'Winograd ms':>11} {'speed-up':>8} "
        f"{'taps ms':>8} {'speed-up':>8} | {'oneDNN err':>10} {'Winograd err':>12} {'taps err':>9}"
    )
    rows = []
    for model, batch, channels, side in shapes(args.configs):
        row = {"model": model, **measure(batch, channels, side, args.rounds)}
        rows.append(row)
        print(
            f"{model:>15} {str(tuple(row['input'])):>20} | {row['onednn_ms']:9.3f} "
            f"{row['winograd_ms']:11.3f} {row['speedup_of_winograd']:7.2f}x "
            f"{row['taps_ms']:8.3f} {row['speedup_of_taps']:7.2f}x | "
            f"{row['onednn_max_rel_error']:10.1e} {row['winograd_max_rel_error']:12.1e} "
            f"{row['taps_max_rel_error']:9.1e}"
        )
    if args.json:
        command = (
            f"python benchmarks/conv_algorithms.py --configs {args.configs} --rounds {args.rounds}"
        )
        print(f"wrote {write_benchmark_json(args.json, 'conv_algorithms', command, rows, CPU)}")


if __name__ == "__main__":
    main()
