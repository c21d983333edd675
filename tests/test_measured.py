"""Choices measured on the machine (resnet_fast/conv/measured.py) and the
residual blocks' measured choice between the lean node and eager PyTorch
(resnet_fast/lean/residual.py). Timings are injected where a test checks which
way a choice goes, so no assertion depends on this machine's speed."""

import time

import pytest
import torch
from test_lean import BLOCKS, _assert_steps_match, _blocks
from user_models import tutorial_resnet18

import resnet_fast
from resnet_fast.conv import measured
from resnet_fast.harness.fusion import count_calls

CPU = torch.device("cpu")


def _timed(monkeypatch, times: dict[str, float]) -> list:
    """Makes every measurement report ``times`` (name -> ms); returns the
    list of candidate-name lists measured."""
    calls = []

    def fake(candidates):
        calls.append(sorted(candidates))
        for fn in candidates.values():  # the candidates still run once
            fn()
        return {name: times[name] for name in candidates}

    monkeypatch.setattr(measured, "_interleaved_medians", fake)
    return calls


def test_choose_times_the_candidates_and_remembers_the_faster(measuring):
    def slow():
        time.sleep(0.02)

    runs = []
    candidates = {"slow": slow, "fast": lambda: runs.append(1)}
    assert measured.choose(("t", 1), "slow", lambda: candidates, CPU) == "fast"
    assert runs  # the fast candidate ran (untimed once, then timed)
    assert len(runs) == 1 + measured.ROUNDS
    # Remembered: the candidates are not even built again.
    assert measured.choose(("t", 1), "slow", lambda: pytest.fail("measured twice"), CPU) == "fast"
    # Stored under the key and the thread count it was timed with.
    threads = torch.get_num_threads()
    assert measured.measured_choices() == {measured.encode(("t", 1, threads)): "fast"}
    measured.reset_measured_choices()
    assert measured.measured_choices() == {}


@pytest.mark.parametrize("other_ms, expected", [(0.96, "other"), (0.98, "default")])
def test_the_default_is_kept_unless_another_is_faster_by_the_margin(
    other_ms, expected, measuring, monkeypatch
):
    _timed(monkeypatch, {"default": 1.0, "other": other_ms})
    candidates = {"default": lambda: None, "other": lambda: None}
    assert measured.choose(("m",), "default", lambda: candidates, CPU) == expected


@pytest.mark.parametrize("why", ["disabled", "on-a-gpu", "compiling"])
def test_no_measurement_gives_the_default_and_remembers_nothing(why, measuring, monkeypatch):
    device = CPU
    if why == "disabled":
        monkeypatch.setattr(measured, "ENABLED", False)
    elif why == "on-a-gpu":
        device = torch.device("cuda")
    else:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    built = lambda: pytest.fail("measured")  # noqa: E731
    assert measured.choose(("n",), "default", built, device) == "default"
    assert measured.measured_choices() == {}


def test_recording_collects_the_choices_made_inside(measuring, monkeypatch):
    _timed(monkeypatch, {"a": 2.0, "b": 1.0})
    candidates = {"a": lambda: None, "b": lambda: None}
    measured.choose(("before",), "a", lambda: candidates, CPU)
    with measured.recording() as used:
        measured.choose(("inside",), "a", lambda: candidates, CPU)
        measured.choose(("before",), "a", lambda: candidates, CPU)  # remembered, still used
    measured.choose(("after",), "a", lambda: candidates, CPU)
    threads = torch.get_num_threads()  # every key holds for the thread count it was timed with
    assert used == {("inside", threads): "b", ("before", threads): "b"}


@pytest.mark.parametrize(
    "name", ["RESNET_FAST_MEASURE", "RESNET_FAST_WINOGRAD", "RESNET_FAST_TAPS"]
)
def test_a_bad_setting_in_the_environment_is_refused(name):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import resnet_fast"],
        env={name: "yes", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert f"{name} must be 0 or 1" in proc.stderr


@pytest.mark.parametrize("winner", ["eager", "lean", "standard"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_a_block_runs_what_was_measured_and_computes_the_same(name, winner, measuring, monkeypatch):
    """memory="auto": the block is timed each way once (injected times
    here), runs the winner, and matches the reference block in float64:
    outputs, gradients, and the running statistics of exactly one update
    (the measurement's own steps leave no trace in them, nor in .grad)."""
    times = {"lean": 2.0, "standard": 2.0, "eager": 2.0}
    times[winner] = 1.0
    calls = _timed(monkeypatch, times)
    fast, ref = _blocks(BLOCKS[name], memory="auto")
    x = _assert_steps_match(fast, ref, BLOCKS[name][1], torch.Generator().manual_seed(3))
    assert calls.count(["eager", "lean", "standard"]) == 1  # one shape: measured once
    # What runs: eager leaves aten batch norms and calls no fused op; lean
    # and standard call the fused ops, lean inside its one autograd node.
    batch_norms, fused_ops = count_calls(fast, x)
    if winner == "eager":
        assert batch_norms > 0 and fused_ops == 0
    else:
        assert batch_norms == 0 and fused_ops > 0
        out = fast(x.detach().requires_grad_())
        assert ("LeanBlock" in out.grad_fn.name()) == (winner == "lean"), out.grad_fn.name()


def test_a_frozen_block_in_training_mode_is_measured_too(measuring, monkeypatch):
    """BN in training mode with every parameter frozen (a frozen backbone
    whose statistics still update): the forward-only step is measured."""
    calls = _timed(monkeypatch, {"lean": 2.0, "standard": 2.0, "eager": 1.0})
    fast, ref = _blocks(BLOCKS["basic-projection-s2"], memory="auto")
    for p in [*fast.parameters(), *ref.parameters()]:
        p.requires_grad_(False)
    x = torch.randn(3, 8, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-12, atol=1e-12)
    assert calls == [["eager", "lean", "standard"]]
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-12, atol=1e-12)


def test_a_converted_user_model_measures_its_blocks_too(measuring, monkeypatch):
    """The graph route (convert of a user's model) takes the same choice."""
    _timed(monkeypatch, {"lean": 2.0, "standard": 2.0, "eager": 1.0, "onednn": 1.0, "gemm": 2.0})
    torch.manual_seed(0)
    model = tutorial_resnet18(width=8).double()
    original = tutorial_resnet18(width=8).double()
    original.load_state_dict(model.state_dict())
    converted = resnet_fast.convert(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with measured.recording() as used:
        out = converted(x)
    torch.testing.assert_close(out, original(x), rtol=1e-12, atol=1e-12)
    blocks = {key: choice for key, choice in used.items() if key[0] == "block"}
    assert blocks and set(blocks.values()) == {"eager"}
    batch_norms, _ = count_calls(converted, x)  # the blocks' BNs run as aten's
    assert batch_norms >= 2 * len(blocks)
    for key, value in original.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[key], value, rtol=1e-12, atol=1e-12)
