"""Fuzz of the torch.ops.resnet_fast op surface (hypothesis).

Every op is called with random valid and invalid arguments, on the C++
kernels of the CPU (torch.ops.resnet_fast) and, where the test-only library
is built, on the CUDA kernels run through the CUDA emulation
(torch.ops.resnet_fast_cuda_emulated, the same host code and checks): shapes
(empty batches and maps included), strides (channels_last, sliced, expanded),
storage offsets, dtypes, optional arguments (None weight/bias/running stats)
and flags. Each call either matches resnet_fast.reference in float64 (the
stage ops: their pure-PyTorch twins, the reference backend's ops, in float64)
with outputs of the expected shapes and dtypes, or raises a clean
RuntimeError/ValueError/TypeError whose message names the bad argument,
leaving the running statistics as they were. A crash or a read out of bounds
shows up here as a wrong value, and under tools/sanitize_ops.py (which runs
this module under AddressSanitizer and valgrind) as a report.

The default run is a short deterministic slice (derandomize=True). The long
run draws fresh examples:

    RESNET_FAST_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_ops.py -q
"""

import math
import os

import pytest
import torch
from emulation_support import SMALL, emulated
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from triton_support import TRITON_SKIP_REASON

from resnet_fast import reference
from resnet_fast._ops.backends import REFERENCE

ops = torch.ops.resnet_fast
NATIVE = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda_emulated", id="cuda_emulated", marks=pytest.mark.cuda_emulated),
]


@pytest.fixture(params=NATIVE)
def native_ops(request):
    """The op namespace of the C++ kernels under test (cuda_emulated: the
    CUDA kernels on CPU tensors; skipped where that library is not built)."""
    if request.param == "cuda_emulated":
        with emulated(SMALL) as emulated_ops:
            yield emulated_ops
    else:
        yield ops


# The oracle's statistics of an empty batch: NaN, with PyTorch's warning.
pytestmark = pytest.mark.filterwarnings(r"ignore:var_mean\(\). degrees of freedom")

LONG = int(os.environ.get("RESNET_FAST_FUZZ_EXAMPLES", "0"))
CLEAN_ERRORS = (RuntimeError, ValueError, TypeError)


def fuzz_settings(default: int):
    """``default`` deterministic examples, or RESNET_FAST_FUZZ_EXAMPLES random ones."""
    return settings(
        max_examples=LONG or default,
        derandomize=not LONG,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "w_slice", "c_slice", "offset", "expanded"]
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def acc_of(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# --- tensors -------------------------------------------------------------------


def make(shape, dtype, layout, g):
    """A random tensor of ``shape`` laid out as ``layout`` (views, offsets)."""
    shape = tuple(shape)

    def randn(s):
        return torch.randn(s, generator=g, dtype=torch.float64).to(dtype)

    if len(shape) != 4 and layout in ("channels_last", "w_slice", "c_slice", "expanded"):
        layout = "offset"
    if layout == "channels_last":
        return randn(shape).contiguous(memory_format=torch.channels_last)
    if layout == "w_slice":
        n, c, h, w = shape
        return randn((n, c, h, 2 * w))[..., ::2]
    if layout == "c_slice":
        n, c, h, w = shape
        return randn((n, c + 2, h, w))[:, 1 : c + 1]
    if layout == "offset":
        numel = math.prod(shape)
        return randn((numel + 3,))[3:].view(shape)
    if layout == "expanded":  # read-only operand broadcast along N (stride 0)
        return randn((1, *shape[1:])).expand(shape)
    return randn(shape)


def vector(c, dtype, layout, g, positive=False):
    """A [c] vector: contiguous, strided or at a storage offset."""
    v = torch.rand(c, generator=g, dtype=torch.float64) + 0.5 if positive else None
    if v is None:
        v = torch.randn(c, generator=g, dtype=torch.float64)
    v = v.to(dtype)
    if layout == "strided":
        big = torch.zeros(2 * c, dtype=dtype)
        big[::2] = v
        return big[::2]
    if layout == "offset":
        big = torch.zeros(c + 1, dtype=dtype)
        big[1:] = v
        return big[1:]
    return v


def loosest(*dtypes):
    """The dtype of the largest tolerance: a result rounded to any of them."""
    return max(dtypes, key=lambda d: TOL[d])


def close(actual, expected, dtype, what):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tol = TOL[dtype]
    a, e = actual.double(), expected.double()
    assert torch.allclose(
        a, e, rtol=tol, atol=tol * (1 + e.abs().amax().item() if e.numel() else 1)
    ), f"{what}: max abs error {(a - e).abs().max().item():.3g}"


@st.composite
def bn_case(draw, dtypes=DTYPES, max_c=5):
    """The inputs of one BN call: shape, dtype, layouts, optional arguments."""
    shape = draw(
        st.tuples(st.integers(0, 3), st.integers(0, max_c), st.integers(0, 3), st.integers(0, 3))
    )
    dtype = draw(st.sampled_from(dtypes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    c = shape[1]
    vlayouts = st.sampled_from(["contiguous", "strided", "offset"])
    pdtype = draw(st.sampled_from([dtype, torch.float32]))
    case = dict(
        shape=shape,
        dtype=dtype,
        input=make(shape, dtype, draw(st.sampled_from(LAYOUTS)), g),
        residual=make(shape, dtype, draw(st.sampled_from(LAYOUTS)), g),
        grad=make(shape, dtype, draw(st.sampled_from(LAYOUTS)), g),
        weight=vector(c, pdtype, draw(vlayouts), g) if draw(st.booleans()) else None,
        bias=vector(c, pdtype, draw(vlayouts), g) if draw(st.booleans()) else None,
        training=draw(st.booleans()),
        relu=draw(st.booleans()),
        momentum=draw(st.sampled_from([0.1, 0.0, 1.0, 0.5])),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.5])),
    )
    sdtype = draw(st.sampled_from([torch.float32, torch.float64, dtype]))
    if draw(st.booleans()) or not case["training"]:
        case["running_mean"] = vector(c, sdtype, draw(vlayouts), g)
        case["running_var"] = vector(c, sdtype, draw(vlayouts), g, positive=True)
    else:
        case["running_mean"] = case["running_var"] = None
    return case


