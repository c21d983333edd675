"""Inference is never silently wrong: every way users change weights or
running statistics is seen by the next eval call (also writes through
``.data``, which bypass the version counter); eval-mode errors are PyTorch's
own; and measuring a choice never happens inside a region that must record
the same thing twice (torch.utils.checkpoint, saved_tensors_hooks,
torch.func). Each case against the plain-PyTorch twin given the same edit,
on the zoo, on convert() of a torchvision-style model and of user code."""

import copy

import pytest
import torch
from helpers import run_python
from torch import nn
from torch.nn.utils import prune
from user_models import tutorial_resnet18

import resnet_fast
import resnet_fast.models as M
from resnet_fast.models.plain import plain_model


def _zoo():
    torch.manual_seed(0)
    fast = M.resnet20(num_classes=10)
    return fast, plain_model("resnet20", num_classes=10)


def _converted_torchvision_style():
    torch.manual_seed(0)
    plain = plain_model("resnet18", num_classes=10)
    return resnet_fast.convert(copy.deepcopy(plain)), plain


def _converted_user_code():
    torch.manual_seed(0)
    plain = tutorial_resnet18(width=16)
    return resnet_fast.convert(copy.deepcopy(plain)), plain


MODELS = {
    "zoo": _zoo,
    "convert-torchvision-style": _converted_torchvision_style,
    "convert-user-code": _converted_user_code,
}


def _pair(kind):
    fast, plain = MODELS[kind]()
    plain.load_state_dict(fast.state_dict())
    with torch.no_grad():  # running statistics and affine parameters that matter
        for model in (fast, plain):
            torch.manual_seed(1)
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
    return fast.eval(), plain.eval()


def _check(fast, plain, x):
    with torch.no_grad():
        want = plain(x)
        got = fast(x)
    # fp32: folding rounds differently from conv-then-BN (1e-5 relative);
    # a stale fold is off by O(1).
    scale = max(want.abs().max().item(), 1.0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)


def _params(model):
    return [p for _, p in sorted(model.named_parameters())]


def _convs(model):
    return [m for _, m in sorted(model.named_modules()) if isinstance(m, nn.Conv2d)]


def _bns(model):
    return [m for _, m in sorted(model.named_modules()) if isinstance(m, nn.BatchNorm2d)]


def _data_mul(model):
    for p in _params(model):
        p.data.mul_(0.9)


def _data_add(model):
    for i, p in enumerate(_params(model)):
        p.data.add_(0.01 * (i % 3))


def _data_copy(model):
    conv = _convs(model)[-1]
    conv.weight.data.copy_(torch.linspace(-1, 1, conv.weight.numel()).view_as(conv.weight))


def _data_assign(model):
    conv = _convs(model)[1]
    conv.weight.data = conv.weight.data * -1.0


def _prune_in_place(model):
    for conv in _convs(model):
        mask = (torch.arange(conv.weight.numel()) % 3 != 0).view_as(conv.weight)
        conv.weight.data.mul_(mask)


def _prune_hooks(model):
    for conv in _convs(model):
        prune.l1_unstructured(conv, "weight", amount=0.3)


def _running_stats_data(model):
    for bn in _bns(model):
        bn.running_mean.data.add_(0.1)
        bn.running_var.data.mul_(1.5)


def _copy_under_no_grad(model):
    with torch.no_grad():
        for p in _params(model):
            p.copy_(p * 1.1)


def _state_dict_round_trip(model):
    state = {k: v * 0.95 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)


def _optimizer_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    opt.step()


def _numpy_view(model):
    conv = _convs(model)[0]
    conv.weight.detach().numpy()[...] *= 0.5


def _classifier(model):
    return [m for _, m in sorted(model.named_modules()) if isinstance(m, nn.Linear)][-1]


def _classifier_data_assign(model):
    fc = _classifier(model)
    fc.weight.data = fc.weight.data.flip(0)
    fc.bias.data.add_(0.5)


def _classifier_replaced(model):
    fc = _classifier(model)
    torch.manual_seed(2)
    fc.weight = nn.Parameter(torch.randn_like(fc.weight))


def _classifier_hook(model):
    _classifier(model).register_forward_hook(lambda module, args, out: out * 2.0)


EDITS = {
    "data.mul_": _data_mul,
    "data.add_": _data_add,
    "data.copy_": _data_copy,
    "data =": _data_assign,
    "pruning mask in place": _prune_in_place,
    "torch.nn.utils.prune": _prune_hooks,
    "running stats via .data": _running_stats_data,
    "copy_ under no_grad": _copy_under_no_grad,
    "load_state_dict": _state_dict_round_trip,
    "optimizer step": _optimizer_step,
    "numpy view": _numpy_view,
    "classifier .data =": _classifier_data_assign,
    "classifier replaced": _classifier_replaced,
    "classifier hook": _classifier_hook,
}


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("kind", MODELS)
def test_eval_output_follows_every_edit(kind, edit):
    fast, plain = _pair(kind)
    x = torch.randn(2, 3, 32, 32)
    _check(fast, plain, x)  # folds cached
    _check(fast, plain, x)  # and served from the cache
    for model in (fast, plain):
        EDITS[edit](model)
    _check(fast, plain, x)


