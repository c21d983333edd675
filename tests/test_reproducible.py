"""Same seed, same machine, same bits, with the measured choices on (the
default): the choices are stored per machine and build and taken from there
by every later process (resnet_fast/conv/choice_store.py), carried by the
example's checkpoints, decided by rank 0 for every rank of a distributed
job, and never timed under torch.use_deterministic_algorithms(True)."""

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_harness import ROOT, child_env, run_ranks
from test_example_train import SCRIPT, TIMEOUT_S

from resnet_fast.conv import choice_store, measured

TINY = ["--synthetic", "--image-size", "8", "--max-steps", "2", "--no-plain", "--dtype", "float32"]


def _train(tmp_path: Path, name: str, choices: Path, *args: str) -> subprocess.CompletedProcess:
    """examples/train.py with measuring on (the default) and stored choices
    in ``choices``; checkpoint at tmp_path/name."""
    cmd = [sys.executable, str(SCRIPT), *TINY, "--checkpoint", str(tmp_path / name), *args]
    env = child_env(RESNET_FAST_MEASURE="1", RESNET_FAST_CHOICES_DIR=str(choices))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, cwd=ROOT)
    return proc


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)["models"]["fast"]


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(t, b[k]) for k, t in a.items())


def test_the_same_command_twice_gives_the_same_bits(tmp_path):
    choices = tmp_path / "choices"
    _ok(_train(tmp_path, "first.pt", choices, "--epochs", "1"))
    (stored,) = choices.glob("*.json")
    entries = json.loads(stored.read_text())["choices"]
    assert any(key.startswith("('block'") for key in entries), entries
    _ok(_train(tmp_path, "second.pt", choices, "--epochs", "1"))
    assert _same_weights(_weights(tmp_path / "first.pt"), _weights(tmp_path / "second.pt"))
    # The stored choices are what kept them equal: flipped, the bits change.
    flip = {"lean": "eager", "standard": "eager", "eager": "lean"}
    flipped = {k: flip.get(v, v) for k, v in entries.items()}
    data = json.loads(stored.read_text())
    stored.write_text(json.dumps({**data, "choices": flipped}))
    _ok(_train(tmp_path, "flipped.pt", choices, "--epochs", "1"))
    assert not _same_weights(_weights(tmp_path / "first.pt"), _weights(tmp_path / "flipped.pt"))


@pytest.mark.parametrize("resume_choices", ["stored", "checkpoint only"])
def test_killed_and_resumed_ends_bit_identical(tmp_path, resume_choices):
    """With measuring on. "checkpoint only": the resumed process finds no
    stored choices (another machine's cache, or a cleared one) and takes the
    ones the checkpoint carries."""
    choices = tmp_path / "choices"
    _ok(_train(tmp_path, "whole.pt", choices, "--epochs", "3"))
    killed = _train(tmp_path, "ckpt.pt", choices, "--epochs", "3", "--kill-at-step", "5")
    assert killed.returncode != 0
    elsewhere = choices if resume_choices == "stored" else tmp_path / "empty"
    out = _ok(_train(tmp_path, "ckpt.pt", elsewhere, "--epochs", "3", "--resume")).stdout
    assert "resumed from" in out, out
    whole = torch.load(tmp_path / "whole.pt", weights_only=False)
    resumed = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    # The resumed process took a subset (what measuring the blocks needed is
    # not needed again), the same one for every key.
    taken, decided = resumed["measured_choices"], whole["measured_choices"]
    assert taken and all(decided[k] == v for k, v in taken.items())
    for key in ("models", "history"):
        whole[key].pop("plain", None), resumed[key].pop("plain", None)
    assert _same_weights(whole["models"]["fast"], resumed["models"]["fast"])
    assert [h[:2] for h in whole["history"]["fast"]] == [h[:2] for h in resumed["history"]["fast"]]