def count_of(case):
    n, c, h, w = case["shape"]
    return n * h * w


def saved_stats(case):
    """(save_mean, save_invstd) as the forward ops return them, from float64."""
    x = case["input"].double()
    acc = acc_of(case["dtype"])
    if case["training"]:
        if x.numel() == 0:  # empty batch or no channels
            mean = torch.zeros(case["shape"][1], dtype=torch.float64)
            var = torch.zeros_like(mean)
        else:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    else:
        mean, var = case["running_mean"].double(), case["running_var"].double()
    return mean.clone(), (1 / torch.sqrt(var + case["eps"])).to(acc)


# --- defects -----------------------------------------------------------------
# name: (applies to the case?, mutation, the argument the message must name).
# Each one is invalid for every op that takes the argument.


def _set(**kw):
    return lambda case: case.update(kw)


def _c(case):
    return case["shape"][1]


DEFECTS = {
    "input_3d": (lambda k: True, lambda k: k.update(input=k["input"].flatten(2)), "input"),
    "input_int": (lambda k: True, lambda k: k.update(input=k["input"].to(torch.int32)), "input"),
    "weight_short": (lambda k: True, lambda k: k.update(weight=torch.ones(_c(k) + 1)), "weight"),
    "bias_short": (lambda k: _c(k) > 1, lambda k: k.update(bias=torch.zeros(1)), "bias"),
    "bias_2d": (lambda k: True, lambda k: k.update(bias=torch.zeros(_c(k), 1)), "bias"),
    "weight_int": (lambda k: True, lambda k: k.update(weight=torch.ones(_c(k), dtype=torch.int64)), "weight"),
    "weight_meta": (lambda k: True, lambda k: k.update(weight=torch.ones(_c(k), device="meta")), "weight"),
    "residual_shape": (lambda k: True, lambda k: k.update(residual=k["residual"][:, :, :, :0] if k["shape"][3] else torch.zeros(1, 1, 1, 1, dtype=k["dtype"])), "residual"),
    "residual_dtype": (lambda k: True, lambda k: k.update(residual=k["residual"].to(torch.float64 if k["dtype"] != torch.float64 else torch.float32)), "residual"),
    "grad_shape": (lambda k: True, lambda k: k.update(grad=k["grad"].sum(0, keepdim=True).expand(k["shape"][0] + 1, *k["shape"][1:])), "grad"),
    "grad_dtype": (lambda k: True, lambda k: k.update(grad=k["grad"].to(torch.float64 if k["dtype"] != torch.float64 else torch.float16)), "grad"),
}  # fmt: skip

