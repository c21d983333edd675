"""Fused BN ops (bn_act / bn_add_act) against the fp64 reference: forward,
every gradient, running statistics; across backend x dtype x layout x shape
x train/eval, with and without affine parameters and running statistics."""

import pytest
import torch
from bn_cases import OPS, BnCase
from emulation_support import LARGE as H100
from helpers import DTYPES, LAYOUTS, SHAPES, SMALL_SHAPES, assert_close, max_abs_err
from triton_support import SMALL_ONLY

from resnet_fast._native import emulation

LARGE = [s for s in SHAPES if s not in SMALL_SHAPES]
CASES = [
    pytest.param(op, shape, layout, id=f"{op}-{'x'.join(map(str, shape))}-{layout}")
    for shape in SHAPES
    for layout in (LAYOUTS if shape in SMALL_SHAPES else ["contiguous", "channels_last"])
    for op in (OPS if shape in SMALL_SHAPES else ["bn_relu", "bn_add_relu"])
]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compare(case: BnCase, ours, oracle, torch_ref, dtype):
    keep = ~case.boundary()
    pairs = [("out", ours.out, oracle.out, torch_ref.out, keep)]
    pairs += [
        (f"grad {k}", ours.grads[k], oracle.grads[k], torch_ref.grads[k], None) for k in ours.grads
    ]
    leaves = {"x": case.x, "residual": case.residual, "weight": case.weight, "bias": case.bias}
    for name, grad in ours.grads.items():
        assert grad.dtype == leaves[name].dtype, f"grad {name} is {grad.dtype}"
    for what, mine, expected, plain, mask in pairs:
        assert not torch.isnan(mine).any(), f"{what}: NaN (an element never written?)"
        if dtype in LOW_PRECISION and what in ("out", "grad x", "grad residual"):
            # Activations in low precision: no worse than 2x plain PyTorch's error.
            err, torch_err = max_abs_err(mine, expected, mask), max_abs_err(plain, expected, mask)
            scale = max(expected.abs().max().item(), 1.0)
            assert err <= 2 * torch_err + 1e-6 * scale, (
                f"{what}: error {err:.3g} vs plain PyTorch {torch_err:.3g}"
            )
        else:
            # fp32/fp64, and the [C] parameter gradients (accumulated in fp32
            # by our kernels even for half inputs; PyTorch's may be worse).
            tol_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            assert_close(mine, expected, tol_dtype, what, mask=mask)
    if case.running_mean is not None:
        stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        assert_close(ours.running_mean, oracle.running_mean, stat_dtype, "running_mean")
        assert_close(ours.running_var, oracle.running_var, stat_dtype, "running_var")
        if not case.training:
            assert torch.equal(ours.running_mean, case.running_mean)
            assert torch.equal(ours.running_var, case.running_var)


def _check(case: BnCase, dtype, gen):
    boundary = case.boundary()
    # A sanity bound: the excluded elements are a small minority.
    assert boundary.float().mean().item() < 0.05, "too many elements at the ReLU boundary"
    grad_out = case.grad_out(gen)
    ours = case.run_ours(grad_out)
    oracle = case.run_oracle(grad_out)
    plain = case.run_torch(grad_out)
    assert ours.out.shape == case.x.shape and ours.out.dtype == dtype
    _compare(case, ours, oracle, plain, dtype)
    return ours


def _small_shapes_only(name: str, training: bool) -> bool:
    """Backends that run in an interpreter here take the small shapes only;
    the CUDA emulation takes the ResNet shapes in training on its
    H100-sized device (reductions split over many blocks)."""
    if name == "cuda_emulated":
        return not training or emulation.device() != H100
    return name == "reference" or name == "triton" and SMALL_ONLY


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op,shape,layout", CASES)
def test_forward_backward_running_stats(backend, op, shape, layout, dtype, training, gen):
    name, device = backend
    if shape not in SMALL_SHAPES and _small_shapes_only(name, training):
        pytest.skip(f"the {name} backend runs the small shapes only here")
    case = BnCase.make(op, shape, layout, dtype, training, gen, device)
    ours = _check(case, dtype, gen)
    if layout in ("channels_last", "channels_last_slice") and shape[2] * shape[3] > 1:
        assert ours.out.is_contiguous(memory_format=torch.channels_last)


