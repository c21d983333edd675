"""pytest-benchmark: each fused op vs the eager PyTorch sequence it replaces,
forward and forward+backward, training mode, ResNet-50 BN shapes at batch 16,
fp32, NCHW and channels_last.

    pytest benchmarks/test_bench_ops.py --benchmark-group-by=param:shape,param:op
"""

import pytest
import torch
from op_cases import OPS, make_inputs, minimal_bytes, step_fn
from shapes import RESNET50_BN_SHAPES

import resnet_fast

BATCH = 16


@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("shape", RESNET50_BN_SHAPES, ids=lambda s: f"C{s[0]}xH{s[1]}")
@pytest.mark.parametrize("op", OPS)
def test_op(benchmark, op, shape, channels_last, backward, impl):
    channels, size = shape
    t = make_inputs(op, BATCH, channels, size, torch.float32, channels_last)
    benchmark.extra_info["cpu_capability"] = resnet_fast.build_info()["cpu_capability"]
    benchmark.extra_info["min_bytes"] = minimal_bytes(op, t, backward)
    benchmark.pedantic(step_fn(op, impl, t, backward), rounds=10, warmup_rounds=2)