FORWARD_DEFECTS = {
    "running_mean_short": (lambda k: True, lambda k: k.update(running_mean=torch.zeros(_c(k) + 2), running_var=torch.ones(_c(k) + 2)), "running_mean"),
    "running_var_missing": (lambda k: k["running_mean"] is not None, lambda k: k.update(running_var=None), "running_mean and running_var"),
    "eval_without_stats": (lambda k: True, lambda k: k.update(training=False, running_mean=None, running_var=None), "running_mean"),
    "running_mean_is_running_var": (lambda k: _c(k) > 0, lambda k: k.update(training=True, running_mean=k["running_var"] if k["running_var"] is not None else torch.ones(_c(k)), running_var=k["running_var"] if k["running_var"] is not None else None), "running_"),
    "running_var_expanded": (lambda k: _c(k) > 1, lambda k: k.update(training=True, running_mean=torch.zeros(_c(k)), running_var=torch.ones(1).expand(_c(k))), "running_var"),
    "running_mean_is_weight": (lambda k: _c(k) > 0, lambda k: k.update(training=True, weight=torch.ones(_c(k)), running_mean=None, running_var=torch.ones(_c(k))), "running_mean"),
    "running_mean_views_input": (lambda k: _c(k) > 0 and k["input"].numel() >= _c(k) and k["dtype"] in (torch.float32, torch.float64), lambda k: k.update(training=True, input=k["input"].contiguous(), running_mean=None, running_var=torch.ones(_c(k))), "running_mean"),
    "eps_nan": (lambda k: True, lambda k: k.update(eps=math.nan), "eps"),
    "eps_negative": (lambda k: True, lambda k: k.update(eps=-1e-5), "eps"),
    "eps_inf": (lambda k: True, lambda k: k.update(eps=math.inf), "eps"),
    "momentum_nan": (lambda k: True, lambda k: k.update(momentum=math.nan), "momentum"),
    "momentum_negative": (lambda k: True, lambda k: k.update(momentum=-0.1), "momentum"),
}  # fmt: skip

STATS_DEFECTS = {
    "mean_float32": (lambda k: True, lambda k: k.update(mean=k["mean"].float()), "mean"),
    "mean_short": (lambda k: True, lambda k: k.update(mean=torch.zeros(_c(k) + 1, dtype=torch.float64)), "mean"),
    "invstd_wrong_dtype": (lambda k: True, lambda k: k.update(invstd=k["invstd"].to(torch.float16)), "invstd"),
    "invstd_2d": (lambda k: True, lambda k: k.update(invstd=k["invstd"][None]), "invstd"),
}  # fmt: skip


def _fix_aliases(case):
    """Completes the aliasing defects that need the case's own tensors."""
    if case.get("_alias") == "running_mean_is_weight":
        case["running_mean"] = case["weight"]
    if case.get("_alias") == "running_mean_views_input":
        case["running_mean"] = case["input"].view(-1)[: _c(case)]
    if case.get("_alias") == "running_mean_is_running_var" and case["running_var"] is None:
        case["running_var"] = case["running_mean"]


def draw_defect(data, case, table):
    """Applies one random defect of ``table`` (or none: a valid call)."""
    names = [n for n, (ok, _, _) in table.items() if ok(case)]
    if data.draw(st.integers(0, 9), label="valid") < 5:  # about half the calls are valid
        return None
    name = data.draw(st.sampled_from(names), label="defect")
    _, mutate, argument = table[name]
    mutate(case)
    case["_alias"] = name
    _fix_aliases(case)
    return argument


def expect_refusal(call, argument, running):
    """The call raises a clean error naming ``argument``; running stats kept."""
    event(f"refused, names {argument}")  # --hypothesis-show-statistics counts them
    before = [t.clone() if t is not None and t.device.type != "meta" else None for t in running]
    with pytest.raises(CLEAN_ERRORS) as info:
        call()
    names = argument if isinstance(argument, tuple) else (argument,)
    assert any(n in str(info.value) for n in names), (
        f"the message does not name {' or '.join(names)}: {info.value}"
    )
    for t, t0 in zip(running, before, strict=True):
        if t0 is not None:
            assert torch.equal(t, t0), "running statistics changed by a refused call"


# --- forward -------------------------------------------------------------------


def _forward_table(residual):
    table = {**FORWARD_DEFECTS}
    for name in (
        "input_3d",
        "input_int",
        "weight_short",
        "bias_short",
        "bias_2d",
        "weight_int",
        "weight_meta",
    ):
        table[name] = DEFECTS[name]
    if residual:
        table["residual_shape"] = DEFECTS["residual_shape"]
        table["residual_dtype"] = DEFECTS["residual_dtype"]
    return table


def _forward_reference(case, residual):
    rm = case["running_mean"]
    rm64 = rm.double().clone() if rm is not None else None
    rv64 = case["running_var"].double().clone() if rm is not None else None
    w, b = case["weight"], case["bias"]
    out = reference.batch_norm_act(
        case["input"].double(), rm64, rv64,
        w.double() if w is not None else None, b.double() if b is not None else None,
        case["training"], case["momentum"], case["eps"], case["relu"],
        case["residual"].double() if residual else None,
    )  # fmt: skip
    return out, rm64, rv64


