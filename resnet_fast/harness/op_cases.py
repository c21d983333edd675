"""The fused ops and the eager PyTorch sequences they replace, as zero-argument
callables that run one forward (optionally forward+backward) step, and the
shapes they are measured at. Shared by ``resnet-fast ops`` and the
pytest-benchmark files under benchmarks/."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import functional as RF

OPS = ("batch_norm_relu", "batch_norm_add_relu", "add_relu")

# Each (C, H=W) that a ResNet-50 BatchNorm sees at 224x224 input.
RESNET50_BN_SHAPES = [
    (64, 112),  # stem
    (64, 56),
    (256, 56),
    (128, 28),
    (512, 28),
    (256, 14),
    (1024, 14),
    (512, 7),
    (2048, 7),
]


def make_inputs(
    op: str,
    batch: int,
    channels: int,
    size: int,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Fresh random activations (never zeros) and float32 BN parameters.

    Returns:
        "x", "other" (the residual), "grad" ([batch, channels, size, size] in
        ``dtype``), "weight", "bias", "running_mean", "running_var" ([channels]).
    """
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def act() -> torch.Tensor:
        t = torch.randn(batch, channels, size, size, generator=gen).to(device, dtype)
        return t.contiguous(memory_format=fmt).requires_grad_()

    inputs = {"x": act(), "other": act(), "grad": act().detach()}
    inputs["weight"] = (torch.rand(channels, generator=gen) + 0.5).to(device).requires_grad_()
    inputs["bias"] = torch.randn(channels, generator=gen).to(device).requires_grad_()
    inputs["running_mean"] = torch.zeros(channels, device=device)
    inputs["running_var"] = torch.ones(channels, device=device)
    return inputs


def forward_fn(op: str, impl: str, t: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A zero-argument callable computing ``op`` with ``impl`` ("fused" or
    "eager"), training mode."""
    x, other, w, b = t["x"], t["other"], t["weight"], t["bias"]
    rm, rv = t["running_mean"], t["running_var"]
    if op == "batch_norm_relu":
        if impl == "fused":
            return lambda: RF.batch_norm_relu(x, rm, rv, w, b, training=True)
        return lambda: F.relu(F.batch_norm(x, rm, rv, w, b, training=True))
    if op == "batch_norm_add_relu":
        if impl == "fused":
            return lambda: RF.batch_norm_add_relu(x, other, rm, rv, w, b, training=True)
        return lambda: F.relu(F.batch_norm(x, rm, rv, w, b, training=True) + other)
    if op == "add_relu":
        if impl == "fused":
            return lambda: RF.add_relu(x, other)
        return lambda: F.relu(x + other)
    raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")


def step_fn(op: str, impl: str, t: dict[str, torch.Tensor], backward: bool) -> Callable[[], None]:
    """One forward (and, with ``backward``, backward) step of ``op``."""
    fwd = forward_fn(op, impl, t)
    if not backward:
        return lambda: fwd()
    grad = t["grad"]
    leaves = [t[k] for k in ("x", "other", "weight", "bias")]

    def step() -> None:
        for leaf in leaves:  # a fresh .grad each step, as after optimizer.zero_grad()
            leaf.grad = None
        fwd().backward(grad)

    return step


def minimal_bytes(op: str, t: dict[str, torch.Tensor], backward: bool) -> int:
    """Bytes the op must move at the least: each activation read or written
    once (per-channel vectors neglected). Effective GB/s = this / time."""
    act = t["x"].numel() * t["x"].element_size()
    passes = {  # forward, backward
        "batch_norm_relu": (2, 3),  # x -> y ; dy, x -> dx
        "batch_norm_add_relu": (3, 5),  # x, r -> y ; dy, x, r -> dx, dr
        "add_relu": (3, 3),  # a, b -> y ; dy, y -> g
    }[op]
    return act * (passes[0] + (passes[1] if backward else 0))
