"""``resnet-fast bench`` on user-style models: the tutorial CIFAR ResNet-18
runs at its own size, its fast variant is resnet_fast.convert of a copy, and
a fast model that fused nothing is warned about and shown, never passed off
as fast."""

import copy
import dataclasses
import json

import pytest
import torch

import resnet_fast.models as M
from resnet_fast.cli.main import build_parser, main, model_sizes
from resnet_fast.harness import workloads as registry
from resnet_fast.harness.fusion import count_fusion
from resnet_fast.harness.tutorial_models import (
    TutorialBasicBlock,
    TutorialCifarResNet,
    tutorial_cifar_resnet18,
)
from resnet_fast.models.plain import plain_model

TUTORIAL = "tutorial_cifar_resnet18"


def _sizes(argv, names):
    args = build_parser().parse_args(["bench", *argv])
    return model_sizes(args, torch.device("cpu"), names)


def test_tutorial_model_runs_at_its_own_size_unless_told():
    names = ["resnet18", TUTORIAL]
    assert _sizes([], names) == {"resnet18": (16, 64), TUTORIAL: (64, 32)}
    assert _sizes(["--quick"], names) == {"resnet18": (4, 32), TUTORIAL: (4, 32)}
    assert _sizes(["--batch-size", "8"], names) == {"resnet18": (8, 64), TUTORIAL: (8, 32)}


def test_tutorial_model_at_another_resolution_is_refused(capsys):
    # Its head is a fixed 4x4 pool: 64x64 inputs cannot reach the classifier.
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--models", TUTORIAL, "--resolution", "64"])
    assert exit_info.value.code == 2
    assert f"{TUTORIAL} cannot train at --batch-size 64 and --resolution 64" in (
        capsys.readouterr().err
    )


def test_fast_variant_is_convert_of_a_copy():
    torch.manual_seed(0)
    eager = tutorial_cifar_resnet18()
    before = {k: v.clone() for k, v in eager.state_dict().items()}
    types = [type(m) for m in eager.modules()]
    fast = registry.BENCH_MODELS[TUTORIAL].build_fast(eager)
    assert fast is not eager and [type(m) for m in eager.modules()] == types
    x = torch.randn(2, 3, 32, 32)
    fast.eval(), eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), eager(x), rtol=1e-4, atol=1e-4)
    for k, v in eager.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fusion_count_sees_fused_and_unfused_models():
    torch.manual_seed(0)
    eager = plain_model("resnet20")
    fast = M.resnet20()
    x = torch.randn(2, 3, 16, 16)
    count = count_fusion(fast, eager, x)
    assert count.batch_norms == 19 and count.fused == 19 and count.fused_ops > 0
    nothing = count_fusion(copy.deepcopy(eager), eager, x)
    assert (nothing.batch_norms, nothing.fused, nothing.fused_ops) == (19, 0, 0)


def test_bench_warns_and_shows_a_fast_model_that_fused_nothing(tmp_path, capsys, monkeypatch):
    # A stand-in "conversion" that fuses nothing: whatever resnet_fast.convert
    # does with the tutorial model, this path must say so in the output. One
    # block per stage keeps the test short (12 BatchNorms: stem, 4 x 2, 3 shortcuts).
    spec = dataclasses.replace(
        registry.BENCH_MODELS[TUTORIAL],
        build_eager=lambda: TutorialCifarResNet(TutorialBasicBlock, [1, 1, 1, 1]),
        build_fast=copy.deepcopy,
    )
    monkeypatch.setitem(registry.BENCH_MODELS, TUTORIAL, spec)
    argv = ["bench", "--quick", "--no-progress", "--models", TUTORIAL, "--batch-size", "2"]
    argv += ["--rounds", "1", "--warmup", "0", "--out", str(tmp_path)]
    with pytest.warns(RuntimeWarning, match="fused 0 of 12 BatchNorms"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "BN fused" in out and "0/12" in out
    assert "note: tutorial_cifar_resnet18: the fast model fused 0 of 12 BatchNorms" in out
    (row,) = json.loads((tmp_path / "bench-cpu.json").read_text())["rows"]
    assert (row["batch_size"], row["resolution"]) == (2, 32)
    assert row["fusion"]["fused"] == 0 and row["fusion"]["warning"]
    assert row["check"]["ok"] and row["train"]["fast"]["images_per_s"] > 0


def test_caption_names_each_models_size_when_they_differ():
    from resnet_fast.harness.report import bench_caption

    env = {"gpu": None, "cpu": "a CPU", "threads": 2, "torch": "2.x"}
    settings = {"precision": "fp32", "channels_last": True, "rounds": 3}
    settings.update(batch_size=16, resolution=64)
    rows = [{"model": "resnet18", "batch_size": 16, "resolution": 64}]
    result = {"environment": env, "settings": settings, "rows": rows}
    assert "| batch 16 | 64x64 |" in bench_caption(result)
    rows.append({"model": TUTORIAL, "batch_size": 64, "resolution": 32})
    assert f"resnet18 16 x 64x64, {TUTORIAL} 64 x 32x32" in bench_caption(result)
    old = {"environment": env, "settings": settings, "rows": [{"model": "resnet50"}]}
    assert "| batch 16 | 64x64 |" in bench_caption(old)  # results made before per-model sizes