@fuzz_settings(40)
@given(data=st.data(), case=bn_case(), residual=st.booleans())
def test_bn_forward_ops(native_ops, data, case, residual):
    argument = draw_defect(data, case, _forward_table(residual))
    args = (case["weight"], case["bias"], case["running_mean"], case["running_var"], case["training"], case["momentum"], case["eps"], case["relu"])  # fmt: skip

    def call():
        if residual:
            return native_ops.bn_add_act_fwd(case["input"], case["residual"], *args)
        return native_ops.bn_act_fwd(case["input"], *args)

    running = [case["running_mean"], case["running_var"]]
    # The oracle's running statistics start from the values before the call.
    rm0 = case["running_mean"].clone() if case["running_mean"] is not None else None
    rv0 = case["running_var"].clone() if case["running_var"] is not None else None
    if argument is not None:
        return expect_refusal(call, argument, running)
    if case["training"] and count_of(case) == 1 and _c(case) > 0:
        return expect_refusal(call, "more than 1 value per channel", running)
    event("valid")
    out, save_mean, save_invstd = call()
    expected, rm64, rv64 = _forward_reference(
        {**case, "running_mean": rm0, "running_var": rv0}, residual
    )
    c, acc = _c(case), acc_of(case["dtype"])
    assert out.dtype == case["dtype"] and save_mean.dtype == torch.float64
    assert save_mean.shape == (c,) and save_invstd.shape == (c,) and save_invstd.dtype == acc
    close(out, expected, case["dtype"], "out")
    if count_of(case) > 0 or not case["training"]:
        mean, invstd = saved_stats(case)
        close(save_mean, mean, case["dtype"] if case["training"] else torch.float64, "save_mean")
        close(save_invstd, invstd, acc, "save_invstd")
    if rm64 is not None:
        rdt = case["running_mean"].dtype
        close(
            case["running_mean"],
            rm64.to(rdt),
            loosest(rdt, case["dtype"]),
            "running_mean",
        )
        close(
            case["running_var"],
            rv64.to(rdt),
            loosest(rdt, case["dtype"]),
            "running_var",
        )


# --- backward ------------------------------------------------------------------


def _backward_table(residual):
    table = {n: d for n, d in DEFECTS.items() if residual or not n.startswith("residual")}
    table["save_mean_float32"] = (
        lambda k: True,
        lambda k: k.update(mean=k["mean"].float()),
        "save_mean",
    )
    table["save_mean_short"] = (
        lambda k: True,
        lambda k: k.update(mean=torch.zeros(_c(k) + 1, dtype=torch.float64)),
        "save_mean",
    )
    table["save_invstd_dtype"] = (
        lambda k: True,
        lambda k: k.update(invstd=k["invstd"].to(torch.float16)),
        "save_invstd",
    )
    return table  # fmt: skip


def _backward_reference(case, residual):
    """(grad_input, grad_residual, grad_weight, grad_bias) by float64 autograd."""
    x = case["input"].double().requires_grad_()
    r = case["residual"].double().requires_grad_() if residual else None
    # Without weight / bias the ops still return their gradients (those of a
    # weight of ones and a bias of zeros); autograd drops them.
    c = _c(case)
    w = (
        case["weight"].double()
        if case["weight"] is not None
        else torch.ones(c, dtype=torch.float64)
    )
    b = case["bias"].double() if case["bias"] is not None else torch.zeros(c, dtype=torch.float64)
    w, b = w.requires_grad_(), b.requires_grad_()
    if case["training"]:
        out = reference.batch_norm_act(x, None, None, w, b, True, 0.0, case["eps"], case["relu"], r)
    else:
        rm, rv = case["running_mean"].double(), case["running_var"].double()
        out = reference.batch_norm_act(x, rm, rv, w, b, False, 0.0, case["eps"], case["relu"], r)
    leaves = [t for t in (x, r, w, b) if t is not None]
    grads = torch.autograd.grad(out, leaves, case["grad"].double(), allow_unused=True)
    it = iter(grads)
    gx = next(it)
    gr = next(it) if residual else None
    gw, gb = next(it), next(it)
    return gx, gr, gw, gb


@fuzz_settings(40)
@given(data=st.data(), case=bn_case(), residual=st.booleans())
def test_bn_backward_ops(native_ops, data, case, residual):
    if case["training"] and count_of(case) == 1:
        case["training"] = False
        case["running_mean"] = vector(_c(case), torch.float32, "contiguous", torch.Generator())
        case["running_var"] = case["running_mean"].abs() + 0.5
    case["mean"], case["invstd"] = saved_stats(case)
    argument = draw_defect(data, case, _backward_table(residual))

    def call():
        tail = (case["weight"], case["bias"], case["mean"], case["invstd"], case["training"], case["relu"])  # fmt: skip
        if residual:
            return native_ops.bn_add_act_bwd(case["grad"], case["input"], case["residual"], *tail)
        return native_ops.bn_act_bwd(case["grad"], case["input"], *tail)

    if argument is not None:
        return expect_refusal(call, argument, [])
    event("valid")
    result = call()
    gx, gr, gw, gb = _backward_reference(case, residual)
    grad_input, *rest = result
    grad_residual = rest.pop(0) if residual else None
    grad_weight, grad_bias = rest
    dtype, acc = case["dtype"], acc_of(case["dtype"])
    assert grad_input.dtype == dtype and grad_weight.shape == (_c(case),) == grad_bias.shape
    w, b = case["weight"], case["bias"]
    assert grad_weight.dtype == (w.dtype if w is not None else acc)
    assert grad_bias.dtype == (b.dtype if b is not None else acc)
    # Sums over N*H*W of rounded terms: the tolerance of the parameters' dtype
    # scaled by the number of terms.
    close(grad_input, gx, dtype, "grad_input")
    if residual:
        close(grad_residual, gr, dtype, "grad_residual")
    close(grad_weight, gw, loosest(dtype, grad_weight.dtype), "grad_weight")
    close(grad_bias, gb, loosest(dtype, grad_bias.dtype), "grad_bias")


