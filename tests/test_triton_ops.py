"""Dispatcher contracts of torch.ops.resnet_fast_triton (the resnet_fast ops
on Triton kernels) and of the Triton convolution ops: fp64 gradcheck
(Triton's interpreter, and GPUs, run fp64 kernels), torch.library.opcheck
(schema, fake kernel, autograd registration, AOT dispatch), the statistics
kernel's stability, and torch.compile on a GPU.

Forward values, every gradient and the running statistics of the public
functions are covered by the shared op tests (test_batch_norm.py,
test_add_relu.py) through the ``triton`` backend parameter.
"""

import pytest
import torch
from compile_support import assert_compiled_tail_matches_eager
from helpers import assert_close, channel_params, make_activation, run_python
from triton_support import SMALL_ONLY, TRITON_DEVICE

import resnet_fast
import resnet_fast.functional as RF
from resnet_fast._ops.fused import batch_norm_act

pytestmark = pytest.mark.triton
pytest.importorskip("triton")
import resnet_fast.triton.backend  # noqa: E402,F401  (registers torch.ops.resnet_fast_triton)

ops = torch.ops.resnet_fast_triton


@pytest.fixture(autouse=True)
def _triton_backend():
    with resnet_fast.use_backend("triton"):
        yield


def _bn_inputs(gen, layout="contiguous", shape=(3, 5, 4, 3), dtype=torch.float64):
    x = make_activation(shape, layout, dtype, gen, TRITON_DEVICE, scale=2.0, shift=0.3)
    r = make_activation(shape, layout, dtype, gen, TRITON_DEVICE)
    w, b, rm, rv = channel_params(shape[1], gen, TRITON_DEVICE, dtype)
    return x, r, w, b, rm, rv


# The interpreter pays ~0.1 s per kernel launch: gradcheck's fast mode
# (random projections, a few evaluations) there, the full Jacobian on a GPU.
FAST = SMALL_ONLY
# The convolution ops are triton_ops: under the interpreter, opcheck's
# fake-tensor tests cannot run them (the interpreter reads the data pointers
# of its fake arguments); on a GPU the launches go through wrap_triton's
# tracing. (The opcheck of the other ops, which have registered fake
# kernels, is test_op_contracts.py's, on every backend.)
CONV_OPCHECK_TESTS = (
    ("test_schema", "test_autograd_registration")
    if SMALL_ONLY
    else (
        "test_schema",
        "test_autograd_registration",
        "test_faketensor",
        "test_aot_dispatch_dynamic",
    )
)


@pytest.mark.parametrize(
    "training,layout", [(True, "channels_last"), (False, "contiguous")], ids=["train", "eval"]
)
def test_gradcheck_fp64(training, layout, gen):
    x, r, w, b, rm, rv = _bn_inputs(gen, layout, shape=(2, 3, 3, 2))
    xg, rg, wg, bg = (t.detach().requires_grad_() for t in (x, r, w, b))

    def bn_add_relu(x, r, w, b):
        return RF.batch_norm_add_relu(x, r, rm.clone(), rv.clone(), w, b, training=training)

    def bn_identity(x, w, b):
        return batch_norm_act(x, None, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5, False)

    assert torch.autograd.gradcheck(bn_add_relu, (xg, rg, wg, bg), fast_mode=FAST)
    assert torch.autograd.gradcheck(bn_identity, (xg, wg, bg), fast_mode=FAST)
    assert torch.autograd.gradcheck(RF.add_relu, (xg, rg), fast_mode=FAST)


def test_gradcheck_without_affine_or_running_stats(gen):
    x, r, *_ = _bn_inputs(gen, shape=(2, 3, 3, 2))
    xg, rg = x.requires_grad_(), r.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, r: RF.batch_norm_add_relu(x, r, None, None, training=True),
        (xg, rg),
        fast_mode=FAST,
    )


def _opcheck(op, args):
    torch.library.opcheck(op, args, test_utils=CONV_OPCHECK_TESTS)


def test_conv_opcheck(gen):
    x, *_ = _bn_inputs(gen, "channels_last", shape=(2, 4, 5, 5), dtype=torch.float32)
    w = torch.randn(6, 2, 3, 3, generator=gen).to(TRITON_DEVICE)
    bias = torch.randn(6, generator=gen).to(TRITON_DEVICE)
    res = torch.randn(2, 6, 3, 3, generator=gen).to(TRITON_DEVICE)
    geometry = ([2, 2], [1, 1], [1, 1], 2)
    conv_ops = torch.ops.resnet_fast_triton
    _opcheck(conv_ops.conv2d, (x, w, bias, res, *geometry, True))
    _opcheck(conv_ops.conv2d_stats, (x, w, bias, *geometry))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_statistics_match_float64(layout, gen):
    """Shifted, Chan-merged statistics: fp32 inputs with mean 1e4 and std 1
    keep fp32 precision, over several programs' partials."""
    x = make_activation((5, 12, 16, 17), layout, torch.float32, gen, TRITON_DEVICE) + 1e4
    mean, var = ops.bn_stats(x)
    x64 = x.double()
    assert mean.dtype == var.dtype == torch.float64
    assert (mean - x64.mean((0, 2, 3))).abs().max().item() < 1e-9 * 1e4
    assert_close(var, x64.var((0, 2, 3), unbiased=False), torch.float32, "var")


