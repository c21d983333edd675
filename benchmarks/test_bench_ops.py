"""pytest-benchmark: each fused op vs the eager PyTorch sequence it replaces,
forward and forward+backward, training mode, at the ResNet-50 BatchNorm
shapes, batch 16, in fp32 and bf16, channels_last and NCHW, on the CPU and
(when there is one) the GPU.

    pytest benchmarks/test_bench_ops.py --benchmark-group-by=group \
        --benchmark-json=ops.json

Each benchmark's group is "op pass shape dtype layout device", so fused and
eager land side by side; ``extra_info`` holds the device, the minimal bytes
moved and the effective GB/s of the median.
"""

import pytest
import torch

from resnet_fast.harness.op_cases import (
    OPS,
    RESNET50_BN_SHAPES,
    make_inputs,
    minimal_bytes,
    step_fn,
)
from resnet_fast.harness.timing import synchronize

BATCH = 16
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def record_bandwidth(benchmark, device: str, nbytes: int) -> None:
    benchmark.extra_info["device"] = (
        torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}"
    )
    benchmark.extra_info["min_bytes"] = nbytes
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GBps"] = nbytes / benchmark.stats.stats.median / 1e9


def synchronized(fn, device: str):
    """fn followed by a device synchronize, so the wall clock sees GPU time."""
    dev = torch.device(device)

    def run():
        fn()
        synchronize(dev)

    return run


@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", RESNET50_BN_SHAPES, ids=lambda s: f"C{s[0]}xH{s[1]}")
@pytest.mark.parametrize("op", OPS)
def test_op(benchmark, op, shape, backward, dtype, layout, device, impl):
    channels, size = shape
    t = make_inputs(
        op, BATCH, channels, size, getattr(torch, dtype), layout == "channels_last", device
    )
    benchmark.group = (
        f"{op} {'fwd+bwd' if backward else 'fwd'} C{channels}xH{size} {dtype} {layout} {device}"
    )
    benchmark.pedantic(
        synchronized(step_fn(op, impl, t, backward), device), rounds=10, warmup_rounds=2
    )
    record_bandwidth(benchmark, device, minimal_bytes(op, t, backward))