# --- stage ops -----------------------------------------------------------------


def _stage_case(case):
    if case["running_mean"] is None:
        g = torch.Generator().manual_seed(1)
        case["running_mean"] = vector(_c(case), torch.float32, "contiguous", g)
        case["running_var"] = vector(_c(case), torch.float32, "contiguous", g, positive=True)
    training = case["training"]
    case["training"] = False  # statistics given: those of the running buffers
    case["mean"], case["invstd"] = saved_stats(case)
    case["training"] = training
    acc = acc_of(case["dtype"])
    g = torch.Generator().manual_seed(2)
    case["mean_g"] = vector(_c(case), acc, "contiguous", g)
    case["mean_gx"] = vector(_c(case), acc, "contiguous", g)


STAGE_OPS = ["bn_stats", "bn_apply", "bn_act_bwd_reduce", "bn_add_act_bwd_reduce", "bn_bwd_apply"]


def _f64(t):
    return t.double() if t is not None else None


@fuzz_settings(80)  # five ops
@given(data=st.data(), case=bn_case(), op=st.sampled_from(STAGE_OPS), residual=st.booleans())
def test_bn_stage_ops(native_ops, data, case, op, residual):
    _stage_case(case)
    table = {n: d for n, d in DEFECTS.items() if n in ("input_3d", "input_int")}
    if op != "bn_stats":
        table.update(STATS_DEFECTS)
        table.update(
            {
                n: DEFECTS[n]
                for n in ("weight_short", "bias_short", "bias_2d", "weight_int", "weight_meta")
            }
        )
    if op in ("bn_act_bwd_reduce", "bn_add_act_bwd_reduce", "bn_bwd_apply"):
        table.update({n: DEFECTS[n] for n in ("grad_shape", "grad_dtype")})
    if op == "bn_add_act_bwd_reduce" or (op == "bn_apply" and residual):
        table.update({n: DEFECTS[n] for n in ("residual_shape", "residual_dtype")})
    if op == "bn_bwd_apply":
        table["mean_g_short"] = (
            lambda k: True,
            lambda k: k.update(mean_g=torch.zeros(_c(k) + 1)),
            "mean_g",
        )
        table["mean_gx_dtype"] = (lambda k: True, lambda k: k.update(mean_gx=k["mean_gx"].to(torch.float16)), "mean_gx")  # fmt: skip
    argument = draw_defect(data, case, table)
    k = case
    wb = (k["weight"], k["bias"], k["mean"], k["invstd"])
    o = native_ops
    calls = {
        "bn_stats": lambda: o.bn_stats(k["input"]),
        "bn_apply": lambda: o.bn_apply(k["input"], k["residual"] if residual else None, *wb, k["relu"]),
        "bn_act_bwd_reduce": lambda: o.bn_act_bwd_reduce(k["grad"], k["input"], *wb, k["relu"]),
        "bn_add_act_bwd_reduce": lambda: o.bn_add_act_bwd_reduce(k["grad"], k["input"], k["residual"], *wb, k["relu"]),
        "bn_bwd_apply": lambda: o.bn_bwd_apply(k["grad"], k["input"], *wb, k["mean_g"], k["mean_gx"], k["relu"]),
    }  # fmt: skip
    if argument is not None:
        return expect_refusal(calls[op], argument, [])
    event("valid")
    result = calls[op]()
    T = REFERENCE.ops
    x64, w64, b64, g64, r64 = (_f64(k[n]) for n in ("input", "weight", "bias", "grad", "residual"))
    mean, invstd64 = k["mean"], k["invstd"].double()
    dtype, acc, c = k["dtype"], acc_of(k["dtype"]), _c(k)
    if op == "bn_stats":
        mean_e, var_e = T.bn_stats(x64)
        assert result[0].dtype == result[1].dtype == torch.float64
        close(result[0], mean_e, dtype, "mean")
        close(result[1], var_e, dtype, "var")
    elif op == "bn_apply":
        expected = T.bn_apply(x64, r64 if residual else None, w64, b64, mean, invstd64, k["relu"])
        assert result.dtype == dtype
        close(result, expected, dtype, "out")
    elif op == "bn_bwd_apply":
        expected = T.bn_bwd_apply(g64, x64, w64, b64, mean, invstd64, _f64(k["mean_g"]), _f64(k["mean_gx"]), k["relu"])  # fmt: skip
        assert result.dtype == dtype
        close(result, expected, dtype, "grad_input")
    else:
        res = r64 if op == "bn_add_act_bwd_reduce" else None
        if res is None:
            sum_g, sum_gx = T.bn_act_bwd_reduce(g64, x64, w64, b64, mean, invstd64, k["relu"])
        else:
            sum_g, sum_gx, g_res = T.bn_add_act_bwd_reduce(
                g64, x64, res, w64, b64, mean, invstd64, k["relu"]
            )
        assert result[0].dtype == result[1].dtype == acc and result[0].shape == (c,)
        close(result[0], sum_g, dtype, "sum_g")
        close(result[1], sum_gx, dtype, "sum_gx")
        if res is not None:
            assert result[2].dtype == dtype
            close(result[2], g_res, dtype, "grad_residual")