def test_ranks_take_rank_zeros_choices(tmp_path):
    """Each rank is made to time the candidates differently (injected
    timings) and has a store of its own: they still take the same choices,
    rank 0's, and only rank 0 times anything; also for the convolution
    choices rank 0 meets while it times a block's candidates."""
    script = Path(__file__).with_name("choices_worker.py")
    results = run_ranks(script, 2, tmp_path, timeout=TIMEOUT_S)
    choices = results[0]["choices"]
    assert choices == results[1]["choices"]
    blocks = {v for k, v in choices.items() if k.startswith("('block'")}
    convs = {v for k, v in choices.items() if k.startswith("('conv'")}
    # Rank 0's timings: lean blocks, and a matrix product wherever one was a candidate.
    assert blocks == {"lean"} and "gemm" in convs and "winograd" not in convs, choices
    assert results[0]["timed"] > 0 and results[1]["timed"] == 0


def _store(tmp_path) -> choice_store.ChoiceStore:
    return choice_store.ChoiceStore(str(tmp_path), measured._the_store().fingerprint)


def test_a_corrupt_file_is_ignored_with_one_warning(tmp_path):
    store = _store(tmp_path)
    Path(store.path).write_text("{not json")
    with pytest.warns(RuntimeWarning, match="ignoring the measured-choice file"):
        assert store.read() == {}
    assert store.read() == {}  # no second warning (pytest would not fail on it, so count)
    assert store.settle("k", "a") == "a"  # rewritten whole
    assert store.read() == {"k": "a"}


def test_a_foreign_file_is_ignored(tmp_path):
    store = _store(tmp_path)
    store.settle("k", "a")
    data = json.loads(Path(store.path).read_text())
    data["fingerprint"] = {**data["fingerprint"], "cpu": "another processor"}
    Path(store.path).write_text(json.dumps(data))
    with pytest.warns(RuntimeWarning, match="another machine or build"):
        assert store.read() == {}


def test_another_fingerprint_is_another_file(tmp_path):
    prints = measured._the_store().fingerprint
    for field in prints:
        other = choice_store.ChoiceStore(str(tmp_path), {**prints, field: "changed"})
        assert other.path != _store(tmp_path).path, field


def _settle_many(directory: str, prints: dict, worker: int) -> dict:
    store = choice_store.ChoiceStore(directory, prints)
    return {f"k{i}": store.settle(f"k{i}", f"w{worker}") for i in range(40)}


def test_concurrent_processes_settle_on_one_choice_per_key(tmp_path):
    """Four processes store the same keys at once: one value per key wins,
    every process ends up with it, and the file stays whole."""
    prints = measured._the_store().fingerprint
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        seen = pool.starmap(_settle_many, [(str(tmp_path), prints, w) for w in range(4)])
    stored = _store(tmp_path).read()
    assert len(stored) == 40
    assert all(s == stored for s in seen)


def _stored_key(*key):
    """How a choice's key is stored: with the thread count it holds for."""
    return measured.encode((*key, torch.get_num_threads()))


def test_deterministic_algorithms_take_the_defaults(measuring, monkeypatch):
    measuring._the_store().settle(_stored_key("k"), "stored")
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)

    def no_timing(candidates):
        raise AssertionError("timed under deterministic algorithms")

    monkeypatch.setattr(measuring, "_interleaved_medians", no_timing)
    assert measuring.choose(("k",), "default", lambda: {}, torch.device("cpu")) == "default"
    measuring.load_measured_choices({_stored_key("k"): "loaded"})
    assert measuring.choose(("k",), "default", lambda: {}, torch.device("cpu")) == "loaded"


def test_stored_choices_are_taken_without_timing(measuring, monkeypatch):
    measuring._the_store().settle(_stored_key("k", 1), "other")

    def no_timing(candidates):
        raise AssertionError("timed a stored choice")

    monkeypatch.setattr(measuring, "_interleaved_medians", no_timing)
    assert measuring.choose(("k", 1), "default", lambda: {}, torch.device("cpu")) == "other"
    assert measuring.measured_choices() == {_stored_key("k", 1): "other"}
