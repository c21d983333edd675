"""Eval mode: BN folded into the convolutions, cached but never stale; save,
load, deepcopy and state_dict round trips."""

import copy
import io

import pytest
import torch
from torch import nn

import resnet_fast.models as M
from resnet_fast.models.reference import reference_model


def _pair(name="resnet18", dtype=torch.float32):
    torch.manual_seed(0)
    fast = getattr(M, name)(num_classes=10).to(dtype)
    torch.manual_seed(0)
    ref = reference_model(name, num_classes=10).to(dtype)
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