# Channels_last rows of exactly 1, 2 or 4 vectors (8 to 64 channels, by the
# dtype's and the ISA's vector width) run the CPU kernels' register-held
# variant; the channel slice crosses rows of another stride.
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "channels_last_slice"])
@pytest.mark.parametrize("op", ["bn_relu", "bn_add_relu"])
@pytest.mark.parametrize("channels", [8, 16, 32, 64])
def test_small_channel_rows(backend, channels, op, layout, dtype, training, gen):
    name, device = backend
    if _small_shapes_only(name, training) and channels > 16:
        pytest.skip(f"the {name} backend runs the small shapes only here")
    case = BnCase.make(op, (5, channels, 9, 11), layout, dtype, training, gen, device)
    _check(case, dtype, gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("running", [True, False], ids=["running", "no_running"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("op", list(OPS))
def test_optional_parameters(backend, op, affine, running, dtype, gen):
    _, device = backend
    case = BnCase.make(op, (3, 13, 6, 5), "contiguous", dtype, True, gen, device, affine, running)
    _check(case, dtype, gen)


@pytest.mark.parametrize("op", list(OPS))
def test_eval_single_sample_single_pixel(backend, op, gen):
    _, device = backend
    case = BnCase.make(op, (1, 24, 1, 1), "contiguous", torch.float32, False, gen, device)
    _check(case, torch.float32, gen)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_large_mean_is_stable(backend, layout, gen):
    """Inputs with mean 1e4 and std 1 (fp32): the native kernels keep fp32
    precision (PyTorch itself loses 1e-3 here, 1e-2 in channels_last); every
    backend is at least as good as PyTorch."""
    name, device = backend
    case = BnCase.make("bn_relu", (4, 32, 24, 24), layout, torch.float32, True, gen, device)
    case.x = (case.x - 0.5) / 2 + 1e4  # std 1, mean 1e4, still in `layout`
    grad_out = case.grad_out(gen)
    ours, oracle, plain = (
        case.run_ours(grad_out),
        case.run_oracle(grad_out),
        case.run_torch(grad_out),
    )
    keep = ~case.boundary()
    err = max_abs_err(ours.out, oracle.out, keep)
    torch_err = max_abs_err(plain.out, oracle.out, keep)
    assert err <= max(2 * torch_err, 1e-3), f"out: {err:.3g} vs PyTorch {torch_err:.3g}"
    assert max_abs_err(ours.grads["x"], oracle.grads["x"]) <= max(
        2 * max_abs_err(plain.grads["x"], oracle.grads["x"]), 1e-3
    )
    assert_close(ours.running_var, oracle.running_var, torch.float32, "running_var")
    assert_close(ours.running_mean, oracle.running_mean, torch.float32, "running_mean")
    if name != "reference":  # the reference computes in plain fp32
        assert_close(ours.out, oracle.out, torch.float32, "out", mask=keep)
        assert_close(ours.grads["x"], oracle.grads["x"], torch.float32, "grad x")


def test_empty_batch_matches_pytorch(backend, gen):
    _, device = backend
    import resnet_fast.functional as RF

    x = torch.empty(0, 8, 4, 4, device=device)
    rm, rv = torch.randn(8, generator=gen).to(device), torch.rand(8, generator=gen).to(device) + 1
    rm0, rv0 = rm.clone(), rv.clone()
    out = RF.batch_norm_relu(x, rm, rv, training=True)
    expected = torch.nn.functional.batch_norm(x, rm0.clone(), rv0.clone(), training=True)
    assert out.shape == expected.shape == x.shape
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)
