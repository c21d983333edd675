"""Triton backend on a GPU: the implicit-GEMM convolution with
fused epilogues against cuDNN and torch.compile, and the fused BN kernels'
effective bandwidth next to the CUDA kernels'. Needs a CUDA GPU; writes JSON.

    python benchmarks/triton_gpu.py [--batch 256] [--dtype bfloat16]
        [--json benchmarks/results/triton_<gpu>.json] [--skip-compile]

Convolutions (ResNet-50 at 224x224, NHWC):
  training:  triton conv + BN-statistics epilogue (resnet_fast_triton.conv2d_stats)
             vs cuDNN conv followed by a separate statistics pass
             (torch.batch_norm_stats, the kernel F.batch_norm uses)
  inference: triton conv + bias + ReLU epilogue (resnet_fast_triton.conv2d)
             vs eager cuDNN conv(bias) + relu_ and vs
             torch.compile(mode="max-autotune") of the same
Fused BN: bn_relu / bn_add_relu training forward + backward, GB/s of the
minimal traffic, triton vs the CUDA kernels (when built) vs a device copy.
Times are medians of triton.testing.do_bench (ms), after autotuning.
"""

import argparse
import json
import platform

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

import resnet_fast
import resnet_fast.functional as RF
import resnet_fast.triton.backend  # noqa: F401  (registers torch.ops.resnet_fast_triton)

ops = torch.ops.resnet_fast
triton_ops = torch.ops.resnet_fast_triton

# (name, C_in, C_out, H_in, kernel, stride, padding): every distinct
# ResNet-50 convolution (torchvision v1.5: stride on the 3x3).
RESNET50_CONVS = [
    ("stem 7x7/2", 3, 64, 224, 7, 2, 3),
    ("l1 1x1 64->64", 64, 64, 56, 1, 1, 0),
    ("l1 3x3 64", 64, 64, 56, 3, 1, 1),
    ("l1 1x1 64->256", 64, 256, 56, 1, 1, 0),
    ("l1 1x1 256->64", 256, 64, 56, 1, 1, 0),
    ("l2 1x1 256->128", 256, 128, 56, 1, 1, 0),
    ("l2 3x3/2 128", 128, 128, 56, 3, 2, 1),
    ("l2 down 1x1/2 256->512", 256, 512, 56, 1, 2, 0),
    ("l2 3x3 128", 128, 128, 28, 3, 1, 1),
    ("l2 1x1 128->512", 128, 512, 28, 1, 1, 0),
    ("l2 1x1 512->128", 512, 128, 28, 1, 1, 0),
    ("l3 1x1 512->256", 512, 256, 28, 1, 1, 0),
    ("l3 3x3/2 256", 256, 256, 28, 3, 2, 1),
    ("l3 down 1x1/2 512->1024", 512, 1024, 28, 1, 2, 0),
    ("l3 3x3 256", 256, 256, 14, 3, 1, 1),
    ("l3 1x1 256->1024", 256, 1024, 14, 1, 1, 0),
    ("l3 1x1 1024->256", 1024, 256, 14, 1, 1, 0),
    ("l4 1x1 1024->512", 1024, 512, 14, 1, 1, 0),
    ("l4 3x3/2 512", 512, 512, 14, 3, 2, 1),
    ("l4 down 1x1/2 1024->2048", 1024, 2048, 14, 1, 2, 0),
    ("l4 3x3 512", 512, 512, 7, 3, 1, 1),
    ("l4 1x1 512->2048", 512, 2048, 7, 1, 1, 0),
    ("l4 1x1 2048->512", 2048, 512, 7, 1, 1, 0),
]
BN_SHAPES = [(64, 112), (256, 56), (512, 28), (1024, 14), (2048, 7)]


