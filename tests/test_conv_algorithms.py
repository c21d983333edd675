"""The CPU's own 3x3 convolutions: Winograd F(4x4, 3x3) (csrc/cpu/winograd.cpp,
resnet_fast/conv/winograd.py) and tap by tap (csrc/cpu/taps_conv.cpp,
resnet_fast/conv/taps.py): each exact in float64 against the direct
convolution (so the transform matrices and the tap bookkeeping are right),
its float32 rounding bounded, the same bits on any thread count, its argument
checks and op contract; how eval-mode folded convolutions choose among them
and oneDNN's; Winograd in the lean blocks' training."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_conv_gradcheck
from torch.utils._python_dispatch import TorchDispatchMode

import resnet_fast
from resnet_fast._ops.contract import OP_NAMES
from resnet_fast.conv import eval_algorithms, measured, taps, training, winograd
from resnet_fast.conv.spec import ConvSpec
from resnet_fast.models import plain

CL = torch.channels_last
ops = torch.ops.resnet_fast
_aten = torch.ops.aten

# (N, C_in, C_out, H, W): maps that are not multiples of the 4x4 tile, a 1x1
# map, channel counts off the vector width, more tiles than one thread's chunk
# (64) with a partial last chunk, and a ResNet stage.
SHAPES = [
    (2, 5, 7, 9, 6),
    (3, 16, 24, 8, 8),
    (1, 3, 4, 1, 1),
    (2, 17, 33, 5, 13),
    (1, 8, 8, 12, 12),
    (5, 6, 10, 17, 14),
    (2, 64, 64, 32, 32),
]


# algorithm -> (the weight as the op takes it, the op, that weight's name)
ALGORITHMS = {
    "winograd": (ops.winograd_weight, ops.winograd_conv3x3, "weight_tiles"),
    "taps": (taps.weight_taps, ops.taps_conv, "weight_taps"),
}
algorithm = pytest.mark.parametrize("algo", list(ALGORITHMS))


def _run(algo, x, weight, bias, residual, relu):
    transform, op, _ = ALGORITHMS[algo]
    return op(x, transform(weight), bias, residual, relu)


def _operands(shape, dtype, gen, residual=True):
    n, c, k, h, w = shape
    x = torch.randn(n, c, h, w, dtype=dtype, generator=gen).contiguous(memory_format=CL)
    weight = torch.randn(k, c, 3, 3, dtype=dtype, generator=gen) * (2 / (9 * c)) ** 0.5
    bias = torch.randn(k, dtype=dtype, generator=gen)
    r = torch.randn(n, k, h, w, dtype=dtype, generator=gen).contiguous(memory_format=CL)
    return x, weight, bias, (r if residual else None)


def _direct(x, weight, bias, residual, relu):
    y = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    if residual is not None:
        y = y + residual.double()
    return torch.relu(y) if relu else y


@algorithm
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    "epilogue", ["plain", "bias", "bias+relu", "bias+residual+relu", "residual"]
)
def test_exact_in_float64(algo, shape, epilogue, gen):
    x, weight, bias, r = _operands(shape, torch.float64, gen)
    bias = bias if "bias" in epilogue else None
    r = r if "residual" in epilogue else None
    relu = "relu" in epilogue
    out = _run(algo, x, weight, bias, r, relu)
    assert out.shape == (shape[0], shape[2], shape[3], shape[4])
    assert out.is_contiguous(memory_format=CL)
    expected = _direct(x, weight, bias, r, relu)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kernel, stride", [(3, 2), (1, 1), (1, 2)])
@pytest.mark.parametrize("epilogue", ["plain", "bias+residual+relu"])
def test_taps_of_any_kernel_and_stride_exact_in_float64(shape, kernel, stride, epilogue, gen):
    x, weight, bias, _ = _operands(shape, torch.float64, gen, residual=False)
    weight = weight[:, :, :kernel, :kernel].contiguous()
    padding = kernel // 2
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    r = torch.randn(expected.shape, dtype=torch.float64, generator=gen).contiguous(memory_format=CL)
    if epilogue == "plain":
        bias, r = None, None
        expected = F.conv2d(x, weight, stride=stride, padding=padding)
    else:
        expected = torch.relu(expected + r)
    out = ops.taps_conv(x, taps.weight_taps(weight), bias, r, epilogue != "plain", stride)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())


def test_taps_stride_and_kernel_are_checked(gen):
    x, weight, bias, r = _operands((2, 4, 6, 6, 6), torch.float32, gen)
    with pytest.raises(RuntimeError, match="stride must be 1 or 2"):
        ops.taps_conv(x, taps.weight_taps(weight), bias, None, True, 3)
    with pytest.raises(RuntimeError, match=r"weight_taps must be \[1 or 9"):
        ops.taps_conv(x, torch.randn(4, 4, 6, generator=gen), bias, None, True, 1)
    with pytest.raises(RuntimeError, match=r"residual must be \[2, 6, 3, 3\]"):
        ops.taps_conv(x, taps.weight_taps(weight), bias, r, True, 2)


@algorithm
@pytest.mark.parametrize("shape", SHAPES[-3:], ids=str)
def test_float32_rounding_is_bounded(algo, shape, gen):
    # The largest errors measured on the ResNet-18 stages, relative to the
    # largest output: Winograd 1.0e-6 to 2.1e-6, tap by tap 1.7e-7 to
    # 2.9e-7, oneDNN's direct convolution 7.9e-7 to 2.2e-6; allow about 5x
    # the largest.
    x, weight, bias, r = _operands(shape, torch.float32, gen)
    out = _run(algo, x, weight, bias, r, False)
    expected = _direct(x, weight, bias, r, False)
    error = (out.double() - expected).abs().max() / expected.abs().max()
    assert error < 1e-5


@pytest.mark.parametrize(
    "shape",
    [(2, 70, 70, 8, 8), (1, 130, 40, 4, 4), (3, 20, 200, 9, 11), (40, 8, 24, 4, 4)],
    ids=str,
)
@algorithm
def test_same_bits_on_any_thread_count(algo, shape, gen):
    # The work is split by tiles or pixels, or by output channels where there
    # are few of them (all of these: channel blocks with partial vectors, sums
    # over input channels longer than one block of 64); each output is summed
    # in the same order whatever the split, so the result is the same to the
    # bit.
    x, weight, bias, r = _operands(shape, torch.float32, gen)
    transform, op, _ = ALGORITHMS[algo]
    tiles = transform(weight)
    threads = torch.get_num_threads()
    outs = []
    try:
        for count in (1, 2, 3, 5):
            torch.set_num_threads(count)
            outs.append(op(x, tiles, bias, r, True))
    finally:
        torch.set_num_threads(threads)
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    expected = _direct(x, weight, bias, r, True)
    error = (outs[0].double() - expected).abs().max() / expected.abs().max()
    assert error < 1e-5


@algorithm
def test_empty_and_channel_free_inputs(algo, gen):
    weight = torch.randn(4, 3, 3, 3, generator=gen)
    empty = torch.empty(0, 3, 5, 5).contiguous(memory_format=CL)
    assert _run(algo, empty, weight, None, None, True).shape == (0, 4, 5, 5)
    # No input channels: the convolution is the bias alone.
    x = torch.empty(2, 0, 3, 3).contiguous(memory_format=CL)
    bias = torch.randn(4, generator=gen)
    out = _run(algo, x, torch.empty(4, 0, 3, 3), bias, None, False)
    torch.testing.assert_close(out, bias.view(1, 4, 1, 1).expand(2, 4, 3, 3), rtol=0, atol=0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("nchw", "channels_last"),
        ("bf16", "float32 or float64"),
        ("tiles", "{name} must be"),
        ("tiles dtype", "{name} dtype"),
        ("bias", "bias must be"),
        ("residual", "residual must be"),
    ],
)
@algorithm
def test_arguments_are_checked(algo, case, message, gen):
    x, weight, bias, r = _operands((2, 4, 6, 5, 5), torch.float32, gen)
    transform, op, name = ALGORITHMS[algo]
    message = message.format(name=name)
    tiles = transform(weight)
    args = {"input": x, "tiles": tiles, "bias": bias, "residual": r}
    if case == "nchw":
        args["input"] = x.contiguous()
    elif case == "bf16":
        args["input"] = x.bfloat16()
    elif case == "tiles":
        args["tiles"] = tiles[:, :3]
    elif case == "tiles dtype":
        args["tiles"] = tiles.double()
    elif case == "bias":
        args["bias"] = bias[:5]
    elif case == "residual":
        args["residual"] = r[:, :5]
    with pytest.raises(RuntimeError, match=message):
        op(args["input"], args["tiles"], args["bias"], args["residual"], True)


def test_winograd_weight_is_checked(gen):
    with pytest.raises(RuntimeError, match="weight must be"):
        ops.winograd_weight(torch.randn(6, 4, 3, 2, generator=gen))


@algorithm
def test_opcheck(algo, gen):
    x, weight, bias, r = _operands((2, 5, 6, 7, 9), torch.float64, gen)
    transform, op, _ = ALGORITHMS[algo]
    if algo == "winograd":
        torch.library.opcheck(ops.winograd_weight, (weight,))
    tiles = transform(weight)
    for args in [(x, tiles, bias, r, True), (x, tiles, None, None, False)]:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    if algo == "taps":
        r2 = r[:, :, ::2, ::2].contiguous(memory_format=CL)
        torch.library.opcheck(
            op, (x, tiles, bias, r2, True, 2), test_utils=("test_schema", "test_faketensor")
        )  # fmt: skip


class _CountCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def _eval_block(gen):
    block = resnet_fast.nn.BasicBlock(32, 32)
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):
            bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.2, 0.2, generator=gen)
    return block.eval()


def _bn(bn, t):
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("chosen", ["winograd", "taps", "onednn"])
def test_eval_blocks_run_the_measured_choice(chosen, monkeypatch, gen):
    monkeypatch.setattr(eval_algorithms, "chosen", lambda *args: chosen)
    block = _eval_block(gen)
    x = torch.randn(4, 32, 9, 10, generator=gen).contiguous(memory_format=CL)
    with torch.no_grad():
        block(x)  # fills the fold cache: only cached folds take either fast path
        with _CountCalls() as calls:
            out = block(x)
        h = torch.relu(_bn(block.bn1, block.conv1(x)))
        expected = torch.relu(_bn(block.bn2, block.conv2(h)) + x)
    for name, op in (("winograd", "winograd_conv3x3"), ("taps", "taps_conv")):
        assert calls.names.count(f"resnet_fast::{op}") == (2 if chosen == name else 0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_eval_choice_has_its_own_kind_and_is_never_timed_alone(monkeypatch, gen):
    # Eval-mode 3x3 algorithms are timed only in the model (resnet_fast.tune):
    # on first use the direct convolution runs, and nothing is measured.
    seen = {}
    real_choose = measured.choose

    def choose(key, default, candidates, device):
        seen[key[0]] = (default, candidates)
        return real_choose(key, default, candidates, device)

    monkeypatch.setattr(measured, "choose", choose)
    monkeypatch.setattr(measured, "_interleaved_medians", _never_called)
    block = _eval_block(gen)
    x = torch.randn(2, 32, 8, 8, generator=gen).contiguous(memory_format=CL)
    with torch.no_grad():
        block(x)
        with _CountCalls() as calls:
            block(x)
    assert seen["eval_conv"] == ("onednn", None)
    assert "resnet_fast::winograd_conv3x3" not in calls.names
    assert "resnet_fast::taps_conv" not in calls.names


def _never_called(*args):
    raise AssertionError("an eval-mode choice was timed outside the model")


def test_candidates_by_stride_and_winograd_can_be_turned_off(monkeypatch, gen):
    x = torch.randn(2, 8, 6, 6, generator=gen).contiguous(memory_format=CL)
    weight = torch.randn(8, 8, 3, 3, generator=gen)
    by_stride = {s: eval_algorithms.choice_key(x, weight, s, None, True) for s in (1, 2)}
    assert eval_algorithms.candidates(by_stride[1]) == ("onednn", "winograd", "taps")
    assert eval_algorithms.candidates(by_stride[2]) == ("onednn", "taps")
    monkeypatch.setattr(winograd, "ENABLED", False)
    assert eval_algorithms.candidates(by_stride[1]) == ("onednn", "taps")


@pytest.mark.parametrize("case", ["nchw", "needs grad", "stride 3", "float64", "5x5"])
def test_not_eligible(case, monkeypatch, gen):
    eligible_conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6, generator=gen).contiguous(memory_format=CL)
    assert eval_algorithms.eligible(x, eligible_conv, None)
    assert eval_algorithms.eligible(x, torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), None)
    conv = {
        "stride 3": torch.nn.Conv2d(8, 8, 3, padding=1, stride=3),
        "5x5": torch.nn.Conv2d(8, 8, 5, padding=1),
    }.get(case, eligible_conv)
    if case == "nchw":
        x = x.contiguous()
    elif case == "needs grad":
        x.requires_grad_()
    elif case == "float64":
        x = x.double()
    assert not eval_algorithms.eligible(x, conv, None)


# --- training convolutions (conv/training.py's "winograd" path) -----------------

SPEC = ConvSpec((1, 1), (1, 1), (1, 1), 1)


@pytest.mark.parametrize("shape", SHAPES[:-1], ids=str)
def test_training_path_matches_onednn_in_float64(shape, gen):
    x, weight, bias, _ = _operands(shape, torch.float64, gen, residual=False)
    want = F.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(
        training._winograd_forward(x, weight, bias), want, rtol=1e-12, atol=1e-12
    )
    grad = torch.randn(want.shape, dtype=torch.float64, generator=gen).contiguous(memory_format=CL)
    want_grads = _aten.convolution_backward(
        grad,
        x,
        weight,
        [bias.shape[0]],
        (1, 1),
        (1, 1),
        (1, 1),
        False,
        [0, 0],
        1,
        [True, True, True],
    )
    for mask in [(True, True, True), (True, False, False), (False, True, True)]:
        got = training._winograd_backward(grad, x, weight, bias, SPEC, mask)
        for wanted, g, w in zip(mask, got, want_grads, strict=True):
            if wanted:
                torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-11)
            else:
                assert g is None


def test_gradcheck_through_the_winograd_path(gen):
    x, weight, bias, _ = _operands((2, 3, 4, 5, 6), torch.float64, gen, residual=False)
    assert_conv_gradcheck(
        training._winograd_forward,
        lambda grad, x, weight, bias: training._winograd_backward(
            grad, x, weight, bias, SPEC, (True, True, True)
        ),
        x, weight, bias,
    )  # fmt: skip


# path -> (whether a convolution may take it, the ops a lean block's training
# step then calls: conv1 and conv2 forward and input gradients, and for the
# tap-by-tap path their weight gradients)
TRAINING_PATHS = {
    "winograd": (winograd.trainable, {"winograd_conv3x3": 4}),
    "taps": (training.taps_trainable, {"taps_conv": 4, "taps_weight_grad": 2}),
}


@pytest.mark.parametrize("path", list(TRAINING_PATHS))
def test_lean_blocks_train_through_the_path_when_it_is_chosen(path, monkeypatch, gen):
    """A lean block whose 3x3 convolutions take the path computes the plain
    block's training step (float32: close, not equal)."""
    trainable, op_counts = TRAINING_PATHS[path]
    monkeypatch.setattr(
        training, "conv_path", lambda x, w, spec: path if trainable(x, w, spec) else "onednn"
    )
    block = resnet_fast.nn.BasicBlock(16, 16, memory="lean").train()
    ref = plain.BasicBlock(16, 16).train()
    ref.load_state_dict(block.state_dict())
    x = torch.randn(4, 16, 10, 9, generator=gen).contiguous(memory_format=CL)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    with _CountCalls() as calls:
        out = block(xs[0])
        out.backward(torch.ones_like(out))
    for op, count in op_counts.items():
        assert calls.names.count(f"resnet_fast::{op}") == count
    want = ref(xs[1])
    want.backward(torch.ones_like(want))
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(block.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3, msg=name)