def test_to_dtype_and_back_is_seen():
    fast, plain = _pair("zoo")
    x = torch.randn(2, 3, 32, 32)
    _check(fast, plain, x)
    fast.double(), plain.double()
    _check(fast, plain, x.double())
    fast.float(), plain.float()
    _check(fast, plain, x)


def test_a_frozen_model_sees_versioned_changes_and_not_data_writes():
    """freeze(): the values are no longer compared each call (documented):
    what the version counter sees is still refolded, a .data write is not,
    until the model is unfrozen."""
    fast, plain = _pair("zoo")
    x = torch.randn(2, 3, 32, 32)
    resnet_fast.freeze(fast)
    _check(fast, plain, x)
    for model in (fast, plain):
        _optimizer_step(model)
    _check(fast, plain, x)
    for model in (fast, plain):
        _data_mul(model)
    with torch.no_grad(), pytest.raises(AssertionError):
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-3, atol=1e-3)
    resnet_fast.freeze(fast, False)
    _check(fast, plain, x)


def _error(model, x, grad):
    with torch.set_grad_enabled(grad):
        try:
            model(x)
        except Exception as e:  # noqa: BLE001  (the error itself is the result)
            return type(e), str(e)
    return None


BAD_INPUTS = {
    "3-D": lambda: torch.randn(3, 32, 32),
    "5-D": lambda: torch.randn(2, 3, 4, 32, 32),
    "channels": lambda: torch.randn(2, 4, 32, 32),
    "dtype": lambda: torch.randn(2, 3, 32, 32, dtype=torch.float64),
    "int dtype": lambda: torch.ones(2, 3, 32, 32, dtype=torch.int64),
}


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("bad", BAD_INPUTS)
@pytest.mark.parametrize("kind", MODELS)
def test_bad_eval_input_raises_what_pytorch_raises(kind, bad, grad):
    fast, plain = _pair(kind)
    x = BAD_INPUTS[bad]()
    want = _error(plain, x, grad)
    assert want is not None, "the plain model accepted it"
    assert _error(fast, x, grad) == want


CHECKPOINTED = r"""
import torch, resnet_fast
from torch.utils.checkpoint import checkpoint
from resnet_fast.models.plain import plain_model
torch.manual_seed(0)
x = torch.randn(4, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
nets = {}
for name, make in {"fast": lambda: resnet_fast.models.resnet20(num_classes=10),
                   "plain": lambda: plain_model("resnet20", num_classes=10)}.items():
    torch.manual_seed(1)
    nets[name] = make().double().to(memory_format=torch.channels_last)
nets["plain"].load_state_dict(nets["fast"].state_dict())
grads = {}
for name, net in nets.items():
    h = net.relu(net.bn1(net.conv1(x))) if name == "plain" else net._stem(x)
    for i, block in enumerate(net.layers):
        h = checkpoint(block, h, use_reentrant=REENTRANT) if i % 2 == 0 else block(h)
    net.fc(torch.flatten(net.avgpool(h), 1)).sum().backward()
    grads[name] = {k: p.grad for k, p in net.named_parameters()}
for k, g in grads["plain"].items():
    torch.testing.assert_close(grads["fast"][k], g, rtol=1e-9, atol=1e-9, msg=k)
print("ok", len(resnet_fast.nn.measured_choices()))
"""


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_checkpointing_in_a_fresh_process_with_measuring_on(reentrant, tmp_path):
    """The first step of a fresh process, measuring on: no choice is timed
    inside the checkpointed region (a saved_tensors_hooks context, or the
    recomputation in backward), so the forward and its recomputation save
    the same tensors, and the gradients are the plain model's."""
    code = CHECKPOINTED.replace("REENTRANT", str(reentrant))
    out, _ = run_python(
        code, RESNET_FAST_MEASURE="1", RESNET_FAST_CHOICES_DIR=str(tmp_path / "choices")
    )
    assert out.startswith("ok")


def test_nothing_is_timed_under_saved_tensors_hooks_or_torch_func(measuring, monkeypatch):
    def no_timing(candidates):
        raise AssertionError("timed inside a region that must not change")

    monkeypatch.setattr(measuring, "_interleaved_medians", no_timing)
    torch.manual_seed(0)
    block = resnet_fast.nn.BasicBlock(8, 8).double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        block(x).sum().backward()
    # The key took its default and keeps it: the same path every time.
    assert set(measuring.measured_choices().values()) == {"lean"}

    # Inside a torch.func transform: the default, nothing timed.
    def f(t):
        choice = measuring.choose(("in torch.func",), "a", lambda: {"a": None, "b": None}, x.device)
        assert choice == "a"
        return t.sum()

    torch.func.grad(f)(torch.ones(3))