# --- add_relu ------------------------------------------------------------------


@st.composite
def elementwise_case(draw):
    rank = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from(DTYPES))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    a = make(shape, dtype, draw(st.sampled_from(LAYOUTS)), g)
    b = make(shape, dtype, draw(st.sampled_from(LAYOUTS)), g)
    defect = draw(st.sampled_from([None, None, None, "shape", "dtype", "int", "meta"]))
    if defect == "shape":
        b = torch.zeros((*shape, 2), dtype=dtype)
    elif defect == "dtype":
        b = b.to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif defect == "int":
        a, b = a.to(torch.int32), b.to(torch.int32)
    elif defect == "meta":
        b = torch.zeros(shape, dtype=dtype, device="meta")
    return a, b, dtype, defect


def check_add_relu(fwd, bwd, a, b, dtype, defect):
    if defect is not None:
        # An integer input is named first; else the second operand.
        expect_refusal(lambda: fwd(a, b), "input" if defect == "int" else "other", [])
        expect_refusal(lambda: bwd(b, a), "output" if defect == "int" else "grad_out", [])
        return
    event("valid")
    out = fwd(a, b)
    assert out.dtype == dtype
    close(out, reference.add_relu(a.double(), b.double()), dtype, "add_relu")
    grad = bwd(b, out)
    assert grad.dtype == dtype and grad.shape == out.shape
    expected = torch.where(out.double() > 0, b.double(), torch.zeros((), dtype=torch.float64))
    close(grad, expected, dtype, "add_relu_bwd")


@fuzz_settings(40)
@given(case=elementwise_case())
def test_add_relu_ops(native_ops, case):
    check_add_relu(native_ops.add_relu_fwd, native_ops.add_relu_bwd, *case)


# --- Winograd convolution (CPU) ---------------------------------------------------

WINOGRAD_DEFECTS = {
    "layout": "input",  # not dense channels_last
    "half": "input",
    "tiles_channels": "weight_tiles",
    "tiles_dtype": "weight_tiles",
    "bias_short": "bias",
    "residual_shape": "residual",
    "residual_layout": "residual",
    "weight_5x5": "weight",
}


@st.composite
def winograd_case(draw):
    shape = (draw(st.integers(0, 3)), draw(st.integers(0, 9)), draw(st.integers(1, 11)), draw(st.integers(1, 11)))  # fmt: skip
    c_out = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = make(shape, dtype, "channels_last", g)
    weight = make(
        (c_out, shape[1], 3, 3), dtype, draw(st.sampled_from(["contiguous", "offset"])), g
    )
    bias = vector(c_out, dtype, draw(st.sampled_from(["contiguous", "strided", "offset"])), g)
    residual = make((shape[0], c_out, *shape[2:]), dtype, "channels_last", g)
    case = dict(
        x=x,
        weight=weight,
        bias=bias if draw(st.booleans()) else None,
        residual=residual if draw(st.booleans()) else None,
        relu=draw(st.booleans()),
        dtype=dtype,
    )
    return case, draw(st.sampled_from([None] * 8 + list(WINOGRAD_DEFECTS)))


