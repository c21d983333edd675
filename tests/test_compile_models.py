"""resnet_fast composes with torch.compile: zoo models and convert()ed ones
(torchvision-style and user code) compile with fullgraph=True in training
and in eval, as one graph per input shape and mode (no graph break, no
recompile from one block to the next), and compute what they compute
eagerly. Under inductor's freezing the BN folds (and Winograd's weight
transforms, where that convolution was chosen) are computed at freeze time,
not per call.

Dynamo and AOTAutograd run with the "aot_eager" backend (the graph, the fake
kernels and the joint forward/backward of the custom ops, without inductor's
code generation); one small model goes through inductor with freezing."""

import copy

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters
from user_models import TwoConvBlock, tutorial_resnet18

import resnet_fast
from resnet_fast.conv import eval_algorithms, measured, training, winograd
from resnet_fast.models.plain import plain_model

CL = torch.channels_last


def _zoo():
    return resnet_fast.models.resnet20(num_classes=10)


def _converted_torchvision_style():
    return resnet_fast.convert(plain_model("resnet18", num_classes=10))


def _converted_user_code():
    return resnet_fast.convert(tutorial_resnet18(width=8))


MODELS = {
    "zoo": _zoo,
    "convert-torchvision-style": _converted_torchvision_style,
    "convert-user-code": _converted_user_code,
}


def _run(model, x, train):
    if train:
        out = model(x)
        out.sum().backward()
        return out.detach()
    with torch.no_grad():
        return model(x)


def _assert_one_graph() -> None:
    """Dynamo compiled one graph since counters.clear(): no recompile, no break."""
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["recompiles"], dict(counters["recompiles"])
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", MODELS)
def test_one_graph_no_recompile_and_the_eager_result(kind, train):
    torch.manual_seed(0)
    model = MODELS[kind]().to(memory_format=CL).train(train)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=CL)
    dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = [_run(compiled, x, train) for _ in range(3)]
    _assert_one_graph()
    want = _run(twin, x, train)
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-4)
    if train:  # the same update of the running statistics, once per call
        for (name, a), b in zip(model.named_buffers(), twin.buffers(), strict=True):
            if name.endswith("num_batches_tracked"):
                assert a.item() == 3 * b.item()


@pytest.mark.parametrize("path", ["winograd", "taps"])
def test_training_through_the_cpus_own_convolutions_is_one_graph(path, monkeypatch):
    """Lean blocks whose convolutions run as Winograd or tap by tap (forward
    and backward: custom ops with fake kernels) compile with fullgraph=True,
    once, and compute what they compute in eager mode."""
    trainable = winograd.trainable if path == "winograd" else training.taps_trainable
    monkeypatch.setattr(
        training, "conv_path", lambda x, w, spec: path if trainable(x, w, spec) else "onednn"
    )
    torch.manual_seed(0)
    model = resnet_fast.models.resnet20(num_classes=10, memory="lean").to(memory_format=CL)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=CL)
    dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = [_run(compiled, x, True) for _ in range(2)]
    _assert_one_graph()
    torch.testing.assert_close(got[0], _run(twin, x, True), rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad / 2, q.grad, rtol=1e-3, atol=1e-3, msg=name)


@pytest.mark.parametrize("conv", ["onednn", "winograd", "taps"])
def test_freezing_folds_once_and_runs_the_chosen_convolution(conv, measuring):
    """With inductor's freezing, the fold (rsqrt of the running variance)
    and the 3x3 algorithms' weight forms are constants of the compiled code,
    which calls each algorithm exactly when it is the choice for the shape."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    plain = TwoConvBlock().eval()
    with torch.no_grad():
        for bn in (plain.bn1, plain.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    fast = resnet_fast.convert(copy.deepcopy(plain)).to(memory_format=CL)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=CL)
    for residual in (None, x):  # the keys of conv1 and conv2, as resnet_fast.tune settles them
        key = eval_algorithms.choice_key(x, plain.conv1.weight, 1, residual, relu=True)
        measuring.settle((*key, torch.get_num_threads()), conv)
    dynamo.reset()
    with torch._inductor.config.patch(freezing=True), torch.no_grad():
        out, code = run_and_get_code(torch.compile(fast), x)
        want = plain(x)
    dynamo.reset()
    source = "\n".join(code)
    assert "rsqrt" not in source and "winograd_weight" not in source
    assert ("winograd_conv3x3" in source) == (conv == "winograd")
    assert ("taps_conv" in source) == (conv == "taps")
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert set(measured.measured_choices().values()) <= {conv, "onednn"}
