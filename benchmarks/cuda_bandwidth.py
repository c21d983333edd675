"""Effective bandwidth of the CUDA ops next to a device-to-device copy, and
their speed against PyTorch eager (cuDNN BN + ReLU) and torch.compile.

    python benchmarks/cuda_bandwidth.py [--batch 256] [--dtypes bfloat16,float16,float32]
        [--compile-shapes 64x112,2048x7] [--json out.json]

For every ResNet-50 BN shape, dtype, layout (NHWC = channels_last, NCHW),
op and direction (forward; forward + backward):
  - median time over CUDA events, after warm-up, inputs rotated between two
    sets so that shapes under the L2 size are not timed from the cache;
  - GB/s over the minimal bytes (each activation read or written once,
    op_cases.minimal_bytes) and over the bytes our kernels move (their passes,
    KERNEL_PASSES), each also as a fraction of the copy bandwidth measured in
    the same run (bytes read + written);
  - the speed-up over eager PyTorch, and over torch.compile of the same eager
    code for --compile-shapes (compiling every case would take too long).
Speed is measured here, never asserted in the tests.
"""

import argparse
import json
import statistics
import sys

import torch
from op_cases import OPS, minimal_bytes, step_fn
from shapes import RESNET50_BN_SHAPES

import resnet_fast

# Passes over the activation that the CUDA kernels make (forward, backward):
# the training forward reads x once more for the statistics; the backward
# reads dy and x (and the residual) twice.
KERNEL_PASSES = {
    "batch_norm_relu": (3, 5),
    "batch_norm_add_relu": (4, 7),
    "add_relu": (3, 3),
}


def time_ms(fns, iters: int, warmup: int) -> float:
    """Median ms of one call, cycling through `fns` (one per input set)."""
    for i in range(warmup):
        fns[i % len(fns)]()
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fns[i % len(fns)]()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(gib: float = 2.0) -> float:
    """GB/s of a device-to-device copy, counting bytes read plus written."""
    n = int(gib * 2**30) // 4
    src, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    ms = time_ms([lambda: dst.copy_(src)], iters=30, warmup=5)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def _inputs(args, channels, size, dtype, channels_last, seed):
    """The tensors of op_cases.make_inputs, drawn on the GPU (fresh random
    values, never zeros: the CPU would take longer than the benchmark)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (args.batch, channels, size, size)

    def act():
        t = torch.randn(shape, generator=gen, device="cuda", dtype=dtype)
        return t.contiguous(memory_format=fmt)

    t = {"x": act().requires_grad_(), "other": act().requires_grad_(), "grad": act()}
    t["weight"] = (torch.rand(channels, generator=gen, device="cuda") + 0.5).requires_grad_()
    t["bias"] = torch.randn(channels, generator=gen, device="cuda").requires_grad_()
    t["running_mean"] = torch.zeros(channels, device="cuda")
    t["running_var"] = torch.ones(channels, device="cuda")
    return t


def measure(op, channels, size, dtype, channels_last, backward, args, copy_gbps):
    sets = [_inputs(args, channels, size, dtype, channels_last, s) for s in (0, 1)]
    row = {
        "op": op,
        "C": channels,
        "H": size,
        "N": args.batch,
        "dtype": str(dtype).replace("torch.", ""),
        "layout": "NHWC" if channels_last else "NCHW",
        "direction": "fwd+bwd" if backward else "fwd",
    }
    impls = {"fused": [step_fn(op, "fused", t, backward) for t in sets]}
    impls["eager"] = [step_fn(op, "eager", t, backward) for t in sets]
    if f"{channels}x{size}" in args.compile_shapes and op != "add_relu":
        compiled = []
        for t in sets:
            fwd = torch.compile(_eager_forward(op, t), fullgraph=True)
            compiled.append(_with_backward(fwd, t, backward))
        impls["compile"] = compiled
    for name, fns in impls.items():
        row[f"{name}_ms"] = time_ms(fns, args.iters, args.warmup)
    act = sets[0]["x"].numel() * sets[0]["x"].element_size()
    fwd_p, bwd_p = KERNEL_PASSES[op]
    kernel_bytes = act * (fwd_p + (bwd_p if backward else 0))
    ms = row["fused_ms"]
    row["GBps_minimal"] = minimal_bytes(op, sets[0], backward) / (ms * 1e-3) / 1e9
    row["GBps_kernel"] = kernel_bytes / (ms * 1e-3) / 1e9
    row["copy_frac_minimal"] = row["GBps_minimal"] / copy_gbps
    row["copy_frac_kernel"] = row["GBps_kernel"] / copy_gbps
    row["speedup_eager"] = row["eager_ms"] / ms
    if "compile_ms" in row:
        row["speedup_compile"] = row["compile_ms"] / ms
    return row


def _eager_forward(op, t):
    x, other, w, b, rm, rv = (t[k] for k in ("x", "other", "weight", "bias", "running_mean",
                                             "running_var"))  # fmt: skip
    F = torch.nn.functional
    if op == "batch_norm_relu":
        return lambda: F.relu(F.batch_norm(x, rm, rv, w, b, training=True))
    return lambda: F.relu(F.batch_norm(x, rm, rv, w, b, training=True) + other)


def _with_backward(fwd, t, backward):
    if not backward:
        return fwd
    leaves = [t[k] for k in ("x", "other", "weight", "bias")]

    def step():
        for leaf in leaves:
            leaf.grad = None
        fwd().backward(t["grad"])

    return step


def _line(r: dict) -> str:
    cells = [r["op"], r["C"], r["H"], r["dtype"], r["layout"], r["direction"]]
    cells += [f"{r['fused_ms']:.3f}", f"{r['GBps_minimal']:.0f}"]
    cells += [f"{100 * r['copy_frac_minimal']:.1f}", f"{r['GBps_kernel']:.0f}"]
    cells += [f"{100 * r['copy_frac_kernel']:.1f}", f"{r['speedup_eager']:.2f}"]
    cells.append(f"{r['speedup_compile']:.2f}" if "speedup_compile" in r else "-")
    return " | ".join(str(c) for c in cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtypes", default="bfloat16,float16,float32")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--compile-shapes", default="64x112,2048x7")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", help="write the rows and the copy bandwidth here")
    args = parser.parse_args()
    args.compile_shapes = set(filter(None, args.compile_shapes.split(",")))
    if not torch.cuda.is_available() or "cuda" not in resnet_fast.build_info()["backends"]:
        print("needs a CUDA device and the CUDA build of resnet_fast", file=sys.stderr)
        return 1

    copy_gbps = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: device copy {copy_gbps:.0f} GB/s (read + write)")
    head = "op C H dtype layout dir ms GB/s %copy kernelGB/s %copy x_eager x_compile"
    print(" | ".join(head.split()))
    rows = []
    for dtype in [getattr(torch, d) for d in args.dtypes.split(",")]:
        for channels_last in (True, False):
            for channels, size in RESNET50_BN_SHAPES:
                for op in args.ops.split(","):
                    for backward in (False, True):
                        r = measure(op, channels, size, dtype, channels_last, backward, args,
                                    copy_gbps)  # fmt: skip
                        rows.append(r)
                        print(_line(r), flush=True)
                        torch.cuda.empty_cache()
    if args.json:
        info = {
            "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "batch": args.batch,
            "copy_GBps": copy_gbps,
            "kernel_passes": KERNEL_PASSES,
            "rows": rows,
        }
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
