"""Fused op vs eager PyTorch, side by side in one process: the speed-up of
each op, training mode, at the ResNet-50 BN shapes.

    python benchmarks/op_ratios.py [--batch 16] [--nchw] [--dtype float32]
        [--json benchmarks/results/cpu_op_ratios.json]

Timings interleave the two implementations round by round and keep each one's
minimum and median over --rounds, so a slow phase of the machine hits both.
"""

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch
from op_cases import OPS, make_inputs, minimal_bytes, step_fn
from shapes import RESNET50_BN_SHAPES

import resnet_fast


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(op, channels, size, args, backward):
    t = make_inputs(op, args.batch, channels, size, getattr(torch, args.dtype), not args.nchw)
    fused, eager = step_fn(op, "fused", t, backward), step_fn(op, "eager", t, backward)
    for _ in range(args.warmup):
        fused(), eager()
    samples = {"fused": [], "eager": []}
    for _ in range(args.rounds):
        samples["fused"].append(_time(fused))
        samples["eager"].append(_time(eager))
    row = {"op": op, "C": channels, "H": size, "backward": backward}
    for impl, times in samples.items():
        row[f"{impl}_min_ms"] = min(times) * 1e3
        row[f"{impl}_median_ms"] = statistics.median(times) * 1e3
    row["speedup_min"] = row["eager_min_ms"] / row["fused_min_ms"]
    row["speedup_median"] = row["eager_median_ms"] / row["fused_median_ms"]
    row["fused_GBps"] = minimal_bytes(op, t, backward) / (row["fused_min_ms"] * 1e-3) / 1e9
    return row


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    info = resnet_fast.build_info()
    print(
        f"resnet_fast {resnet_fast.__version__} | torch {torch.__version__} | CPU kernels: "
        f"{info['cpu_capability']} (compiled: {info['cpu_capabilities_compiled']}) | "
        f"threads {torch.get_num_threads()} | batch {args.batch} {args.dtype} "
        f"{'NCHW' if args.nchw else 'channels_last'}"
    )
    print(
        f"{'op':22} {'C':>5} {'H':>4} {'pass':8} {'fused ms':>9} {'eager ms':>9} "
        f"{'x min':>6} {'x med':>6} {'GB/s':>6}"
    )
    rows = []
    for op in args.ops.split(","):
        for backward in [False] if args.forward_only else [False, True]:
            for channels, size in RESNET50_BN_SHAPES:
                row = measure(op, channels, size, args, backward)
                rows.append(row)
                print(
                    f"{op:22} {channels:5d} {size:4d} {'fwd+bwd' if backward else 'fwd':8} "
                    f"{row['fused_min_ms']:9.3f} {row['eager_min_ms']:9.3f} "
                    f"{row['speedup_min']:6.2f} {row['speedup_median']:6.2f} "
                    f"{row['fused_GBps']:6.1f}"
                )
    summary = {}
    for op in args.ops.split(","):
        for backward in [False] if args.forward_only else [False, True]:
            sel = [r for r in rows if r["op"] == op and r["backward"] == backward]
            geo = statistics.geometric_mean([r["speedup_min"] for r in sel])
            total = sum(r["eager_min_ms"] for r in sel) / sum(r["fused_min_ms"] for r in sel)
            key = f"{op} {'fwd+bwd' if backward else 'fwd'}"
            summary[key] = {"geomean_speedup": geo, "total_time_speedup": total}
            print(f"{key:32} geomean x{geo:.2f}  total-time x{total:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__,
                    "commit": _commit(),
                    "build_info": info,
                    "threads": torch.get_num_threads(),
                    "settings": vars(args),
                    "rows": rows,
                    "summary": summary,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
