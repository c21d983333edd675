"""Eval mode: BN folded into the convolutions, cached but never stale; save,
load, deepcopy and state_dict round trips."""

import copy
import io

import pytest
import torch
from torch import nn

import resnet_fast.models as M
from resnet_fast.conv import fold_cache, inference
from resnet_fast.models.plain import plain_model


def _pair(name="resnet18", dtype=torch.float32):
    torch.manual_seed(0)
    fast = getattr(M, name)(num_classes=10).to(dtype)
    torch.manual_seed(0)
    ref = plain_model(name, num_classes=10).to(dtype)
    return fast, ref


def _close(a, b, dtype):
    # fp32: folding rounds differently from conv-then-BN (1e-4 relative on
    # ResNet-18 logits); a stale fold would be off by O(1).
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(b.abs().max().item(), 1.0))


def _train_step(model, opt, x, y):
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["oneDNN-fp32", "fp64"])
def test_eval_folded_matches_reference_and_is_never_stale(dtype):
    """train, eval, train, eval: the cached folds follow every change."""
    fast, ref = _pair(dtype=dtype)
    fast, ref = (
        fast.to(memory_format=torch.channels_last),
        ref.to(memory_format=torch.channels_last),
    )
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (fast, ref)]
    x = torch.randn(8, 3, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    for _ in range(3):
        for model, opt in zip((fast, ref), opts, strict=True):
            _train_step(model, opt, x, y)
        fast.eval(), ref.eval()
        with torch.no_grad():
            first = fast(x)
            _close(first, ref(x), dtype)
            _close(fast(x), first, dtype)  # served from the cache
    # A change made in eval mode (a new running stat) is seen too.
    with torch.no_grad():
        for model in (fast, ref):
            model.layer1[0].bn1.running_var.mul_(2)
            model.bn1.weight.mul_(0.5)
        _close(fast(x), ref(x), dtype)


def test_eval_with_gradients_flows_through_the_fold():
    fast, ref = _pair(dtype=torch.float64)
    fast.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fast(x).sum().backward()
    ref(x).sum().backward()
    for a, b in zip(fast.parameters(), ref.parameters(), strict=True):
        _close(a.grad, b.grad, torch.float64)


def test_save_load_deepcopy_and_state_dict_round_trip(tmp_path):
    fast, _ = _pair("resnet20")
    x = torch.randn(4, 3, 32, 32)
    fast(x)
    fast.eval()
    with torch.no_grad():
        expected = fast(x)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    clone = copy.deepcopy(fast)
    fresh = M.resnet20(num_classes=10).eval()
    fresh.load_state_dict(fast.state_dict(), strict=True)
    with torch.no_grad():
        for other in (loaded, clone, fresh):
            _close(other(x), expected, torch.float32)


# Inference the way users write it: torch.inference_mode(), eval() before
# every batch, autocast. The cached folds survive all three, never stale.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["oneDNN-fp32", "fp64"])
def test_inference_mode_serving_then_no_grad_then_a_training_step(dtype):
    fast, ref = _pair(dtype=dtype)
    fast.eval(), ref.eval()
    opt = torch.optim.SGD(fast.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(2, 3, 32, 32, dtype=dtype)
    y = torch.randint(0, 10, (2,))
    for trained in (False, True):
        with torch.no_grad():
            expected = ref(x)
        for _ in range(3):
            with torch.inference_mode():
                _close(fast(x), expected, dtype)
        with torch.no_grad():
            _close(fast(x), expected, dtype)
        _close(fast(x), expected, dtype)  # grad mode on: the differentiable fold
        if not trained:
            _train_step(fast, opt, x, y)
            fast.eval()
            # The reference takes the trained weights and statistics: separate
            # fp32 training steps on two values per channel (layer4) diverge.
            ref.load_state_dict(fast.state_dict())


def _mutations(model, x):
    """Changes to the weights and running statistics, each followed by a
    forward, in the contexts where serving code makes them."""
    with torch.inference_mode():
        model.layer1[0].conv1.weight.mul_(0.5)
    yield "conv weight changed under inference_mode"
    with torch.no_grad():
        model.layer1[1].bn2.running_var.mul_(3)
        model.bn1.bias.add_(0.25)
    yield "running_var and BN bias changed under no_grad"
    # nn.BatchNorm2d's native running-stat update bumps no version counter of
    # the stats; a BN put in training mode on its own also bypasses the
    # block's train().
    shortcut_bn = model.layer2[0].downsample[1]
    shortcut_bn.train()
    with torch.no_grad():
        model(x * 3 + 1)
    shortcut_bn.eval()
    yield "shortcut BN running stats updated by a training forward"
    state = {k: v * 0.9 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    yield "load_state_dict"


@pytest.mark.parametrize("serving", [torch.no_grad, torch.inference_mode])
def test_updates_after_cached_calls_are_seen(serving):
    fast, ref = _pair()
    fast.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32)
    with serving():
        fast(x), fast(x)
    for what_fast, what_ref in zip(_mutations(fast, x), _mutations(ref, x), strict=True):
        assert what_fast == what_ref
        with torch.no_grad():
            expected = ref(x)
        with serving():
            _close(fast(x), expected, torch.float32)
        with torch.no_grad():
            _close(fast(x), expected, torch.float32)


@pytest.fixture
def fold_calls(monkeypatch):
    """Counts BN folds and oneDNN weight packs."""
    counts = {"fold": 0, "pack": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(fold_cache, "fold_bn", counting("fold", fold_cache.fold_bn))
    monkeypatch.setattr(inference, "pack_for_onednn", counting("pack", inference.pack_for_onednn))
    return counts


# resnet18: the stem, two per block, three projection shortcuts.
RESNET18_FOLDS = 1 + 2 * 8 + 3


def test_eval_before_every_batch_costs_no_refold(fold_calls):
    fast, ref = _pair()
    x = torch.randn(2, 3, 32, 32)
    fast.eval(), ref.eval()
    with torch.no_grad():
        expected = ref(x)
        fast(x)
        assert fold_calls["fold"] == RESNET18_FOLDS
        packs = fold_calls["pack"]
        assert packs > 0
        for _ in range(3):
            fast.eval()
            _close(fast(x), expected, torch.float32)
        with torch.inference_mode():
            fast.eval()
            _close(fast(x), expected, torch.float32)
    assert fold_calls == {"fold": RESNET18_FOLDS, "pack": packs}
    # A training step changes every weight: the next eval call folds again.
    opt = torch.optim.SGD(fast.parameters(), lr=0.01)
    _train_step(fast, opt, x, torch.randint(0, 10, (2,)))
    fast.eval()
    with torch.no_grad():
        fast(x)
    assert fold_calls["fold"] == 2 * RESNET18_FOLDS


@pytest.mark.parametrize("serving", [torch.no_grad, torch.inference_mode])
def test_autocast_bf16_inference_on_a_fresh_model(serving):
    fast, ref = _pair()
    fast.eval(), ref.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        exact = copy.deepcopy(ref).double()(x.double())
    with serving(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = ref(x)
        outs = [fast(x) for _ in range(2)]
    # As eager autocast does: the convolutions run in bf16, so the error is
    # bf16's; no worse than twice that of the unfused model.
    bound = 2 * (expected.double() - exact).norm()
    for out in outs:
        assert out.dtype == torch.bfloat16
        assert (out.double() - exact).norm() <= bound
    with torch.no_grad():
        _close(fast(x), ref(x), torch.float32)  # autocast off again: fp32 folds


def test_inference_tensor_weights_are_refolded_every_call_with_a_warning(fold_calls, monkeypatch):
    monkeypatch.setattr(fold_cache, "_warned_inference_weights", False)
    torch.manual_seed(0)
    with torch.inference_mode():
        fast = M.resnet20(num_classes=10).eval()
    torch.manual_seed(0)
    ref = plain_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match="inference tensor .* recomputed on every call"):
        with torch.no_grad():
            _close(fast(x), ref(x), torch.float32)
    folds = fold_calls["fold"]
    with torch.inference_mode():
        fast.layers[0][0].conv1.weight.mul_(0.5)  # an inference tensor: no version
    with torch.no_grad():
        ref.layers[0][0].conv1.weight.mul_(0.5)
        _close(fast(x), ref(x), torch.float32)
    assert fold_calls["fold"] == 2 * folds


def test_a_decided_call_is_reused_until_what_it_rests_on_changes(measuring, monkeypatch):
    """Each convolution decides its algorithm once (a ReadyCall) and runs it
    on later calls; a reset or loaded choice, another input layout or shape,
    autocast or a gradient to compute make it decide again, and a loaded
    choice runs from the next call on."""
    from resnet_fast.conv import eval_algorithms, taps

    decisions, tap_calls = [], []
    chosen = eval_algorithms.chosen
    monkeypatch.setattr(
        eval_algorithms, "chosen", lambda key, device: decisions.append(key) or chosen(key, device)
    )
    tap_conv = taps.conv
    monkeypatch.setattr(taps, "conv", lambda *a: tap_calls.append(1) or tap_conv(*a))
    fast, ref = _pair()
    fast.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = ref(x)
        with measuring.recording() as used:
            _close(fast(x), expected, torch.float32)
        first = len(decisions)
        assert first > 0 and not tap_calls
        _close(fast(x), expected, torch.float32)
        assert len(decisions) == first  # every call ran its ReadyCall

        measuring.load_measured_choices(
            {measuring.encode(key): "taps" for key in used if key[0] == eval_algorithms.KIND}
        )
        _close(fast(x), expected, torch.float32)
        assert len(decisions) == 2 * first and len(tap_calls) == first
        _close(fast(x), expected, torch.float32)
        assert len(decisions) == 2 * first and len(tap_calls) == 2 * first

        measuring.reset_measured_choices()
        _close(fast(x), expected, torch.float32)
        assert len(decisions) == 3 * first and len(tap_calls) == 2 * first

        _close(fast(x.contiguous()), expected, torch.float32)  # not channels_last: not eligible
        _close(fast(x[:1]), expected[:1], torch.float32)
        assert len(decisions) == 4 * first
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast(x)
        _close(fast(x), expected, torch.float32)
        assert len(decisions) == 5 * first
    fast.requires_grad_(False)
    out = fast(x.clone().requires_grad_())
    assert out.requires_grad  # decided again, with the gradient's path
    _close(out.detach(), expected, torch.float32)


def test_the_eval_classifier_is_prepacked_and_never_stale():
    """The zoo's eval classifier runs prepacked (last bits differ from
    F.linear's) and follows its weights; train mode and the plain twin run
    nn.Linear itself."""
    fast, ref = _pair()
    fast.eval(), ref.eval()
    features = torch.randn(4, fast.fc.in_features)
    with torch.no_grad():
        packed = fast._classify(features)
        _close(packed, ref.fc(features), torch.float32)
        assert "fc" in fast.fold_cache.packed
        fast.fc.weight.mul_(-1.0)
        _close(fast._classify(features), fast.fc(features), torch.float32)
        assert ref._classify(features).equal(ref.fc(features))
        fast.train()
        assert fast._classify(features).equal(fast.fc(features))


def test_blocks_sum_into_their_input_only_where_nothing_else_sees_it():
    """In eval, a zoo model's blocks write their residual sum into their
    input's memory (made by the model's own forward); a block called with a
    tensor of the caller's, or under a hook that sees it, leaves it alone."""
    fast, ref = _pair("resnet50")
    fast.eval(), ref.eval()
    fast, ref = (m.to(memory_format=torch.channels_last) for m in (fast, ref))
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    block = fast.layer1[1]
    given = torch.randn(2, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    kept = given.clone()
    with torch.no_grad():
        expected = ref(x)
        for _ in range(2):  # deciding, then the ReadyCalls
            _close(fast(x), expected, torch.float32)
        out = block(given)
        assert given.equal(kept) and out.data_ptr() != given.data_ptr()
        _close(out, ref.layer1[1](given), torch.float32)
        out = block.forward_reusing(given, True)
        assert out.data_ptr() == given.data_ptr()  # the caller's promise taken

        keep = []
        handle = fast.layer1[1].register_forward_hook(lambda m, a, y: keep.append((y, y.clone())))
        _close(fast(x), expected, torch.float32)
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, a, y: keep.append((y, y.clone())) if m is fast.layer1[1] else None
        )
        _close(fast(x), expected, torch.float32)
        handle.remove()
        assert len(keep) == 2
        for stored, copy in keep:
            assert stored.equal(copy)  # the hooks' tensors were not summed into