def _ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_conv(batch, dtype, name, cin, cout, h, k, stride, pad, compile_too):
    cl = torch.channels_last
    x = torch.randn(batch, cin, h, h, device="cuda", dtype=dtype).contiguous(memory_format=cl)
    w = (
        torch.randn(cout, cin, k, k, device="cuda", dtype=dtype) * (cin * k * k) ** -0.5
    ).contiguous(memory_format=cl)
    b = torch.randn(cout, device="cuda", dtype=dtype)
    geometry = ([stride] * 2, [pad] * 2, [1, 1], 1)
    h_out = (h + 2 * pad - k) // stride + 1
    flops = 2 * batch * h_out * h_out * cout * cin * k * k
    row = {"name": name, "C_in": cin, "C_out": cout, "H": h, "k": k, "stride": stride}

    row["train_triton_conv_stats_ms"] = _ms(lambda: triton_ops.conv2d_stats(x, w, None, *geometry))
    row["train_cudnn_conv_ms"] = _ms(lambda: F.conv2d(x, w, None, stride, pad))

    def cudnn_then_stats():
        y = F.conv2d(x, w, None, stride, pad)
        return torch.batch_norm_stats(y, 1e-5)

    row["train_cudnn_conv_then_stats_ms"] = _ms(cudnn_then_stats)
    row["infer_triton_conv_bias_relu_ms"] = _ms(
        lambda: triton_ops.conv2d(x, w, b, None, *geometry, True)
    )
    row["infer_cudnn_conv_bias_relu_ms"] = _ms(lambda: F.conv2d(x, w, b, stride, pad).relu_())
    if compile_too:
        compiled = torch.compile(
            lambda x, w, b: F.conv2d(x, w, b, stride, pad).relu(), mode="max-autotune"
        )
        compiled(x, w, b)
        row["infer_compile_max_autotune_ms"] = _ms(lambda: compiled(x, w, b))
    row["triton_conv_stats_tflops"] = flops / row["train_triton_conv_stats_ms"] / 1e9
    row["train_speedup_vs_cudnn_plus_stats"] = (
        row["train_cudnn_conv_then_stats_ms"] / row["train_triton_conv_stats_ms"]
    )
    if compile_too:
        row["infer_speedup_vs_max_autotune"] = (
            row["infer_compile_max_autotune_ms"] / row["infer_triton_conv_bias_relu_ms"]
        )
    return row


def bench_bn(batch, dtype, c, h):
    """Training bn_add_relu forward + backward; minimal traffic: forward reads
    x twice (stats, apply) and the residual, writes out; backward reads dy and
    x twice, writes dx and d_residual."""
    cl = torch.channels_last
    x = torch.randn(batch, c, h, h, device="cuda", dtype=dtype).contiguous(memory_format=cl)
    r = torch.randn_like(x)
    dy = torch.randn_like(x)
    wgt = torch.ones(c, device="cuda", requires_grad=True)
    bias = torch.zeros(c, device="cuda", requires_grad=True)
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    elem = x.numel() * x.element_size()
    row = {"C": c, "H": h, "fwd_bytes": 4 * elem, "fwd_bwd_bytes": 4 * elem + 6 * elem}
    copy_ms = _ms(lambda: x.clone())
    row["copy_GBps"] = 2 * elem / copy_ms / 1e6
    backends = ["triton"] + (["cuda"] if "cuda" in resnet_fast.build_info()["backends"] else [])
    for backend in backends:
        xg, rg = x.detach().requires_grad_(), r.detach().requires_grad_()

        def fwd(xg=xg, rg=rg):
            return RF.batch_norm_add_relu(xg, rg, rm, rv, wgt, bias, training=True)

        def fwd_bwd(fwd=fwd):
            fwd().backward(dy)

        with resnet_fast.use_backend(backend):
            fwd_ms, both_ms = _ms(fwd), _ms(fwd_bwd)
        row[f"{backend}_fwd_ms"] = fwd_ms
        row[f"{backend}_fwd_GBps"] = row["fwd_bytes"] / fwd_ms / 1e6
        row[f"{backend}_fwd_bwd_ms"] = both_ms
        row[f"{backend}_fwd_bwd_GBps"] = row["fwd_bwd_bytes"] / both_ms / 1e6
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--only", default=None, help="run the convolutions whose name has this")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    gpu = torch.cuda.get_device_name()
    result = {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "batch": args.batch,
        "dtype": args.dtype,
        "convs": [],
        "bn": [],
    }
    for spec in RESNET50_CONVS:
        if args.only and args.only not in spec[0]:
            continue
        row = bench_conv(args.batch, dtype, *spec, compile_too=not args.skip_compile)
        result["convs"].append(row)
        print(
            f"{row['name']:>26}: train {row['train_triton_conv_stats_ms']:.3f} ms vs "
            f"cuDNN+stats {row['train_cudnn_conv_then_stats_ms']:.3f} | infer "
            f"{row['infer_triton_conv_bias_relu_ms']:.3f} vs cuDNN "
            f"{row['infer_cudnn_conv_bias_relu_ms']:.3f}"
            + (
                f" vs max-autotune {row['infer_compile_max_autotune_ms']:.3f}"
                if not args.skip_compile
                else ""
            ),
            flush=True,
        )
    bn_batch = min(args.batch, 64)
    for c, h in BN_SHAPES:
        row = bench_bn(bn_batch, dtype, c, h)
        result["bn"].append(row)
        print(
            f"BN C={c} H={h}: " + ", ".join(f"{k}={v:.1f}" for k, v in row.items() if "GBps" in k)
        )
    result["bn_batch"] = bn_batch
    path = args.json or f"benchmarks/results/triton_{gpu.replace(' ', '_')}.json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
