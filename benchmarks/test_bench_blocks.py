"""pytest-benchmark: resnet_fast's BasicBlock / Bottleneck vs the same blocks
in plain PyTorch (resnet_fast.models.plain), at the shapes of ResNet-18 /
ResNet-50's identity blocks, batch 16: training (forward+backward) and eval
(forward), fp32 and bf16 autocast, channels_last, on the CPU and the GPU if
there is one.

    pytest benchmarks/test_bench_blocks.py --benchmark-group-by=group \
        --benchmark-json=blocks.json

Blocks are bound by their convolutions, so no GB/s is recorded; ``extra_info``
holds the device and the shape.
"""

import contextlib

import pytest
import torch

from resnet_fast import nn as fast_nn
from resnet_fast.harness.timing import synchronize
from resnet_fast.models import plain

BATCH = 16
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (block, inplanes, planes, H): the identity blocks of each stage.
BLOCK_SHAPES = [
    ("BasicBlock", 64, 64, 56),
    ("BasicBlock", 256, 256, 14),
    ("Bottleneck", 256, 64, 56),
    ("Bottleneck", 1024, 256, 14),
    ("Bottleneck", 2048, 512, 7),
]


def make_block(impl, kind, inplanes, planes, device):
    torch.manual_seed(0)
    module = getattr(fast_nn if impl == "fused" else plain, kind)(inplanes, planes)
    return module.to(device, memory_format=torch.channels_last)


@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", BLOCK_SHAPES, ids=lambda s: f"{s[0]}-C{s[1]}xH{s[3]}")
def test_block(benchmark, shape, mode, dtype, device, impl):
    kind, inplanes, planes, size = shape
    block = make_block(impl, kind, inplanes, planes, device).train(mode == "train")
    x = torch.randn(BATCH, inplanes, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(mode == "train")
    precision = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    dev = torch.device(device)

    def step():
        if mode == "train":
            x.grad = None
            block.zero_grad(set_to_none=True)
            with precision:
                out = block(x)
            out.backward(torch.ones_like(out))
        else:
            with torch.no_grad(), precision:
                block(x)
        synchronize(dev)

    benchmark.group = f"{kind} C{inplanes}xH{size} {mode} {dtype} {device}"
    benchmark.extra_info["device"] = (
        torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}"
    )
    benchmark.extra_info["shape"] = [BATCH, inplanes, size, size]
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
