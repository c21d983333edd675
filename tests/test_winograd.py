"""The Winograd F(4x4, 3x3) inference convolution (csrc/cpu/winograd.cpp,
resnet_fast/conv/winograd.py): exact in float64 against the direct
convolution (so the transform matrices are right), its float32 rounding
bounded, its argument checks and op contract, and how eval-mode folded
convolutions choose it."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_conv_gradcheck
from torch.utils._python_dispatch import TorchDispatchMode

import resnet_fast
from resnet_fast._ops.contract import OP_NAMES
from resnet_fast.conv import measured, training, winograd
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


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    "epilogue", ["plain", "bias", "bias+relu", "bias+residual+relu", "residual"]
)
def test_exact_in_float64(shape, epilogue, gen):
    x, weight, bias, r = _operands(shape, torch.float64, gen)
    bias = bias if "bias" in epilogue else None
    r = r if "residual" in epilogue else None
    relu = "relu" in epilogue
    out = ops.winograd_conv3x3(x, ops.winograd_weight(weight), bias, r, relu)
    assert out.shape == (shape[0], shape[2], shape[3], shape[4])
    assert out.is_contiguous(memory_format=CL)
    expected = _direct(x, weight, bias, r, relu)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("shape", SHAPES[-3:], ids=str)
def test_float32_rounding_is_bounded(shape, gen):
    # The largest error measured on ResNet-shaped layers is 2.8e-6 to 3.6e-6
    # of the largest output (oneDNN's direct float32 convolution: 1.1e-6 to
    # 2.7e-6); allow about 3x that.
    x, weight, bias, r = _operands(shape, torch.float32, gen)
    out = ops.winograd_conv3x3(x, ops.winograd_weight(weight), bias, r, False)
    expected = _direct(x, weight, bias, r, False)
    error = (out.double() - expected).abs().max() / expected.abs().max()
    assert error < 1e-5


def test_empty_and_channel_free_inputs(gen):
    weight = torch.randn(4, 3, 3, 3, generator=gen)
    tiles = ops.winograd_weight(weight)
    empty = torch.empty(0, 3, 5, 5).contiguous(memory_format=CL)
    assert ops.winograd_conv3x3(empty, tiles, None, None, True).shape == (0, 4, 5, 5)
    # No input channels: the convolution is the bias alone.
    x = torch.empty(2, 0, 3, 3).contiguous(memory_format=CL)
    bias = torch.randn(4, generator=gen)
    out = ops.winograd_conv3x3(x, ops.winograd_weight(torch.empty(4, 0, 3, 3)), bias, None, False)
    torch.testing.assert_close(out, bias.view(1, 4, 1, 1).expand(2, 4, 3, 3), rtol=0, atol=0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("nchw", "channels_last"),
        ("bf16", "float32 or float64"),
        ("tiles", "weight_tiles must be"),
        ("tiles dtype", "weight_tiles dtype"),
        ("bias", "bias must be"),
        ("residual", "residual must be"),
        ("weight", "weight must be"),
    ],
)
def test_arguments_are_checked(case, message, gen):
    x, weight, bias, r = _operands((2, 4, 6, 5, 5), torch.float32, gen)
    tiles = ops.winograd_weight(weight)
    if case == "weight":
        with pytest.raises(RuntimeError, match=message):
            ops.winograd_weight(weight[:, :, :2])
        return
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
        ops.winograd_conv3x3(args["input"], args["tiles"], args["bias"], args["residual"], True)


def test_opcheck(gen):
    x, weight, bias, r = _operands((2, 5, 6, 7, 9), torch.float64, gen)
    torch.library.opcheck(ops.winograd_weight, (weight,))
    tiles = ops.winograd_weight(weight)
    for args in [(x, tiles, bias, r, True), (x, tiles, None, None, False)]:
        torch.library.opcheck(
            ops.winograd_conv3x3, args, test_utils=("test_schema", "test_faketensor")
        )


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


@pytest.mark.parametrize("chosen", [True, False], ids=["winograd", "direct"])
def test_eval_blocks_run_the_measured_choice(chosen, monkeypatch, gen):
    monkeypatch.setattr(winograd, "chosen", lambda *args: chosen)
    block = _eval_block(gen)
    x = torch.randn(4, 32, 9, 10, generator=gen).contiguous(memory_format=CL)
    with torch.no_grad():
        block(x)  # fills the fold cache: only cached folds take either fast path
        with _CountCalls() as calls:
            out = block(x)
        h = torch.relu(_bn(block.bn1, block.conv1(x)))
        expected = torch.relu(_bn(block.bn2, block.conv2(h)) + x)
    assert calls.names.count("resnet_fast::winograd_conv3x3") == (2 if chosen else 0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_eval_choice_has_its_own_kind_and_is_never_timed_alone(monkeypatch, gen):
    # Eval-mode Winograd is timed only in the model (resnet_fast.tune): on
    # first use the direct convolution runs, and nothing is measured.
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
    assert seen["eval_conv3x3"] == ("onednn", None)
    assert "resnet_fast::winograd_conv3x3" not in calls.names


def _never_called(*args):
    raise AssertionError("an eval-mode choice was timed outside the model")


@pytest.mark.parametrize("case", ["disabled", "nchw", "needs grad", "stride 2", "float64"])
def test_not_eligible(case, monkeypatch, gen):
    eligible_conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6, generator=gen).contiguous(memory_format=CL)
    assert winograd.eligible(x, eligible_conv, None)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2) if case == "stride 2" else eligible_conv
    if case == "disabled":
        monkeypatch.setattr(winograd, "ENABLED", False)
    elif case == "nchw":
        x = x.contiguous()
    elif case == "needs grad":
        x.requires_grad_()
    elif case == "float64":
        x = x.double()
    assert not winograd.eligible(x, conv, None)


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


def test_lean_blocks_train_through_winograd_when_it_is_chosen(monkeypatch, gen):
    """A lean block whose 3x3 convolutions take the Winograd path computes
    the plain block's training step (float32: close, not equal)."""
    monkeypatch.setattr(
        training,
        "conv_path",
        lambda x, w, spec: "winograd" if winograd.trainable(x, w, spec) else "onednn",
    )
    block = resnet_fast.nn.BasicBlock(16, 16, memory="lean").train()
    ref = plain.BasicBlock(16, 16).train()
    ref.load_state_dict(block.state_dict())
    x = torch.randn(4, 16, 10, 9, generator=gen).contiguous(memory_format=CL)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    with _CountCalls() as calls:
        out = block(xs[0])
        out.backward(torch.ones_like(out))
    # conv1 and conv2 forward, and the input gradient of each.
    assert calls.names.count("resnet_fast::winograd_conv3x3") == 4
    want = ref(xs[1])
    want.backward(torch.ones_like(want))
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(block.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3, msg=name)


def test_a_cpu_algorithm_without_gpu_kernels():
    """Not part of the fused-op contract (OP_NAMES), which
    every backend implements: on a GPU cuDNN chooses Winograd itself."""
    for name in ("winograd_weight", "winograd_conv3x3"):
        qualified = f"resnet_fast::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU")
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA")
        assert name not in OP_NAMES


def test_backward_through_the_ops_is_refused_clearly(gen):
    x, weight, bias, r = _operands((1, 2, 3, 4, 4), torch.float32, gen)
    out = ops.winograd_conv3x3(x.requires_grad_(), ops.winograd_weight(weight), bias, r, True)
    with pytest.raises(RuntimeError, match="no gradient"):
        out.sum().backward()
    tiles = ops.winograd_weight(weight.requires_grad_())
    with pytest.raises(RuntimeError, match="no gradient"):
        tiles.sum().backward()
