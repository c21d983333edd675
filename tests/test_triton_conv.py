"""The Triton implicit-GEMM convolution and its epilogues against
torch.nn.functional.conv2d (fp64 oracle) for every ResNet convolution:
1x1 stride 1 / 2, 3x3 stride 1 / 2 pad 1, the 7x7 stride-2 stem, dilation,
groups (ResNeXt); inference epilogue (bias [+ residual] [+ ReLU]) and the
training epilogue (per-channel statistics), gradients through PyTorch's
convolution backward, and the conv + BN training / eval paths of
resnet_fast.functional.conv_bn_relu.

On the CPU these run under Triton's interpreter at small sizes; on a GPU the
same tests run at ResNet-50 sizes (tests marked triton, see conftest.py).
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, channel_params, max_abs_err, randn
from triton_support import SMALL_ONLY, TRITON_DEVICE

import resnet_fast
import resnet_fast.functional as RF

pytestmark = pytest.mark.triton
pytest.importorskip("triton")
import resnet_fast.triton.backend  # noqa: E402,F401  (registers torch.ops.resnet_fast_triton)

# name: (C_in, C_out, kernel, stride, padding, dilation, groups, H)
SMALL = {
    "1x1_s1": (24, 40, 1, 1, 0, 1, 1, 6),
    "1x1_s2": (24, 48, 1, 2, 0, 1, 1, 7),
    "3x3_s1": (20, 36, 3, 1, 1, 1, 1, 6),
    "3x3_s2": (20, 36, 3, 2, 1, 1, 1, 7),
    "7x7_s2_stem": (3, 32, 7, 2, 3, 1, 1, 11),
    "3x3_dilated": (16, 24, 3, 1, 2, 2, 1, 7),
    "3x3_groups": (32, 32, 3, 1, 1, 1, 4, 5),
    "3x3_s2_groups": (32, 32, 3, 2, 1, 1, 8, 6),
}
# ResNet-50 at batch 8 (GPU only): the stem, a bottleneck's 1x1 / 3x3 / 1x1,
# the strided 3x3 and the downsample 1x1 of a stage, a ResNeXt grouped 3x3.
FULL = {
    "7x7_s2_stem": (3, 64, 7, 2, 3, 1, 1, 224),
    "1x1_s1": (256, 64, 1, 1, 0, 1, 1, 56),
    "3x3_s1": (64, 64, 3, 1, 1, 1, 1, 56),
    "1x1_expand": (64, 256, 1, 1, 0, 1, 1, 56),
    "3x3_s2": (128, 128, 3, 2, 1, 1, 1, 56),
    "1x1_s2": (512, 1024, 1, 2, 0, 1, 1, 28),
    "3x3_dilated": (512, 512, 3, 1, 2, 2, 1, 14),
    "3x3_groups": (256, 256, 3, 1, 1, 1, 32, 28),
}
CONFIGS = SMALL if SMALL_ONLY else FULL
BATCH = 2 if SMALL_ONLY else 8
# fp32 on a GPU follows PyTorch's TF32 policy (torch.backends.cudnn.allow_tf32,
# on by default; PyTorch's own convolution backward follows it too): inputs
# rounded to a 10-bit mantissa (relative error <= 2^-11 each), products summed
# in fp32. Over K random-sign terms that is ~2^-10 / sqrt(3) of an output's
# scale per element, ~3e-3 at the extremes of a million outputs, ~6e-4 of the
# largest output. The CPU interpreter multiplies in full fp32 whatever the
# policy, so there the IEEE bound applies.
TF32 = TRITON_DEVICE == "cuda" and torch.backends.cudnn.allow_tf32
FP32_TOL = 2e-3 if TF32 else 2e-5
# Errors relative to the largest output: fp32 accumulation over K terms.
TOL = {torch.float32: FP32_TOL, torch.float64: 1e-10}


@pytest.fixture(autouse=True)
def _triton_backend():
    with resnet_fast.use_backend("triton"):
        yield


def _problem(name, dtype, gen, layout=torch.channels_last):
    c_in, c_out, k, stride, pad, dil, groups, h = CONFIGS[name]
    x = randn((BATCH, c_in, h, h + 1), gen, dtype).contiguous(memory_format=layout)
    w = randn((c_out, c_in // groups, k, k), gen, dtype, scale=(c_in // groups * k * k) ** -0.5)
    w = w.contiguous(memory_format=layout)
    return (
        x.to(TRITON_DEVICE),
        w.to(TRITON_DEVICE),
        dict(stride=stride, padding=pad, dilation=dil, groups=groups),
    )


def _geometry(g):
    return [g["stride"]] * 2, [g["padding"]] * 2, [g["dilation"]] * 2, g["groups"]


def _check(actual, expected64, dtype, what, plain=None):
    assert not torch.isnan(actual).any(), f"{what}: NaN (an element never written?)"
    if dtype in TOL:
        scale = max(expected64.abs().max().item(), 1.0)
        err = max_abs_err(actual, expected64)
        assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3g}"
    else:  # bf16 / fp16: no worse than 2x cuDNN / oneDNN in the same dtype
        err, torch_err = max_abs_err(actual, expected64), max_abs_err(plain, expected64)
        assert err <= 2 * torch_err + 1e-3, f"{what}: {err:.3g} vs PyTorch {torch_err:.3g}"


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("residual", [False, True], ids=["no_res", "res"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_inference_epilogue(name, residual, relu, gen):
    dtype = torch.float32
    x, w, g = _problem(name, dtype, gen)
    bias = randn((w.shape[0],), gen, dtype).to(TRITON_DEVICE)
    y64 = F.conv2d(x.double(), w.double(), bias.double(), **g)
    res = randn(y64.shape, gen, dtype).to(TRITON_DEVICE) if residual else None
    expected = y64 + res.double() if residual else y64
    expected = expected.relu() if relu else expected
    out = torch.ops.resnet_fast_triton.conv2d(x, w, bias, res, *_geometry(g), relu)
    assert out.shape == expected.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    _check(out, expected, dtype, f"{name} out")


def test_fp32_precision_follows_pytorchs_tf32_policy(monkeypatch):
    from resnet_fast.triton.conv_ops import _kernel, dot_precision

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert dot_precision(torch.float32) == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert dot_precision(torch.float32) == "ieee"
    assert dot_precision(torch.float64) == "ieee"
    assert "DOT_PRECISION" in _kernel.keys  # each policy autotunes (and compiles) its own


def test_conv_configs_are_pruned_per_dot_and_dtype(monkeypatch):
    """A launch keeps the tiles made for its dot (tensor cores: bf16, fp16,
    TF32; FMA: IEEE fp32, fp64) whose pipeline fits in shared memory and
    whose accumulator and input gather fit in registers."""
    import triton

    from resnet_fast.triton import configs

    def config(m, n, k, stages, warps):
        meta = {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}
        return triton.Config(meta, num_stages=stages, num_warps=warps)

    def kept(dtype, c_out=512, c_in=512, **kwargs):
        every = [config(*s) for s in configs.MMA_SHAPES + configs.FMA_SHAPES]
        args = {"C_out_g": c_out, "C_in_g": c_in, "x_ptr": torch.empty(1, dtype=dtype)}
        return [configs._conv_shape(c) for c in configs._prune_conv(every, args, **kwargs)]

    assert kept(torch.bfloat16) == kept(torch.float16) == configs.MMA_SHAPES
    # TF32: fp32 doubles the input gather; 128 x 64 x 64 on 4 warps is 256 B a thread.
    tf32 = kept(torch.float32, DOT_PRECISION="tf32")
    assert tf32 == [s for s in configs.MMA_SHAPES if s != (128, 64, 64, 4, 4)]
    assert kept(torch.float32, DOT_PRECISION="ieee") == configs.FMA_SHAPES
    # fp64: two registers per accumulator value; 128 x 128 on 8 warps takes 128.
    assert kept(torch.float64) == [s for s in configs.FMA_SHAPES if s != (128, 128, 8, 3, 8)]
    # A group of 8 output channels, a stem of 3 input channels.
    assert kept(torch.bfloat16, c_out=8) == kept(torch.bfloat16, c_in=3) == [(64, 16, 16, 2, 2)]
    # Shared memory: 4 stages of 128 x 128 x 64 take 128 KB in bf16 (fits in an
    # H100's 227 KB), 256 KB in fp32 (the size Triton compiles for sm_90).
    deep = (128, 128, 64, 4, 8)
    assert configs.conv_smem_bytes(config(*deep), 4) == 262144
    monkeypatch.setattr(configs, "MMA_SHAPES", [*configs.MMA_SHAPES, deep])
    assert deep in kept(torch.bfloat16)
    assert deep not in kept(torch.float32, DOT_PRECISION="tf32")


@pytest.mark.skipif(TRITON_DEVICE != "cuda", reason="the interpreter multiplies in fp32 either way")
@pytest.mark.parametrize("name", ["3x3_s1", "1x1_s2"])
def test_fp32_ieee_when_tf32_is_off(name, gen, monkeypatch):
    """allow_tf32 off: the IEEE kernel, with fp32's bound, in the same process
    as TF32 runs (the precision is a compile-time constant and autotuning key)."""
    x, w, g = _problem(name, torch.float32, gen)
    expected = F.conv2d(x.double(), w.double(), **g)
    torch.ops.resnet_fast_triton.conv2d(x, w, None, None, *_geometry(g), False)  # TF32 first
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    out = torch.ops.resnet_fast_triton.conv2d(x, w, None, None, *_geometry(g), False)
    scale = expected.abs().max().item()
    assert max_abs_err(out, expected) <= 2e-5 * scale


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["3x3_s2", "1x1_s1", "3x3_groups"])
def test_dtypes(name, dtype, gen):
    x, w, g = _problem(name, dtype, gen)
    bias = randn((w.shape[0],), gen, dtype).to(TRITON_DEVICE)
    out = torch.ops.resnet_fast_triton.conv2d(x, w, bias, None, *_geometry(g), True)
    expected = F.conv2d(x.double(), w.double(), bias.double(), **g).relu()
    plain = None if dtype == torch.float64 else F.conv2d(x, w, bias, **g).relu()
    assert out.dtype == dtype
    _check(out, expected, dtype, f"{name} {dtype}", plain)


def test_contiguous_nchw_input(gen):
    x, w, g = _problem("3x3_s2", torch.float32, gen, layout=torch.contiguous_format)
    out = torch.ops.resnet_fast_triton.conv2d(x, w, None, None, *_geometry(g), False)
    assert out.is_contiguous()
    _check(out, F.conv2d(x.double(), w.double(), **g), torch.float32, "NCHW")


@pytest.mark.parametrize("name", ["3x3_s2", "3x3_groups"])
def test_int64_offsets_compute_the_same(name, gen, monkeypatch):
    """The int64 offset path (tensors past int32 offsets, forced here) reads
    and writes exactly the elements the int32 path does."""
    import triton.language as tl

    from resnet_fast.triton import _common

    x, w, g = _problem(name, torch.float32, gen)
    x = x[:, :, :, 1:]  # a cropped view: general strides
    bias = randn((w.shape[0],), gen, torch.float32).to(TRITON_DEVICE)
    res = randn(F.conv2d(x, w, **g).shape, gen, torch.float32).to(TRITON_DEVICE)

    def run():
        out = torch.ops.resnet_fast_triton.conv2d(x, w, bias, res, *_geometry(g), True)
        return (out, *torch.ops.resnet_fast_triton.conv2d_stats(x, w, bias, *_geometry(g)))

    narrow = run()
    monkeypatch.setattr(_common, "_INT32_MAX", 0)
    assert _common.offset_dtype(x) == tl.int64
    wide = run()
    for what, a, e in zip(["out", "stats out", "mean", "var"], wide, narrow, strict=True):
        assert torch.equal(a, e), f"{name} {what} differs with int64 offsets"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_statistics_epilogue(name, gen):
    dtype = torch.float32
    x, w, g = _problem(name, dtype, gen)
    # An offset larger than the spread, as BN inputs often have.
    bias = randn((w.shape[0],), gen, dtype, scale=3.0, shift=2.0).to(TRITON_DEVICE)
    out, mean, var = torch.ops.resnet_fast_triton.conv2d_stats(x, w, bias, *_geometry(g))
    y64 = F.conv2d(x.double(), w.double(), bias.double(), **g)
    _check(out, y64, dtype, f"{name} out")
    assert mean.dtype == var.dtype == torch.float64
    # Statistics of the stored fp32 output, in fp64.
    stored = out.double()
    assert_close(mean, stored.mean((0, 2, 3)), dtype, "mean")
    assert_close(var, stored.var((0, 2, 3), unbiased=False), dtype, "var")


def test_training_statistics_bf16(gen):
    x, w, g = _problem("3x3_s1", torch.bfloat16, gen)
    out, mean, var = torch.ops.resnet_fast_triton.conv2d_stats(x, w, None, *_geometry(g))
    stored = out.double()  # the statistics are those of the rounded output
    assert_close(mean, stored.mean((0, 2, 3)), torch.float32, "mean")
    assert_close(var, stored.var((0, 2, 3), unbiased=False), torch.float32, "var")


@pytest.mark.parametrize("name", ["3x3_s2", "1x1_s2", "3x3_groups", "7x7_s2_stem"])
def test_gradients(name, gen):
    x, w, g = _problem(name, torch.float64, gen)
    bias = randn((w.shape[0],), gen, torch.float64).to(TRITON_DEVICE)
    y = F.conv2d(x, w, bias, **g)
    res = randn(y.shape, gen, torch.float64).to(TRITON_DEVICE)
    grad = randn(y.shape, gen, torch.float64).to(TRITON_DEVICE)
    leaves = [t.detach().requires_grad_() for t in (x, w, bias, res)]
    ours = torch.ops.resnet_fast_triton.conv2d(*leaves, *_geometry(g), True)
    ours.backward(grad)
    refs = [t.detach().requires_grad_() for t in (x, w, bias, res)]
    expected = (F.conv2d(refs[0], refs[1], refs[2], **g) + refs[3]).relu()
    expected.backward(grad)
    for what, a, b in zip(["input", "weight", "bias", "residual"], leaves, refs, strict=True):
        assert_close(a.grad, b.grad, torch.float64, f"grad {what}")


@pytest.mark.skipif(not SMALL_ONLY, reason="gradcheck at ResNet sizes is too slow")
def test_gradcheck_fp64(gen):
    """fp64 gradcheck (Triton's interpreter and tl.dot run fp64)."""
    x = randn((1, 4, 4, 5), gen, torch.float64).contiguous(memory_format=torch.channels_last)
    w = randn((6, 2, 3, 3), gen, torch.float64)
    b = randn((6,), gen, torch.float64)
    r = randn((1, 6, 2, 3), gen, torch.float64)
    leaves = [t.requires_grad_() for t in (x, w, b, r)]

    def conv(x, w, b, r):
        return torch.ops.resnet_fast_triton.conv2d(x, w, b, r, [2, 2], [1, 1], [1, 1], 2, True)

    assert torch.autograd.gradcheck(conv, leaves, fast_mode=True)

    def conv_stats(x, w, b):
        return torch.ops.resnet_fast_triton.conv2d_stats(x, w, b, [1, 1], [1, 1], [1, 1], 2)[0]

    assert torch.autograd.gradcheck(conv_stats, leaves[:3], fast_mode=True)


def _conv_bn(residual, name, gen, dtype=torch.float32):
    x, w, g = _problem(name, dtype, gen)
    c_out = w.shape[0]
    bw, bb, rm, rv = channel_params(c_out, gen, TRITON_DEVICE)
    res = None
    if residual:
        y = F.conv2d(x, w, **g)
        res = (
            randn(y.shape, gen, dtype)
            .to(TRITON_DEVICE)
            .contiguous(memory_format=torch.channels_last)
        )
    return x, w, g, res, bw, bb, rm, rv


@pytest.mark.parametrize("residual", [False, True], ids=["no_res", "res"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ["3x3_s2", "1x1_s1", "3x3_groups"])
def test_conv_bn_relu_functional(name, training, residual, gen):
    """resnet_fast.functional.conv_bn_relu on the triton backend vs the fp64
    reference: output, every gradient, running statistics."""
    x, w, g, res, bw, bb, rm, rv = _conv_bn(residual, name, gen)
    grad = None
    results = []
    for backend, convert in (("triton", lambda t: t), ("reference", lambda t: t.double())):
        leaves = [
            None if t is None else convert(t).detach().requires_grad_() for t in (x, w, bw, bb, res)
        ]
        stats = [convert(rm).clone(), convert(rv).clone()]
        with resnet_fast.use_backend(backend):
            out = RF.conv_bn_relu(
                leaves[0], leaves[1], *stats, leaves[2], leaves[3], training=training,
                residual=leaves[4], **g,
            )  # fmt: skip
        if grad is None:
            grad = randn(out.shape, gen, torch.float64).to(TRITON_DEVICE)
            # No gradient at the ReLU boundary, where fp32 and fp64 may disagree.
            grad = grad.masked_fill(out.detach().double().abs() < 1e-4, 0)
        out.backward(convert(grad).to(out.dtype))
        results.append((out.detach(), [t.grad for t in leaves if t is not None], stats))
    (out, grads, stats), (out64, grads64, stats64) = results
    # A ReLU flip changes the output by no more than the tiny pre-activation,
    # so outputs compare everywhere; gradients were zeroed near the boundary.
    assert_close(out, out64, torch.float32, "out", tol=FP32_TOL)
    for i, (a, b) in enumerate(zip(grads, grads64, strict=True)):
        assert_close(a, b, torch.float32, f"grad {i}", tol=FP32_TOL)
    for a, b in zip(stats, stats64, strict=True):
        assert_close(a, b, torch.float32, "running stat", tol=FP32_TOL)
    if not training:
        assert torch.equal(stats[0], rm) and torch.equal(stats[1], rv)
    else:
        assert not torch.equal(stats[0], rm)


@pytest.mark.skipif(TRITON_DEVICE != "cuda", reason="torch.compile of Triton kernels needs a GPU")
def test_compile_fullgraph_conv_bn_relu(gen):
    torch._dynamo.reset()
    x, w, g, res, bw, bb, rm, rv = _conv_bn(True, "3x3_s1", gen, torch.bfloat16)

    def fn(x, rm, rv):
        return RF.conv_bn_relu(x, w, rm, rv, bw, bb, training=True, residual=res, **g)

    eager = fn(x, rm.clone(), rv.clone())
    compiled = torch.compile(fn, fullgraph=True)(x, rm.clone(), rv.clone())
    assert max_abs_err(compiled, eager) <= 0.05 * max(eager.abs().max().item(), 1.0)
