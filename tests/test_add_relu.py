"""add_relu against the fp64 reference: forward, both gradients, layouts, dtypes."""

import pytest
import torch
from helpers import DTYPES, LAYOUTS, assert_close, make_activation, max_abs_err, randn, run_python
from torch._prims_common import suggest_memory_format

import resnet_fast.functional as RF
from resnet_fast import reference

BOUNDARY = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 256, 14, 14), (3, 67, 5, 7), (5, 9, 1, 1)], ids=str)
def test_forward_backward(backend, shape, layout, dtype, gen):
    _, device = backend
    a = make_activation(shape, layout, dtype, gen, device).requires_grad_()
    b = make_activation(shape, layout, dtype, gen, device).requires_grad_()
    pre = a.detach().double() + b.detach().double()
    keep = pre.abs() >= BOUNDARY[dtype]
    grad = randn(shape, gen, dtype).to(device).masked_fill(~keep, 0)
    grad = grad.contiguous(memory_format=suggest_memory_format(a))

    out = RF.add_relu(a, b)
    out.backward(grad)
    expected = reference.add_relu(a.detach().double(), b.detach().double())
    expected_grad = grad.double() * (pre > 0)
    assert out.shape == shape and out.dtype == dtype
    if dtype in (torch.float16, torch.bfloat16):
        plain = torch.relu(a.detach() + b.detach())
        err, torch_err = max_abs_err(out, expected, keep), max_abs_err(plain, expected, keep)
        assert err <= 2 * torch_err + 1e-6, f"{err} vs plain PyTorch {torch_err}"
        assert torch.equal(a.grad, b.grad)
        assert max_abs_err(a.grad, expected_grad) == 0
    else:
        assert_close(out, expected, dtype, "out", mask=keep)
        assert_close(a.grad, expected_grad, dtype, "grad input")
        assert_close(b.grad, expected_grad, dtype, "grad other")


def test_other_shapes_and_ranks(backend, gen):
    _, device = backend
    for shape in [(7,), (3, 33), (2, 3, 4, 5, 6)]:
        a, b = (
            randn(shape, gen, torch.float32).to(device),
            randn(shape, gen, torch.float32).to(device),
        )
        assert_close(
            RF.add_relu(a, b), reference.add_relu(a.double(), b.double()), torch.float32, "out"
        )


def test_mixed_memory_formats_warn_once_and_stay_correct():
    # A fresh process: the warning (from C++, on stderr) is once per process.
    out, err = run_python(
        """
import torch, resnet_fast.functional as RF
a = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
b = torch.randn(2, 8, 5, 5)
out = RF.add_relu(a, b)
RF.add_relu(a, b)
print(torch.equal(out, torch.relu(a + b)))
"""
    )
    assert out.split() == ["True"]
    assert err.count("copied to one layout") == 1, err