@fuzz_settings(60)
@given(data=winograd_case())
def test_winograd_ops(data):
    case, defect = data
    x, weight, bias, residual = case["x"], case["weight"], case["bias"], case["residual"]
    if defect == "weight_5x5":
        expect_refusal(
            lambda: ops.winograd_weight(weight.repeat(1, 1, 2, 2)[..., :5, :5]), "weight", []
        )
        return
    tiles = ops.winograd_weight(weight)
    assert tiles.shape == (36, weight.shape[1], weight.shape[0]) and tiles.dtype == case["dtype"]
    if defect == "layout" and x.dim() == 4 and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
        x = x.contiguous()
    elif defect == "half":
        x = x.half()
    elif defect == "tiles_channels":
        tiles = (
            tiles[:, :-1]
            if tiles.shape[1]
            else torch.zeros(36, 1, tiles.shape[2], dtype=tiles.dtype)
        )
    elif defect == "tiles_dtype":
        tiles = tiles.to(torch.float32 if case["dtype"] == torch.float64 else torch.float64)
    elif defect == "bias_short":
        bias = torch.zeros(weight.shape[0] + 1, dtype=case["dtype"])
    elif defect == "residual_shape":  # one image too many
        residual = make((x.shape[0] + 1, weight.shape[0], *x.shape[2:]), case["dtype"], "channels_last", torch.Generator())  # fmt: skip
    elif defect == "residual_layout" and residual is not None and residual.shape[1] > 1:
        if residual.shape[2] * residual.shape[3] > 1:
            residual = residual.contiguous()
    refused = defect is not None and not (
        (defect == "layout" and x.is_contiguous(memory_format=torch.channels_last))
        or (defect == "residual_layout" and (residual is None or residual.is_contiguous(memory_format=torch.channels_last)))
    )  # fmt: skip
    call = lambda: ops.winograd_conv3x3(x, tiles, bias, residual, case["relu"])  # noqa: E731
    if refused:
        expect_refusal(call, WINOGRAD_DEFECTS[defect], [])
        return
    event("valid")
    out = call()
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == case["dtype"]
    n, _, h, w = x.shape
    if x.shape[1]:
        expected = torch.nn.functional.conv2d(x.double(), weight.double(), _f64(bias), padding=1)
    else:  # no input channels (which F.conv2d does not take): the bias alone
        bias64 = torch.zeros(weight.shape[0]) if bias is None else _f64(bias)
        expected = bias64.view(1, -1, 1, 1).expand(n, -1, h, w)
    if residual is not None:
        expected = expected + residual.double()
    if case["relu"]:
        expected = expected.relu()
    close(out, expected, case["dtype"], "winograd_conv3x3")


# --- Triton ops (TRITON_INTERPRET=1 on a machine without a GPU) ----------------

triton_only = pytest.mark.skipif(TRITON_SKIP_REASON is not None, reason=str(TRITON_SKIP_REASON))
TRITON_BN_OPS = ["stats", "act_fwd", "add_act_fwd", "act_bwd", "add_act_bwd"]


@triton_only
@pytest.mark.triton
@fuzz_settings(50)  # five ops
@given(
    data=st.data(),
    case=bn_case(dtypes=[torch.float64, torch.float32], max_c=3),
    op=st.sampled_from(TRITON_BN_OPS),
)
def test_triton_bn_ops(data, case, op):
    import resnet_fast.triton.backend  # noqa: F401  (registers the ops)

    if case["training"] and count_of(case) == 1:
        case["training"] = False
    _stage_case(case)
    residual = op.startswith("add")
    table = {n: d for n, d in DEFECTS.items() if n in ("input_3d", "input_int")}
    if op != "stats":
        table.update(
            {
                n: DEFECTS[n]
                for n in ("weight_short", "bias_short", "bias_2d", "weight_int", "weight_meta")
            }
        )
        # The apply (a stage op) names its statistics mean / invstd.
        saved = "" if op.endswith("fwd") else "save_"
        table["mean_float32"] = (
            lambda k: True,
            lambda k: k.update(mean=k["mean"].float()),
            f"{saved}mean",
        )
        table["invstd_2d"] = (
            lambda k: True,
            lambda k: k.update(invstd=k["invstd"][None]),
            f"{saved}invstd",
        )
    if residual:
        table.update({n: DEFECTS[n] for n in ("residual_shape", "residual_dtype")})
    if op.endswith("bwd"):
        table.update({n: DEFECTS[n] for n in ("grad_shape", "grad_dtype")})
    argument = draw_defect(data, case, table)
    k, t = case, torch.ops.resnet_fast_triton
    wb = (k["weight"], k["bias"], k["mean"], k["invstd"], k["training"], k["relu"])
    calls = {
        "stats": lambda: t.bn_stats(k["input"]),
        "act_fwd": lambda: t.bn_apply(k["input"], None, *wb[:4], k["relu"]),
        "add_act_fwd": lambda: t.bn_apply(k["input"], k["residual"], *wb[:4], k["relu"]),
        "act_bwd": lambda: t.bn_act_bwd(k["grad"], k["input"], *wb),
        "add_act_bwd": lambda: t.bn_add_act_bwd(k["grad"], k["input"], k["residual"], *wb),
    }
    if argument is not None:
        return expect_refusal(calls[op], argument, [])
    event("valid")
    result = calls[op]()
    # The C++ ops are the oracle's equals (checked against it above): the
    # same call on them, compared in the Triton op's dtype.
    cpp = {
        "stats": lambda: ops.bn_stats(k["input"]),
        "act_fwd": lambda: ops.bn_apply(k["input"], None, *wb[:4], k["relu"]),
        "add_act_fwd": lambda: ops.bn_apply(k["input"], k["residual"], *wb[:4], k["relu"]),
        "act_bwd": lambda: ops.bn_act_bwd(k["grad"], k["input"], *wb),
        "add_act_bwd": lambda: ops.bn_add_act_bwd(k["grad"], k["input"], k["residual"], *wb),
    }[op]()
    result = result if isinstance(result, (tuple, list)) else [result]
    cpp = cpp if isinstance(cpp, (tuple, list)) else [cpp]
    for i, (a, e) in enumerate(zip(result, cpp, strict=True)):
        assert a.dtype == e.dtype and a.shape == e.shape, (
            f"output {i}: {a.dtype}{tuple(a.shape)} != {e.dtype}{tuple(e.shape)}"
        )
        close(a, e, k["dtype"], f"output {i}")


