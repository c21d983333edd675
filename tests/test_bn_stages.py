"""The BN stage ops (bn_stats, bn_apply, bn_*_bwd_reduce, bn_bwd_apply), in
one process: composed as synchronized BN composes them, they must give the
fp64 reference's output and gradients, on every backend (the C++ ops on the
CPU, the CUDA ops (also on the CPU through the test-only CUDA emulation), the
Triton ops, and the reference backend's pure-PyTorch ops); plus
torch.compile, combine_stats and the selection of the stages (opcheck:
test_op_contracts.py).
The multi-process behaviour is in test_distributed.py."""

import pytest
import torch
from emulation_support import SKIP_REASON as EMULATION_SKIP_REASON
from helpers import LAYOUTS, assert_close, channel_params, make_activation

import resnet_fast
from resnet_fast import reference
from resnet_fast._ops.backends import backend_for
from resnet_fast.distributed import combine_stats
from resnet_fast.triton.interpreter import triton_interpreting

ops = torch.ops.resnet_fast
# The native ops on each device (opcheck, torch.compile).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture
def stages(backend):
    """(the stage ops of the forced backend, its device)."""
    name, device = backend
    return backend_for(torch.device(device)).ops, device


SHAPES = [(3, 67, 5, 7), (6, 48, 1, 1), (2, 20, 9, 4)]


def _run_stages(stages, x, residual, weight, bias, relu, grad_out, eps=1e-5):
    """Forward and backward through the stages, with the local batch as the
    whole batch: (out, grad_x, grad_residual, grad_weight, grad_bias)."""
    count = x.numel() // x.shape[1]
    mean, var = stages.bn_stats(x)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    invstd = torch.rsqrt(var + eps).to(acc)
    out = stages.bn_apply(x, residual, weight, bias, mean, invstd, relu)
    if residual is None:
        sum_g, sum_gx = stages.bn_act_bwd_reduce(grad_out, x, weight, bias, mean, invstd, relu)
        grad_residual, src, mask = None, grad_out, relu
    else:
        sum_g, sum_gx, grad_residual = stages.bn_add_act_bwd_reduce(
            grad_out, x, residual, weight, bias, mean, invstd, relu
        )
        src, mask = grad_residual, False
    grad_x = stages.bn_bwd_apply(
        src, x, weight, bias, mean, invstd, sum_g / count, sum_gx / count, mask
    )
    return out, grad_x, grad_residual, sum_gx * invstd, sum_g


def _run_oracle(x, residual, weight, bias, relu, grad_out):
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in
              (x, residual, weight, bias)]  # fmt: skip
    xd, rd, wd, bd = leaves
    out = reference.batch_norm_act(xd, None, None, wd, bd, True, 0.1, 1e-5, relu, rd)
    out.backward(grad_out.double())
    return out, xd.grad, None if rd is None else rd.grad, wd.grad, bd.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["relu", "add_relu", "identity"])
def test_stages_compose_to_batch_norm(stages, dtype, layout, shape, kind, gen):
    stages, device = stages
    x = make_activation(shape, layout, dtype, gen, device, scale=2.0, shift=0.5)
    residual = make_activation(shape, layout, dtype, gen, device) if kind == "add_relu" else None
    weight, bias, _, _ = channel_params(shape[1], gen, device, dtype=dtype)
    grad_out = make_activation(shape, layout, dtype, gen, device)
    relu = kind != "identity"
    ours = _run_stages(stages, x, residual, weight, bias, relu, grad_out)
    oracle = _run_oracle(x, residual, weight, bias, relu, grad_out)
    names = ["out", "grad x", "grad residual", "grad weight", "grad bias"]
    for name, mine, expected in zip(names, ours, oracle, strict=True):
        if expected is None:
            assert mine is None, name
            continue
        assert mine.device == x.device, name
        assert_close(mine, expected.detach(), dtype, name)
    assert ours[0].shape == x.shape and ours[0].dtype == dtype


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_stats_of_a_large_mean_normalize_exactly(stages, layout, gen):
    stages, device = stages
    x = make_activation((4, 8, 6, 5), layout, torch.float32, gen, device, scale=1.0, shift=1e4)
    mean, var = stages.bn_stats(x)
    assert mean.dtype == var.dtype == torch.float64
    invstd = torch.rsqrt(var + 1e-5).float()
    out = stages.bn_apply(x, None, None, None, mean, invstd, False)
    expected = reference.batch_norm_act(x.double(), None, None, training=True, relu=False)
    assert_close(out, expected, torch.float32, "out", scale=1.0)