def test_running_stats_update_in_place(gen):
    x, _, w, b, rm, rv = _bn_inputs(gen, dtype=torch.float32)
    rm0, rv0 = rm.clone(), rv.clone()
    v_mean, v_var = rm._version, rv._version
    RF.batch_norm_relu(x, rm, rv, w, b, training=True, momentum=0.3)
    assert rm._version > v_mean and rv._version > v_var
    x64 = x.double()
    n = x.numel() // x.shape[1]
    expected_var = 0.7 * rv0.double() + 0.3 * x64.var((0, 2, 3), unbiased=False) * n / (n - 1)
    assert_close(rm, 0.7 * rm0.double() + 0.3 * x64.mean((0, 2, 3)), torch.float32, "mean")
    assert_close(rv, expected_var, torch.float32, "var")


def test_blocks_route_through_triton(gen):
    """A drop-in Bottleneck trains one step on the triton backend exactly
    like on the reference backend."""
    from resnet_fast.nn import Bottleneck

    torch.manual_seed(0)
    block = Bottleneck(16, 4).to(TRITON_DEVICE)
    x = make_activation((2, 16, 5, 5), "channels_last", torch.float32, gen, TRITON_DEVICE)
    results = []
    for backend in ("triton", "reference"):
        b = Bottleneck(16, 4).to(TRITON_DEVICE)
        b.load_state_dict(block.state_dict())
        with resnet_fast.use_backend(backend):
            out = b(x.clone().requires_grad_())
            out.sum().backward()
        results.append((out.detach(), b.conv1.weight.grad, b.bn3.running_var.clone()))
    for a, e in zip(*results, strict=True):
        assert_close(a, e.double(), torch.float32, "block")


@pytest.mark.skipif(TRITON_DEVICE != "cuda", reason="torch.compile of Triton kernels needs a GPU")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compile_fullgraph_matches_eager(layout, gen):
    x, r, w, b, rm, rv = _bn_inputs(gen, layout, shape=(4, 6, 5, 5), dtype=torch.float32)
    assert_compiled_tail_matches_eager(x, r, w, b, rm, rv)


def test_offsets_are_int32_exactly_when_every_offset_fits():
    import triton.language as tl

    from resnet_fast.triton._common import offset_dtype

    def strided(shape, stride):
        return torch.empty_strided(shape, stride, device="meta")

    small = strided((2, 3, 4, 5), (60, 1, 15, 3))
    largest_int32 = strided((2, 1, 3, 1), (2**31 - 9, 1, 4, 1))  # last element at 2^31 - 1
    past_int32 = strided((2, 1, 3, 1), (2**31 - 8, 1, 4, 1))
    size_one = strided((1, 3, 1, 1), (2**40, 1, 2**40, 2**40))  # index always 0
    assert offset_dtype(small, largest_int32, size_one) == tl.int32
    assert offset_dtype(small, past_int32) == tl.int64
    assert offset_dtype(past_int32, small) == tl.int64


@pytest.mark.parametrize("layout", ["channels_last_slice", "spatial_crop"])
def test_int64_offsets_compute_the_same(layout, gen, monkeypatch):
    """The kernels' int64 offset path (tensors past int32 offsets, forced
    here) loads and stores exactly the elements the int32 path does."""
    import triton.language as tl

    from resnet_fast.triton import _common

    x, r, w, b, *_ = _bn_inputs(gen, layout, shape=(3, 6, 5, 4), dtype=torch.float32)
    g = make_activation(x.shape, layout, torch.float32, gen, TRITON_DEVICE)

    def run():
        mean, var = ops.bn_stats(x)
        invstd = (var + 1e-5).rsqrt().float()
        return (
            mean, var,
            ops.bn_apply(x, r, w, b, mean, invstd, True),
            *ops.bn_add_act_bwd(g, x, r, w, b, mean, invstd, True, True),
            *ops.bn_act_bwd(g, x, w, b, mean, invstd, True, True),
            *ops.bn_add_act_fwd(x, r, w, b, None, None, True, 0.1, 1e-5, True),
        )  # fmt: skip

    narrow = run()
    monkeypatch.setattr(_common, "_INT32_MAX", 0)
    assert _common.offset_dtype(x) == tl.int64
    wide = run()
    for i, (a, e) in enumerate(zip(wide, narrow, strict=True)):
        assert torch.equal(a, e), f"result {i} differs with int64 offsets"


def test_cpu_tensors_without_the_interpreter_are_refused():
    # A fresh process: TRITON_INTERPRET is read once, when triton is imported.
    out, _ = run_python(
        """
import torch, resnet_fast, resnet_fast.functional as RF
try:
    with resnet_fast.use_backend("triton"):
        RF.add_relu(torch.randn(4), torch.randn(4))
except ValueError as e:
    print("refused" if "TRITON_INTERPRET=1" in str(e) else e)
""",
        TRITON_INTERPRET="0",
    )
    assert out.split() == ["refused"]
