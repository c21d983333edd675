"""Input builders and comparisons for the op tests."""

import os
import subprocess
import sys

import torch
from torch import Tensor

LAYOUTS = ["contiguous", "channels_last", "channel_slice", "channels_last_slice", "spatial_crop"]

# ResNet-50 layer shapes at batch 2, then the odd ones: C not a power of two,
# H*W = 1.
SHAPES = [
    (2, 64, 56, 56),
    (2, 512, 28, 28),
    (2, 1024, 14, 14),
    (2, 2048, 7, 7),
    (3, 67, 5, 7),
    (6, 48, 1, 1),
]
SMALL_SHAPES = [(3, 67, 5, 7), (6, 48, 1, 1), (2, 20, 9, 4)]

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def randn(shape, gen, dtype=torch.float64, scale=1.0, shift=0.0) -> Tensor:
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)


def make_activation(shape, layout: str, dtype, gen, device="cpu", scale=1.0, shift=0.0) -> Tensor:
    """A random [N, C, H, W] tensor in one of LAYOUTS (the slices are views)."""
    n, c, h, w = shape
    if layout == "contiguous":
        t = randn(shape, gen, dtype, scale, shift)
    elif layout == "channels_last":
        t = randn(shape, gen, dtype, scale, shift).contiguous(memory_format=torch.channels_last)
    elif layout == "channel_slice":
        t = randn((n, c + 3, h, w), gen, dtype, scale, shift)[:, 1 : c + 1]
    elif layout == "channels_last_slice":
        big = randn((n, c + 5, h, w), gen, dtype, scale, shift)
        t = big.contiguous(memory_format=torch.channels_last)[:, 2 : c + 2]
    elif layout == "spatial_crop":
        t = randn((n, c, h + 2, w + 1), gen, dtype, scale, shift)[:, :, 1 : h + 1, :w]
    else:
        raise ValueError(layout)
    assert t.shape == shape
    return t.to(device)


def channel_params(c, gen, device="cpu", dtype=torch.float32):
    """weight, bias, running_mean, running_var for c channels (never zeros)."""
    weight = randn((c,), gen, dtype, 0.5, 1.0)
    bias = randn((c,), gen, dtype, 0.5)
    running_mean = randn((c,), gen, dtype, 0.3)
    running_var = (randn((c,), gen, torch.float64).abs() + 0.5).to(dtype)
    return [t.to(device) for t in (weight, bias, running_mean, running_var)]


def max_abs_err(actual: Tensor, expected: Tensor, mask: Tensor | None = None) -> float:
    diff = (actual.double() - expected.double()).abs()
    if mask is not None:
        diff = diff[mask]
    return diff.max().item() if diff.numel() else 0.0


def assert_close(
    actual: Tensor, expected: Tensor, dtype, what: str, scale=None, mask=None, tol=None
):
    """fp32/fp64 against the fp64 oracle: errors near 1e-6 / 1e-12 relative
    (tol, relative to the largest expected value, overrides)."""
    assert not torch.isnan(actual).any(), f"{what}: NaN in the result (an element not written?)"
    tol = tol if tol is not None else {torch.float32: 2e-5, torch.float64: 1e-10}[dtype]
    ref_scale = scale if scale is not None else max(expected.double().abs().max().item(), 1.0)
    err = max_abs_err(actual, expected, mask)
    assert err <= tol * ref_scale, f"{what}: max abs error {err:.3g} > {tol * ref_scale:.3g}"


def assert_conv_gradcheck(forward, backward, x: Tensor, weight: Tensor, bias: Tensor) -> None:
    """gradcheck of a convolution's hand-written backward: forward(x, weight,
    bias) -> y and backward(grad_y, x, weight, bias) -> (grad_x, grad_weight,
    grad_bias) joined into one autograd.Function (float64 operands)."""

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight, bias)
            return forward(x, weight, bias)

        @staticmethod
        def backward(ctx, grad):
            return backward(grad, *ctx.saved_tensors)

    inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(Conv.apply, inputs)


def run_python(code: str, **env: str) -> tuple[str, str]:
    """Runs code in a fresh interpreter (for once-per-process state) and
    returns (stdout, stderr); fails the test with stderr if it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, proc.stderr
