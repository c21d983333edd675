"""Training convolutions on the CPU: oneDNN (what F.conv2d and eager's
backward run) vs the matrix-product path of resnet_fast/conv/gemm.py, for
every distinct convolution of ResNet-50 at the given batch sizes and
resolutions, forward and backward (grad_input + grad_weight), fp32,
channels_last. The lean blocks make this comparison themselves at first use
of each shape (training.conv_path, a shorter measurement, which may also
pick Winograd for a 3x3 stride-1 convolution: benchmarks/conv_algorithms.py); the table shows
what that measurement picks next to which one this longer one found faster.

    python benchmarks/gemm_conv.py [--configs 16x64,64x64,4x224] [--json FILE]
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_fast.conv import training
from resnet_fast.conv.spec import ConvSpec
from resnet_fast.harness.cli import conv_bench_parser
from resnet_fast.harness.environment import set_threads, steady_allocator
from resnet_fast.harness.report import write_benchmark_json
from resnet_fast.harness.timing import interleaved_ms, summarize
from resnet_fast.models.plain import plain_model

_aten = torch.ops.aten
CPU = torch.device("cpu")


def resnet50_convs(batch: int, resolution: int) -> list[tuple[tuple, nn.Conv2d]]:
    """(input shape, conv) of each distinct convolution of ResNet-50."""
    model = plain_model("resnet50")
    seen: dict[tuple, nn.Conv2d] = {}

    def hook(conv, args, _output):
        key = (tuple(args[0].shape), tuple(conv.weight.shape), conv.stride, conv.padding)
        seen.setdefault(key, conv)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(batch, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return [(key[0], conv) for key, conv in seen.items()]


def measure(shape: tuple, conv: nn.Conv2d, rounds: int) -> dict:
    cl = torch.channels_last
    x = torch.randn(shape).contiguous(memory_format=cl)
    w = torch.randn_like(conv.weight).contiguous(memory_format=cl)
    spec = ConvSpec(conv.stride, conv.padding, conv.dilation, conv.groups)
    out = torch.nn.functional.conv2d(x, w, None, *spec)
    g = torch.randn_like(out)
    mask = [True, True, False]

    def onednn_backward():
        return _aten.convolution_backward(
            g, x, w, None, spec.stride, spec.padding, spec.dilation, False, [0, 0], 1, mask
        )

    fns = {
        "onednn_fwd": lambda: torch.nn.functional.conv2d(x, w, None, *spec),
        "gemm_fwd": lambda: gemm.forward(x, w, None, spec),
        "onednn_bwd": onednn_backward,
        "gemm_bwd": lambda: gemm.backward(g, x, w, spec, mask),
    }
    times = {k: summarize(v)["median_ms"] for k, v in interleaved_ms(fns, CPU, rounds, 3).items()}
    onednn = times["onednn_fwd"] + times["onednn_bwd"]
    gemm = times["gemm_fwd"] + times["gemm_bwd"]
    return {
        "input": list(shape),
        "weight": list(w.shape),
        "stride": list(spec.stride),
        "pixels": out.shape[0] * out.shape[2] * out.shape[3],
        **{f"{k}_ms": v for k, v in times.items()},
        "use_gemm_picks": "gemm" if training.conv_path(x, w, spec) == "gemm" else "onednn",
        "faster": "gemm" if gemm < onednn else "onednn",
        "fwd_bwd_speedup_of_gemm": onednn / gemm,
    }


def main() -> None:
    parser = conv_bench_parser(
        __doc__.splitlines()[0], "comma-separated BATCHxRESOLUTION, e.g. 16x64,4x224"
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    allocator = steady_allocator()
    print(f"{threads} threads, allocator: {allocator}")
    rows = []
    header = (
        f"{'input':>20} {'weight':>20} s | {'oneDNN fwd':>10} {'GEMM fwd':>9} | "
        f"{'oneDNN bwd':>10} {'GEMM bwd':>9} | picked  faster"
    )
    for config in args.configs.split(","):
        batch, resolution = map(int, config.split("x"))
        print(f"\nbatch {batch}, {resolution}x{resolution}\n{header}")
        for shape, conv in resnet50_convs(batch, resolution):
            row = measure(shape, conv, args.rounds)
            row.update(batch=batch, resolution=resolution)
            rows.append(row)
            mark = "" if row["use_gemm_picks"] == row["faster"] else "  <- picked the slower"
            print(
                f"{str(tuple(shape)):>20} {str(tuple(row['weight'])):>20} {conv.stride[0]} | "
                f"{row['onednn_fwd_ms']:10.3f} {row['gemm_fwd_ms']:9.3f} | "
                f"{row['onednn_bwd_ms']:10.3f} {row['gemm_bwd_ms']:9.3f} | "
                f"{row['use_gemm_picks']:7} {row['faster']}{mark}"
            )
    misses = [r for r in rows if r["use_gemm_picks"] != r["faster"]]
    hits = len(rows) - len(misses)
    print(f"\nconv_path picked the faster path for {hits} of {len(rows)} convolutions")
    if args.json:
        command = f"python benchmarks/gemm_conv.py --configs {args.configs} --rounds {args.rounds}"
        print(f"wrote {write_benchmark_json(args.json, 'gemm_conv', command, rows, CPU)}")


if __name__ == "__main__":
    main()
