"""The resnet-fast command: argument errors, info, check, and --quick runs of
bench and ops that write their JSON and PNG files."""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

import resnet_fast
from resnet_fast.cli.main import main
from resnet_fast.harness import check as check_module
from resnet_fast.harness.backends import backend_status
from resnet_fast.harness.timing import interleaved_ms, summarize

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _error(capsys, argv: list[str]) -> str:
    """Runs resnet-fast with bad arguments: exit status 2 and the message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--models", "resnet9"], "unknown model 'resnet9'; known: resnet18"),
        (["bench", "--models", ","], "--models: unknown model"),
        (["bench", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["bench", "--batch-size", "many"], "expected a whole number, got 'many'"),
        (["bench", "--resolution", "-3"], "--resolution: must be at least 1"),
        (["bench", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["bench", "--dtype", "fp8"], "--dtype must be auto, fp32, bf16 or fp16"),
        (
            ["bench", "--batch-size", "1", "--resolution", "32"],
            "resnet18 cannot train at --batch-size 1 and --resolution 32",
        ),
        (["ops", "--ops", "softmax"], "unknown op 'softmax'; known: batch_norm_relu"),
        (["check", "--backends", "metal"], "unknown backend 'metal'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    assert message in _error(capsys, argv)


@pytest.mark.parametrize("command", ["bench", "ops"])
def test_out_that_cannot_be_a_folder_is_refused_before_any_timing(capsys, tmp_path, command):
    file = tmp_path / "results"
    file.write_text("")
    assert "--out must be a folder" in _error(capsys, [command, "--out", str(file)])
    err = _error(capsys, [command, "--out", str(file / "inner")])
    assert "cannot make a folder under the file" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["bench", "ops"])
def test_cuda_asked_for_without_cuda(capsys, command):
    err = _error(capsys, [command, "--device", "cuda"])
    assert "--device cuda: CUDA is not available here" in err


def test_info_lists_every_backend_and_the_build(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in resnet_fast.BACKENDS:
        assert f"\n  {name} " in out
    assert resnet_fast.build_info()["cpu_capability"] in out
    assert torch.__version__ in out


def test_info_json_and_python_dash_m():
    run = subprocess.run(
        [sys.executable, "-m", "resnet_fast", "info", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert [b["name"] for b in info["backends"]] == list(resnet_fast.BACKENDS)
    assert info["build_info"]["backends"] == resnet_fast.build_info()["backends"]


def test_check_passes_on_this_machine(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "MISMATCH" not in out
    for name in resnet_fast.build_info()["backends"]:
        if backend_status(name).available:
            assert f"{name:10}" in out and "cases" in out


def test_check_reports_a_wrong_op(monkeypatch, capsys):
    # An op off by a small shift must be caught: the check is not vacuous.
    good = check_module._FAST["bn"]
    monkeypatch.setitem(check_module._FAST, "bn", lambda *a, **k: good(*a, **k) + 1e-3)
    assert main(["check", "--backends", "cpu,reference"]) == 1
    out = capsys.readouterr().out
    assert "batch_norm_relu train float32" in out and "MISMATCH" in out


def test_interleaved_timing_warms_up_and_alternates():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved_ms(fns, torch.device("cpu"), rounds=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b", "b", "a", "a", "b"]
    assert [len(t) for t in times.values()] == [3, 3]
    assert summarize([3.0, 1.0, 2.0])["median_ms"] == 2.0


def _check_png(path, err):
    if HAS_MATPLOTLIB:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in err


def test_bench_quick_writes_table_json_and_png(tmp_path, capsys):
    assert main(["bench", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "training step" in captured.out and "inference" in captured.out
    result = json.loads((tmp_path / "bench-cpu.json").read_text())
    (row,) = result["rows"]
    assert row["model"] == "resnet18" and row["backend"] == "cpu"
    assert row["check"]["ok"]
    for mode in ("train", "infer"):
        for variant in ("fast", "eager"):
            stats = row[mode][variant]
            assert len(stats["samples_ms"]) == 3 and stats["images_per_s"] > 0
        assert row[mode]["speedup_vs_eager"] > 0
    assert row["saved_bytes_per_image"]["fast"] > 0
    assert result["environment"]["build_info"] == resnet_fast.build_info()
    assert result["settings"]["batch_size"] == 4
    _check_png(tmp_path / "bench-cpu.png", captured.err)


def test_ops_quick_writes_table_json_and_png(tmp_path, capsys):
    argv = ["ops", "--quick", "--no-progress", "--ops", "add_relu", "--out", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads((tmp_path / "ops-cpu.json").read_text())
    assert {(r["pass"], r["C"], r["H"]) for r in result["rows"]} == {
        (p, c, h) for p in ("fwd", "fwd+bwd") for c, h in [(64, 56), (512, 7)]
    }
    assert all(r["fused_GBps"] > 0 and r["speedup"] > 0 for r in result["rows"])
    assert "geomean speed-up" in captured.out
    _check_png(tmp_path / "ops-cpu.png", captured.err)
