"""Paths of the CUDA kernels that the shared op tests may not reach: the
element-by-element fallback for misaligned operands, many partial results per
channel, strided and reduced-precision [C] vectors. Each case is compared
with the fp64 reference through the same checks as test_batch_norm.py.

The cases take the device their tensors live on, under whichever backend
the caller forces: here the CUDA kernels on a GPU; test_cuda_emulated.py
runs the same cases through the CUDA emulation on CPU tensors."""

import pytest
import torch
from bn_cases import BnCase
from helpers import assert_close

import resnet_fast

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _cuda_backend():
    with resnet_fast.use_backend("cuda"):
        yield


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values one element past a 16-byte boundary, same strides."""
    flat = torch.empty(t.untyped_storage().nbytes() // t.element_size() + 1, dtype=t.dtype,
                       device=t.device)  # fmt: skip
    view = flat[1:].as_strided(t.shape, t.stride())
    view.copy_(t)
    return view


def _run(case: BnCase, gen):
    grad_out = case.grad_out(gen)
    ours, oracle = case.run_ours(grad_out), case.run_oracle(grad_out)
    keep = ~case.boundary()
    tol = torch.float64 if case.x.dtype == torch.float64 else torch.float32
    assert_close(ours.out, oracle.out, tol, "out", mask=keep)
    for k, g in ours.grads.items():
        assert_close(g, oracle.grads[k], tol, f"grad {k}")
    if case.running_mean is not None and case.training:
        assert_close(ours.running_mean, oracle.running_mean, tol, "running_mean")
        assert_close(ours.running_var, oracle.running_var, tol, "running_var")


# --- the cases (device: where the forced backend's tensors live) -------------

MISALIGNED = [pytest.param(op, layout, id=f"{op}-{layout}") for op in ("bn_relu", "bn_add_relu")
              for layout in ("contiguous", "channels_last")]  # fmt: skip
MANY_PARTIALS = [pytest.param(layout, dtype, id=f"{layout}-{dtype}")
                 for layout in ("contiguous", "channels_last")
                 for dtype in (torch.float32, torch.float64)]  # fmt: skip


def misaligned_operands(op, layout, gen, device):
    case = BnCase.make(op, (4, 64, 8, 8), layout, torch.float32, True, gen, device)
    case.x = _misaligned(case.x)
    if case.residual is not None:
        case.residual = _misaligned(case.residual)
    _run(case, gen)


def many_partials_per_channel(layout, dtype, gen, device):
    """Enough rows for dozens of blocks per channel (partials merged by the
    finalize kernel), mean far from zero."""
    case = BnCase.make("bn_add_relu", (64, 8, 48, 48), layout, dtype, True, gen, device)
    case.x = case.x + 100
    _run(case, gen)


def strided_and_low_precision_channel_vectors(gen, device):
    case = BnCase.make("bn_relu", (3, 12, 5, 5), "channels_last", torch.float32, True, gen, device)
    case.weight = case.weight.repeat_interleave(2)[::2]  # strided views
    case.bias = case.bias.repeat_interleave(2)[::2]
    case.running_mean = case.running_mean.to(torch.bfloat16)
    case.running_var = case.running_var.to(torch.bfloat16)
    grad_out = case.grad_out(gen)
    ours, oracle = case.run_ours(grad_out), case.run_oracle(grad_out)
    assert_close(ours.out, oracle.out, torch.float32, "out", mask=~case.boundary())
    assert ours.running_mean.dtype == torch.bfloat16
    # bf16 running statistics: one bf16 rounding of the fp64 update.
    torch.testing.assert_close(
        ours.running_var.double(), oracle.running_var.double(), rtol=8e-3, atol=0
    )


def matches_the_cpu_backend(gen, device):
    """Bitwise in layout, closely in value: the CPU kernels and these run the
    same per-channel steps (csrc/common/channel_steps.h)."""
    case = BnCase.make("bn_add_relu", (5, 33, 7, 9), "channels_last", torch.float64, True, gen)
    grad_out = case.grad_out(gen)
    with resnet_fast.use_backend("cpu"):
        cpu = case.run_ours(grad_out)
    device_case = BnCase(**{k: v.to(device, copy=True) if isinstance(v, torch.Tensor) else v
                            for k, v in vars(case).items()})  # fmt: skip
    ours = device_case.run_ours(grad_out.to(device))
    assert ours.out.stride() == cpu.out.stride()
    torch.testing.assert_close(ours.out.cpu(), cpu.out, rtol=1e-12, atol=1e-12)
    for k in cpu.grads:
        torch.testing.assert_close(ours.grads[k].cpu(), cpu.grads[k], rtol=1e-11, atol=1e-11)


# --- on a GPU -----------------------------------------------------------------


@pytest.mark.parametrize("op,layout", MISALIGNED)
def test_misaligned_operands_take_the_scalar_path(op, layout, gen):
    misaligned_operands(op, layout, gen, "cuda")


@pytest.mark.parametrize("layout,dtype", MANY_PARTIALS)
def test_many_partials_per_channel(layout, dtype, gen):
    many_partials_per_channel(layout, dtype, gen, "cuda")


def test_strided_and_low_precision_channel_vectors(gen):
    strided_and_low_precision_channel_vectors(gen, "cuda")


def test_cuda_matches_cpu_backend_bitwise_in_layout_and_closely_in_value(gen):
    matches_the_cpu_backend(gen, "cuda")