@triton_only
@pytest.mark.triton
@fuzz_settings(20)
@given(case=elementwise_case())
def test_triton_add_relu_ops(case):
    import resnet_fast.triton.backend  # noqa: F401

    t = torch.ops.resnet_fast_triton
    check_add_relu(t.add_relu_fwd, t.add_relu_bwd, *case)


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = draw(st.integers(1, 3))
    shape = (draw(st.integers(0, 2)), c_in, draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    case = dict(
        input=make(shape, dtype, draw(st.sampled_from(LAYOUTS)), g),
        weight=make((c_out, c_in // groups, k, k), dtype, "contiguous", g),
        bias=make((c_out,), dtype, "contiguous", g) if draw(st.booleans()) else None,
        stride=[draw(st.integers(1, 2))],
        padding=[draw(st.integers(0, 1))],
        dilation=[draw(st.integers(1, 2))],
        groups=groups,
        relu=draw(st.booleans()),
        stats=draw(st.booleans()),
        dtype=dtype,
        g=g,
    )
    defect = draw(st.sampled_from([None, None, None, None, None, "groups", "stride", "weight_dtype", "weight_3d", "bias_short", "too_small", "residual_shape"]))  # fmt: skip
    return case, defect


@triton_only
@pytest.mark.triton
@fuzz_settings(40)  # two ops
@given(data=conv_case())
def test_triton_conv_ops(data):
    import torch.nn.functional as F

    import resnet_fast.triton.backend  # noqa: F401

    k, defect = data
    x, w = k["input"], k["weight"]
    geometry = dict(
        stride=k["stride"], padding=k["padding"], dilation=k["dilation"], groups=k["groups"]
    )
    argument = {None: "input", "groups": "groups", "stride": "stride", "weight_dtype": "weight", "weight_3d": "weight", "bias_short": "bias", "too_small": "input", "residual_shape": "residual"}[defect]  # fmt: skip
    residual = None
    if defect == "groups":
        geometry["groups"] = k["groups"] + 1 if k["groups"] > 1 else 0
    elif defect == "stride":
        geometry["stride"] = [0]
    elif defect == "weight_dtype":
        w = w.to(torch.float16)
    elif defect == "weight_3d":
        w = w[0]
    elif defect == "bias_short":
        k["bias"] = torch.zeros(w.shape[0] + 1, dtype=k["dtype"])
    elif defect == "too_small":
        x, geometry["padding"] = x[:, :, :0], [0]
    elif defect == "residual_shape":
        k["stats"] = False
        residual = torch.zeros(1, 1, 1, 1, dtype=k["dtype"])
    try:
        expected = F.conv2d(x.double(), w.double(), _f64(k["bias"]), **geometry)
    except RuntimeError:
        expected = None  # PyTorch refuses these arguments: the op must refuse them too
    if defect is None and expected is not None and not k["stats"]:
        residual = make(expected.shape, k["dtype"], "contiguous", k["g"])
    g = geometry

    def call():
        if k["stats"]:
            return torch.ops.resnet_fast_triton.conv2d_stats(x, w, k["bias"], g["stride"], g["padding"], g["dilation"], g["groups"])  # fmt: skip
        return torch.ops.resnet_fast_triton.conv2d(x, w, k["bias"], residual, g["stride"], g["padding"], g["dilation"], g["groups"], k["relu"])  # fmt: skip

    if defect is not None or expected is None:
        # Two bad arguments at once (a defect in an input PyTorch refuses):
        # either may be named.
        return expect_refusal(call, argument if expected is not None else (argument, "input"), [])
    event("valid")
    if k["stats"]:
        out, mean, var = call()
        assert mean.dtype == var.dtype == torch.float64 and mean.shape == (expected.shape[1],)
        close(out, expected, k["dtype"], "out")
        if out.numel():
            var_e, mean_e = torch.var_mean(out.double(), dim=(0, 2, 3), correction=0)
            close(mean, mean_e, k["dtype"], "mean")
            close(var, var_e, k["dtype"], "var")
        return
    event("valid")
    out = call()
    if residual is not None:
        expected = expected + residual.double()
    close(out, expected.relu() if k["relu"] else expected, k["dtype"], "out")
