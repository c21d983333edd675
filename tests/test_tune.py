"""resnet_fast.tune: eval-mode choices timed in whole forward passes of the
model (conv/settle.py), stored, and then run by every eval call."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from user_models import TwoConvBlock

import resnet_fast
from resnet_fast.conv import settle

CL = torch.channels_last
OPS = {"winograd": "resnet_fast::winograd_conv3x3", "taps": "resnet_fast::taps_conv"}


class _CountCalls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


@pytest.fixture
def models(gen):
    plain = TwoConvBlock()
    with torch.no_grad():
        for bn in (plain.bn1, plain.bn2):
            bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
    plain.eval()
    fast = resnet_fast.convert(copy.deepcopy(plain)).to(memory_format=CL).eval()
    x = torch.randn(2, 16, 8, 8, generator=gen).contiguous(memory_format=CL)
    return plain, fast, x


def _calls(model, x) -> dict[str, int]:
    """How many convolutions each non-default candidate ran in a forward."""
    with torch.no_grad(), _CountCalls() as calls:
        model(x)
    return {name: calls.names.count(op) for name, op in OPS.items()}


def _fake_gains(own: dict[tuple[str, bool], float], pass_gain: dict[tuple, float], log: list):
    """A stand-in for settle._paired_gains: every key's own time 2.0 ms
    direct, and by a candidate c own[c, key has a residual] (2.0 where
    absent); the whole pass with an assignment faster by pass_gain[the
    assignment as sorted (has a residual, candidate) pairs] (0 where absent)."""

    def paired_gains(model, example, assignments):
        log.append(assignments)
        gains = [
            pass_gain.get(tuple(sorted((k[6], c) for k, c in a.items())), 0.0) for a in assignments
        ]
        direct = {key: 2.0 for key in assignments[0]}
        times = [{key: own.get((c, key[6]), 2.0) for key, c in a.items()} for a in assignments]
        return gains, [direct, *times]

    return paired_gains


EVERY_WINOGRAD = ((False, "winograd"), (True, "winograd"))
EVERY_TAPS = ((False, "taps"), (True, "taps"))


def test_switches_the_convolutions_faster_in_the_model(models, measuring, monkeypatch):
    plain, fast, x = models
    log = []
    own = {("winograd", False): 1.0, ("winograd", True): 2.0}
    gains = {EVERY_WINOGRAD: 1.0, ((False, "winograd"),): 5.0}
    monkeypatch.setattr(settle, "_paired_gains", _fake_gains(own, gains, log))
    chosen = resnet_fast.tune(fast, x)
    assert sorted(chosen.values()) == ["onednn", "winograd"]
    # First every open key by each candidate, then the one faster alone, on the whole pass.
    assert [[len(a) for a in assignments] for assignments in log] == [[2, 2], [1]]
    assert _calls(fast, x) == {"winograd": 1, "taps": 0}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_each_key_takes_its_fastest_candidate(models, measuring, monkeypatch):
    plain, fast, x = models
    own = {("winograd", False): 1.0, ("taps", False): 1.5, ("taps", True): 1.0}
    mixed = ((False, "winograd"), (True, "taps"))
    gains = {EVERY_WINOGRAD: 1.0, EVERY_TAPS: 2.0, mixed: 3.0}
    monkeypatch.setattr(settle, "_paired_gains", _fake_gains(own, gains, []))
    assert sorted(resnet_fast.tune(fast, x).values()) == ["taps", "winograd"]
    assert _calls(fast, x) == {"winograd": 1, "taps": 1}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_takes_every_convolution_when_that_pass_gains_most(models, measuring, monkeypatch):
    _, fast, x = models
    own = {("winograd", False): 1.0, ("taps", True): 1.0}
    gains = {EVERY_TAPS: 8.0, ((False, "winograd"), (True, "taps")): 5.0}
    monkeypatch.setattr(settle, "_paired_gains", _fake_gains(own, gains, []))
    assert sorted(resnet_fast.tune(fast, x).values()) == ["taps", "taps"]
    assert _calls(fast, x) == {"winograd": 0, "taps": 2}


def test_keeps_the_direct_convolution_when_the_whole_pass_does_not_gain(
    models, measuring, monkeypatch
):
    _, fast, x = models
    log = []
    # Both faster alone (1.0 against 2.0 ms), but the pass gains less than
    # the margin of their 4.0 ms; no second pass: the fastest alone is a
    # uniform assignment.
    own = {("winograd", False): 1.0, ("winograd", True): 1.0}
    gains = {EVERY_WINOGRAD: 0.5 * measuring.MARGIN * 4.0}
    monkeypatch.setattr(settle, "_paired_gains", _fake_gains(own, gains, log))
    chosen = resnet_fast.tune(fast, x)
    assert sorted(chosen.values()) == ["onednn", "onednn"]
    assert len(log) == 1
    assert _calls(fast, x) == {"winograd": 0, "taps": 0}


def test_no_second_pass_when_none_is_faster_alone(models, measuring, monkeypatch):
    _, fast, x = models
    log = []
    own = {("winograd", True): 1.99, ("taps", False): 1.995}
    gains = {EVERY_WINOGRAD: 0.1}  # under the margin of 4.0 ms
    monkeypatch.setattr(settle, "_paired_gains", _fake_gains(own, gains, log))
    assert sorted(resnet_fast.tune(fast, x).values()) == ["onednn", "onednn"]
    assert len(log) == 1  # 1.99 ms is within the margin of 2.0 ms


def test_choices_are_stored_and_taken_by_a_later_process(models, measuring, monkeypatch):
    _, fast, x = models
    own = {("winograd", False): 1.0, ("winograd", True): 1.0}
    monkeypatch.setattr(settle, "_paired_gains", _fake_gains(own, {EVERY_WINOGRAD: 5.0}, []))
    chosen = resnet_fast.tune(fast, x)
    assert set(chosen.values()) == {"winograd"}
    assert resnet_fast.tune(fast, x) == {}  # decided: one pass, nothing timed
    measuring.reset_measured_choices()  # a new process: only the store remembers
    monkeypatch.setattr(settle, "_paired_gains", _unexpected)
    assert _calls(fast, x) == {"winograd": 2, "taps": 0}
    assert resnet_fast.tune(fast, x) == {}
    assert measuring._the_store().read() == chosen


def _unexpected(*args):
    raise AssertionError("timed a choice that was stored")


def test_untuned_eval_runs_direct_and_times_nothing(models, measuring, monkeypatch):
    _, fast, x = models
    monkeypatch.setattr(measuring, "_interleaved_medians", _unexpected)
    assert _calls(fast, x) == {"winograd": 0, "taps": 0}
    assert measuring._the_store().read() == {}


def test_nothing_is_timed_where_measuring_is_off(models, monkeypatch):
    _, fast, x = models  # the test suite runs with RESNET_FAST_MEASURE=0
    monkeypatch.setattr(settle, "_paired_gains", _unexpected)
    assert resnet_fast.tune(fast, x) == {}


def test_real_passes_decide_and_keep_the_math(models, measuring):
    plain, fast, x = models
    chosen = resnet_fast.tune(fast, x)
    assert len(chosen) == 2 and set(chosen.values()) <= {"onednn", "winograd", "taps"}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    counts = _calls(fast, x)
    assert counts == {name: list(chosen.values()).count(name) for name in OPS}


def test_argument_errors(models):
    _, fast, x = models
    with pytest.raises(TypeError, match="nn.Module"):
        resnet_fast.tune(lambda t: t, x)
    with pytest.raises(TypeError, match="tensor"):
        resnet_fast.tune(fast, x.numpy())
    with pytest.raises(ValueError, match="eval"):
        resnet_fast.tune(fast.train(), x)