def test_empty_batch(stages):
    stages, device = stages
    x = torch.randn(0, 5, 3, 3, device=device)
    mean, var = stages.bn_stats(x)
    zeros = torch.zeros(5, dtype=torch.float64, device=device)
    assert torch.equal(mean, zeros) and torch.equal(var, zeros)
    invstd = torch.ones(5, device=device)
    assert stages.bn_apply(x, None, None, None, mean, invstd, True).shape == x.shape
    sum_g, sum_gx = stages.bn_act_bwd_reduce(x, x, None, None, mean, invstd, True)
    assert torch.equal(sum_g, zeros.float()) and torch.equal(sum_gx, zeros.float())
    assert stages.bn_bwd_apply(x, x, None, None, mean, invstd, sum_g, sum_gx, True).shape == x.shape


def test_low_precision_matches_the_fused_op(stages, gen):
    """bf16 / fp16 through the stages equals the fused op on the same batch
    (both round once from the same fp32 arithmetic) to one unit in the last place."""
    stages, device = stages
    for dtype in (torch.bfloat16, torch.float16):
        x = make_activation((4, 12, 5, 5), "channels_last", dtype, gen, device, scale=2.0)
        r = make_activation((4, 12, 5, 5), "channels_last", dtype, gen, device)
        w, b, _, _ = channel_params(12, gen, device)
        mean, var = stages.bn_stats(x)
        out = stages.bn_apply(x, r, w, b, mean, torch.rsqrt(var + 1e-5).float(), True)
        # The same backend's fused op (the reference backend's: the C++ op).
        fused_op = getattr(stages, "bn_add_act_fwd", ops.bn_add_act_fwd)
        fused = fused_op(x, r, w, b, None, None, True, 0.1, 1e-5, True)[0]
        ulp = torch.finfo(dtype).eps * fused.float().abs().clamp_min(1.0)
        assert ((out.float() - fused.float()).abs() <= ulp).all(), dtype


@pytest.mark.parametrize("device", DEVICES)
def test_stage_ops_compile_fullgraph(device, gen):
    torch._dynamo.reset()
    x = make_activation((4, 6, 5, 5), "channels_last", torch.float32, gen, device)
    w, b, _, _ = channel_params(6, gen, device)

    def normalize(x, w, b):
        mean, var = ops.bn_stats(x)
        return ops.bn_apply(x, None, w, b, mean, torch.rsqrt(var + 1e-5).float(), True)

    compiled = torch.compile(normalize, fullgraph=True, backend="aot_eager")
    assert_close(compiled(x, w, b), normalize(x, w, b), torch.float32, "compiled")


@pytest.mark.parametrize("device", DEVICES)
def test_bad_statistics_are_rejected(device):
    x = torch.randn(2, 3, 4, 4, device=device)
    mean, invstd = torch.zeros(3, dtype=torch.float64, device=device), torch.ones(3, device=device)
    g = torch.randn_like(x)
    with pytest.raises(RuntimeError, match=r"mean must be a \[3\] Double tensor"):
        ops.bn_apply(x, None, None, None, mean.float(), invstd, True)
    with pytest.raises(RuntimeError, match=r"invstd must be a \[3\] Float tensor"):
        ops.bn_apply(x, None, None, None, mean, torch.ones(4, device=device), True)
    with pytest.raises(RuntimeError, match="weight must be"):
        ops.bn_apply(x, None, torch.ones(2, device=device), None, mean, invstd, True)
    with pytest.raises(RuntimeError, match=r"mean_g must be a \[3\] Float tensor"):
        ops.bn_bwd_apply(g, x, None, None, mean, invstd, mean, invstd, True)
    with pytest.raises(RuntimeError, match="grad_out must have the shape of input"):
        ops.bn_act_bwd_reduce(g[:1], x, None, None, mean, invstd, True)


@pytest.mark.parametrize("sizes", [(5, 3), (1, 7, 0, 2), (0, 4)])
def test_combine_stats_equals_the_statistics_of_the_union(sizes, gen):
    chunks = [torch.randn(n, 6, generator=gen, dtype=torch.float64) * 3 + 1e4 for n in sizes]
    stats = [torch.var_mean(c, dim=0, correction=0) if len(c) else (torch.zeros(6),) * 2
             for c in chunks]  # fmt: skip
    mean, var, total = combine_stats(
        torch.stack([m for _, m in stats]),
        torch.stack([v for v, _ in stats]),
        torch.tensor(sizes, dtype=torch.float64),
    )
    full_var, full_mean = torch.var_mean(torch.cat(chunks), dim=0, correction=0)
    assert total.item() == sum(sizes)
    torch.testing.assert_close(mean, full_mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(var, full_var, rtol=1e-10, atol=1e-10)


def test_each_backend_has_its_stages():
    cpu = torch.device("cpu")
    assert backend_for(cpu).ops is ops
    with resnet_fast.use_backend("reference"):
        assert backend_for(cpu).ops is torch.ops.resnet_fast_reference
    if triton_interpreting():
        with resnet_fast.use_backend("triton"):
            assert backend_for(cpu).ops is torch.ops.resnet_fast_triton
    if EMULATION_SKIP_REASON is None:
        with resnet_fast.use_backend("cuda_emulated"):
            assert backend_for(cpu).ops is torch.ops.resnet_fast_cuda_emulated