def test_cpu_algorithms_without_gpu_kernels():
    """Not part of the fused-op contract (OP_NAMES), which every backend
    implements: on a GPU cuDNN chooses its algorithms itself."""
    for name in (
        "winograd_weight",
        "winograd_conv3x3",
        "taps_conv",
        "taps_weight",
        "taps_weight_grad",
    ):
        qualified = f"resnet_fast::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU")
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA")
        assert name not in OP_NAMES


@algorithm
def test_backward_through_the_ops_is_refused_clearly(algo, gen):
    x, weight, bias, r = _operands((1, 2, 3, 4, 4), torch.float32, gen)
    out = _run(algo, x.requires_grad_(), weight, bias, r, True)
    with pytest.raises(RuntimeError, match="no gradient"):
        out.sum().backward()
    if algo == "taps":
        return  # its weight form is plain tensor ops, differentiable as such
    tiles = ops.winograd_weight(weight.requires_grad_())
    with pytest.raises(RuntimeError, match="no gradient"):
        tiles.sum().backward()


# --- training convolutions tap by tap (conv/training.py's "taps" path) ---------

TAPS_GEOMETRIES = [(3, 1), (3, 2), (1, 1), (1, 2)]


def _taps_spec(kernel: int, stride: int) -> ConvSpec:
    return ConvSpec((stride, stride), (kernel // 2, kernel // 2), (1, 1), 1)


@pytest.mark.parametrize("kernel, stride", TAPS_GEOMETRIES)
@pytest.mark.parametrize("shape", SHAPES[:-1], ids=str)
def test_taps_training_path_matches_onednn_in_float64(kernel, stride, shape, gen):
    x, weight, bias, _ = _operands(shape, torch.float64, gen, residual=False)
    weight = weight[:, :, :kernel, :kernel].contiguous()
    spec = _taps_spec(kernel, stride)
    want = F.conv2d(x, weight, bias, spec.stride, spec.padding)
    got = training.conv2d(x, weight, bias, spec, path="taps")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn(want.shape, dtype=torch.float64, generator=gen).contiguous(memory_format=CL)
    want_grads = _aten.convolution_backward(
        grad, x, weight, [bias.shape[0]], spec.stride, spec.padding, (1, 1), False, [0, 0], 1,
        [True, True, True],
    )  # fmt: skip
    for mask in [(True, True, True), (True, False, False), (False, True, True)]:
        got = training.conv2d_backward(grad, x, weight, bias, spec, mask, path="taps")
        for wanted, g, w in zip(mask, got, want_grads, strict=True):
            if wanted:
                torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10 * w.abs().max().item())
            else:
                assert g is None


@pytest.mark.parametrize("kernel, stride", [(3, 1), (1, 2)])
def test_gradcheck_through_the_taps_path(kernel, stride, gen):
    x, weight, bias, _ = _operands((2, 3, 4, 5, 6), torch.float64, gen, residual=False)
    weight = weight[:, :, :kernel, :kernel].contiguous()
    spec = _taps_spec(kernel, stride)
    assert_conv_gradcheck(
        lambda x, weight, bias: training._taps_forward(x, weight, bias, spec),
        lambda grad, x, weight, bias: training._taps_backward(
            grad, x, weight, bias, spec, (True, True, True)
        ),
        x, weight, bias,
    )  # fmt: skip


def test_taps_weight_forms(gen):
    weight = torch.randn(7, 5, 3, 3, generator=gen)
    assert torch.equal(taps.weight_taps(weight), weight.permute(2, 3, 1, 0).reshape(9, 5, 7))
    turned = weight.transpose(0, 1).flip(2, 3).permute(2, 3, 1, 0).reshape(9, 7, 5)
    assert torch.equal(taps.turned_weight_taps(weight), turned)
    one = torch.randn(7, 5, 1, 1, generator=gen)
    assert torch.equal(taps.weight_taps(one), one.view(7, 5).t().unsqueeze(0))
    torch.library.opcheck(
        ops.taps_weight, (weight, True), test_utils=("test_schema", "test_faketensor")
    )
    with pytest.raises(RuntimeError, match="k = 1 or 3"):
        taps.weight_taps(torch.randn(7, 5, 2, 2, generator=gen))


@pytest.mark.parametrize("kernel, stride", TAPS_GEOMETRIES)
def test_taps_weight_grad_same_bits_on_any_thread_count(kernel, stride, gen):
    x = torch.randn(3, 100, 6, 7, generator=gen).contiguous(memory_format=CL)
    out_hw = (-(-6 // stride), -(-7 // stride))
    grad = torch.randn(3, 300, *out_hw, generator=gen).contiguous(memory_format=CL)
    threads = torch.get_num_threads()
    outs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            outs.append(taps.weight_grad(x, grad, kernel, stride))
    finally:
        torch.set_num_threads(threads)
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    weight = torch.empty(300, 100, kernel, kernel)
    spec = _taps_spec(kernel, stride)
    want = _aten.convolution_backward(
        grad.double(), x.double(), weight.double(), None, spec.stride, spec.padding, (1, 1),
        False, [0, 0], 1, [False, True, False],
    )[1]  # fmt: skip
    assert ((outs[0].double() - want).abs().max() / want.abs().max()).item() < 1e-5
    torch.library.opcheck(
        ops.taps_weight_grad, (x, grad, kernel, stride), test_utils=("test_schema", "test_faketensor")
    )  # fmt: skip


@pytest.mark.parametrize(
    "case, message",
    [("ksize", "ksize must be 1 or 3"), ("grad", "grad must be"), ("nchw", "channels_last")],
)
def test_taps_weight_grad_arguments_are_checked(case, message, gen):
    x = torch.randn(2, 4, 5, 5, generator=gen).contiguous(memory_format=CL)
    grad = torch.randn(2, 6, 5, 5, generator=gen).contiguous(memory_format=CL)
    ksize = 2 if case == "ksize" else 3
    if case == "grad":
        grad = grad[:, :, :4].contiguous(memory_format=CL)
    elif case == "nchw":
        x = x.contiguous()
    with pytest.raises(RuntimeError, match=message):
        ops.taps_weight_grad(x, grad, ksize, 1)
