"""The dispatcher contracts of every op, on every backend's registration
(torch.ops.resnet_fast on CPU and CUDA, torch.ops.resnet_fast_triton, and
torch.ops.resnet_fast_cuda_emulated, the CUDA kernels on the CPU where that
test-only library is built): the same schemas, torch.library.opcheck of
every op (schema, fake kernel, autograd registration, AOT dispatch); fp64
gradcheck and torch.compile(fullgraph=True) without a graph break of the
public functions."""

import contextlib

import pytest
import torch
from compile_support import assert_compiled_tail_matches_eager
from emulation_support import SKIP_REASON as EMULATION_SKIP_REASON
from emulation_support import SMALL, emulated
from helpers import assert_close, channel_params, make_activation
from triton_support import TRITON_DEVICE, TRITON_SKIP_REASON

import resnet_fast
import resnet_fast.functional as RF
from resnet_fast._ops import contract
from resnet_fast._ops.fused import batch_norm_act

ops = torch.ops.resnet_fast

# The native kernels of each device: the CUDA cases skip without a GPU and
# the CUDA build (see conftest.py); the CUDA kernels also run on the CPU
# through the test-only emulation, where it is built.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
    pytest.param("cuda_emulated", id="cuda_emulated", marks=pytest.mark.cuda_emulated),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device of the native kernels under test (cuda_emulated: CPU
    tensors with that backend forced)."""
    if request.param == "cuda_emulated":
        with emulated(SMALL):
            yield "cpu"
    else:
        yield request.param


def _bn_inputs(gen, layout="contiguous", shape=(3, 5, 4, 3), dtype=torch.float64, device="cpu"):
    x = make_activation(shape, layout, dtype, gen, device, scale=2.0, shift=0.3)
    r = make_activation(shape, layout, dtype, gen, device)
    w, b, rm, rv = channel_params(shape[1], gen, device, dtype=dtype)
    return x, r, w, b, rm, rv


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "spatial_crop"])
def test_gradcheck_fp64(training, layout, device, gen):
    x, r, w, b, rm, rv = _bn_inputs(gen, layout, device=device)
    leaves = [t.detach().requires_grad_() for t in (x, r, w, b)]

    def bn_relu(x, w, b):
        return RF.batch_norm_relu(x, rm.clone(), rv.clone(), w, b, training=training)

    def bn_add_relu(x, r, w, b):
        return RF.batch_norm_add_relu(x, r, rm.clone(), rv.clone(), w, b, training=training)

    def bn_identity(x, r, w, b):
        return batch_norm_act(x, r, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5, False)

    xg, rg, wg, bg = leaves
    assert torch.autograd.gradcheck(bn_relu, (xg, wg, bg))
    assert torch.autograd.gradcheck(bn_add_relu, (xg, rg, wg, bg))
    assert torch.autograd.gradcheck(bn_identity, (xg, rg, wg, bg))
    assert torch.autograd.gradcheck(RF.add_relu, (xg, rg))


def test_gradcheck_without_affine_or_running_stats(device, gen):
    x, r, *_ = _bn_inputs(gen, device=device)
    xg, rg = x.requires_grad_(), r.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, r: RF.batch_norm_add_relu(x, r, None, None, training=True), (xg, rg)
    )


# Every backend's registration of the contract: (op namespace, device). The
# CUDA one skips without a GPU and the CUDA build; Triton's runs on a GPU, or
# on the CPU under its interpreter (see conftest.py).
REGISTRATIONS = [
    pytest.param(("resnet_fast", "cpu"), id="cpu"),
    pytest.param(("resnet_fast", "cuda"), id="cuda", marks=pytest.mark.cuda),
    pytest.param(("resnet_fast_triton", TRITON_DEVICE), id="triton", marks=pytest.mark.triton),
    pytest.param(("resnet_fast_cuda_emulated", "cpu"), id="cuda_emulated",
                 marks=pytest.mark.cuda_emulated),
]  # fmt: skip


def _namespace(name: str):
    if name == "resnet_fast_triton":
        import resnet_fast.triton.backend  # noqa: F401  (imports triton: registers the namespace)
    return getattr(torch.ops, name)


def test_every_backend_declares_the_same_schemas():
    triton_ops = _namespace("resnet_fast_triton") if TRITON_SKIP_REASON is None else None
    built = resnet_fast.build_info()["backends"]
    for name in contract.OP_NAMES:
        qualified = f"resnet_fast::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU"), name
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA")
        assert has_cuda == ("cuda" in built), name
        schema = str(getattr(ops, name).default._schema)
        if EMULATION_SKIP_REASON is None:  # the CUDA kernels on CPU tensors
            emulated_schema = str(
                getattr(torch.ops.resnet_fast_cuda_emulated, name).default._schema
            )
            assert emulated_schema == schema.replace("resnet_fast::", "resnet_fast_cuda_emulated::")
            assert torch._C._dispatch_has_kernel_for_dispatch_key(
                f"resnet_fast_cuda_emulated::{name}", "CPU"
            )
        if triton_ops is None:
            continue
        assert str(getattr(triton_ops, name).default._schema) == schema.replace(
            "resnet_fast::", "resnet_fast_triton::"
        )
        for key in ("CPU", "CUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(
                f"resnet_fast_triton::{name}", key
            )


OPCHECK_CASES = ["train", "eval", "train_no_affine_no_stats", "channels_last", "float32"]


@pytest.mark.parametrize("registration", REGISTRATIONS)
@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck(case, registration, gen):
    """Schema, fake kernel (against the real kernel's outputs), autograd
    registration and AOT dispatch of every op, on each registration."""
    namespace, device = registration
    with emulated(SMALL) if namespace == "resnet_fast_cuda_emulated" else contextlib.nullcontext():
        _opcheck_every_op(_namespace(namespace), case, device, gen)


def _opcheck_every_op(o, case, device, gen):
    dtype = torch.float32 if case == "float32" else torch.float64
    layout = "channels_last" if case == "channels_last" else "contiguous"
    x, r, w, b, rm, rv = _bn_inputs(gen, layout, dtype=dtype, device=device)
    g = make_activation(x.shape, layout, dtype, gen, device)
    training = case != "eval"
    if case == "train_no_affine_no_stats":
        w = b = rm = rv = None
    for relu in (True, False):
        torch.library.opcheck(o.bn_act_fwd, (x, w, b, rm, rv, training, 0.1, 1e-5, relu))
        torch.library.opcheck(o.bn_add_act_fwd, (x, r, w, b, rm, rv, training, 0.1, 1e-5, relu))
        _, mean, invstd = o.bn_act_fwd(x, w, b, rm, rv, training, 0.1, 1e-5, relu)
        torch.library.opcheck(o.bn_act_bwd, (g, x, w, b, mean, invstd, training, relu))
        torch.library.opcheck(o.bn_add_act_bwd, (g, x, r, w, b, mean, invstd, training, relu))
        # The stage ops.
        sum_g, sum_gx = o.bn_act_bwd_reduce(g, x, w, b, mean, invstd, relu)
        count = x.numel() // x.shape[1]
        torch.library.opcheck(o.bn_apply, (x, None, w, b, mean, invstd, relu))
        torch.library.opcheck(o.bn_apply, (x, r, w, b, mean, invstd, relu))
        torch.library.opcheck(o.bn_act_bwd_reduce, (g, x, w, b, mean, invstd, relu))
        torch.library.opcheck(o.bn_add_act_bwd_reduce, (g, x, r, w, b, mean, invstd, relu))
        torch.library.opcheck(
            o.bn_bwd_apply, (g, x, w, b, mean, invstd, sum_g / count, sum_gx / count, relu)
        )
    torch.library.opcheck(o.bn_stats, (x,))
    torch.library.opcheck(o.add_relu_fwd, (x, r))
    torch.library.opcheck(o.add_relu_bwd, (g, o.add_relu_fwd(x, r)))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compile_fullgraph_matches_eager(layout, device, gen):
    x, r, w, b, rm, rv = _bn_inputs(
        gen, layout, shape=(4, 6, 5, 5), dtype=torch.float32, device=device
    )
    stats_c = assert_compiled_tail_matches_eager(x, r, w, b, rm, rv)
    assert not torch.equal(stats_c[0], rm), "running stats were not updated under compile"


def test_compile_eval_conv_bn_relu(gen):
    torch._dynamo.reset()
    x = make_activation((2, 4, 6, 6), "contiguous", torch.float32, gen)
    conv_w = make_activation((8, 4, 3, 3), "contiguous", torch.float32, gen)
    w, b, rm, rv = channel_params(8, gen)

    def fn(x):
        return RF.conv_bn_relu(x, conv_w, rm, rv, w, b, training=False, padding=1)

    assert_close(torch.compile(fn, fullgraph=True)(x), fn(x), torch.float32, "out")


def test_running_stats_version_counter_bumps(device, gen):
    x, _, w, b, rm, rv = _bn_inputs(gen, dtype=torch.float32, device=device)
    v_mean, v_var = rm._version, rv._version
    RF.batch_norm_relu(x, rm, rv, w, b, training=True)
    assert rm._version > v_mean and rv._version > v_var
