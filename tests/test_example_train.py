"""examples/train.py, run as users run it (a subprocess; torchrun with 2 CPU
processes over gloo): the fast and the plain model compute the same training
(losses equal to the dtype's precision), and a run killed by SIGKILL at a
random step and resumed from its checkpoint ends bit-identical to one never
interrupted."""

import importlib.util
import random
import subprocess
import sys

import pytest
import torch
from dist_harness import ROOT, child_env

import resnet_fast
from resnet_fast.models.plain import plain_model

SCRIPT = ROOT / "examples" / "train.py"
TIMEOUT_S = 300  # one run takes ~10 s alone; generous for a loaded 2-core machine
EPOCHS, STEPS = 3, 2  # steps per epoch; both models step, so a process takes 2 * STEPS per epoch
TINY = ["--synthetic", "--image-size", "8", "--epochs", str(EPOCHS), "--max-steps", str(STEPS)]


def load_script():
    spec = importlib.util.spec_from_file_location("train_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(nproc: int, *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launch, str(SCRIPT), *TINY, *args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=child_env(), timeout=TIMEOUT_S, cwd=ROOT
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"examples/train.py did not finish within {TIMEOUT_S} s:\n{e.stderr}")
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def assert_same_run(a: dict, b: dict) -> None:
    """Checkpoints a and b hold bit-identical weights, optimizer and scheduler
    states, data order and per-epoch losses and accuracies."""
    assert a["epoch"] == b["epoch"] == EPOCHS and a["step"] == b["step"]
    for kind in ("fast", "plain"):
        for name, t in a["models"][kind].items():
            assert torch.equal(t, b["models"][kind][name]), f"{kind} {name} differs"
        momenta_a = [s["momentum_buffer"] for s in a["optimizers"][kind]["state"].values()]
        momenta_b = [s["momentum_buffer"] for s in b["optimizers"][kind]["state"].values()]
        assert len(momenta_a) == len(momenta_b) > 0
        assert all(torch.equal(x, y) for x, y in zip(momenta_a, momenta_b, strict=True))
        assert a["schedulers"][kind] == b["schedulers"][kind]
        # (loss, accuracy) of every epoch; images/s differ from run to run
        assert [h[:2] for h in a["history"][kind]] == [h[:2] for h in b["history"][kind]]
    assert all(torch.equal(a["plan"][k], b["plan"][k]) for k in a["plan"])


@pytest.mark.parametrize(
    "nproc, dtype, tol",
    [(1, "float64", 1e-12), (2, "float32", 1e-5)],
    ids=["1proc-float64", "2procs-float32"],
)
def test_like_for_like_and_kill_resume(tmp_path, nproc, dtype, tol):
    # An uninterrupted run.
    whole = tmp_path / "whole.pt"
    out = run(nproc, "--dtype", dtype, "--checkpoint", str(whole)).stdout
    assert out.count("epoch 1/3 | fast:") == 1, out  # only rank 0 prints
    if nproc > 1:
        assert "2 process(es), gloo backend" in out, out
        assert "BatchNorm statistics in both models: per process" in out, out
    ref = torch.load(whole, weights_only=False)
    fast, plain = ref["history"]["fast"], ref["history"]["plain"]
    # float64: every epoch; float32: the first (2 steps), before rounding
    # differences grow through training's chaotic dynamics.
    for (loss_f, _, _), (loss_p, _, _) in zip(fast, plain, strict=True):
        assert abs(loss_f - loss_p) <= tol * abs(loss_p), (fast, plain)
        if dtype == "float32":
            break
    # The fast model's weights load into the plain twin, key for key.
    twin = plain_model("resnet20", num_classes=10).to(getattr(torch, dtype))
    twin.load_state_dict(ref["models"]["fast"], strict=True)

    # Killed (SIGKILL, no clean-up) at a random step past the first
    # checkpoint, then resumed until the end.
    steps_total = EPOCHS * 2 * STEPS
    kill = random.Random(nproc).randint(2 * STEPS + 1, steps_total - 1)
    ckpt = tmp_path / "ckpt.pt"
    killed = run(
        nproc, "--dtype", dtype, "--checkpoint", str(ckpt), "--kill-at-step", str(kill),
        expect_ok=False,
    )  # fmt: skip
    assert killed.returncode != 0, f"the run was not killed at step {kill}:\n{killed.stdout}"
    assert torch.load(ckpt, weights_only=False)["epoch"] < EPOCHS
    out = run(nproc, "--dtype", dtype, "--checkpoint", str(ckpt), "--resume").stdout
    assert "resumed from" in out, out
    assert_same_run(ref, torch.load(ckpt, weights_only=False))

    if nproc == 1:  # a checkpoint continues only the run that wrote it
        other = run(1, "--lr", "0.2", "--checkpoint", str(whole), "--resume", expect_ok=False)
        assert other.returncode != 0 and "another run's checkpoint" in other.stderr, other.stderr


def test_model_option_takes_every_model():
    train = load_script()
    exported = {n: getattr(resnet_fast.models, n) for n in resnet_fast.models.__all__}
    builders = [n for n, obj in exported.items() if n != "plain" and not isinstance(obj, type)]
    assert "preact_resnet20" in builders and "resnet18" in builders
    assert sorted(train.model_names()) == sorted(builders)
    for name in builders:  # each has a plain twin to train against
        assert train.parse_args(["--model", name]).model == name
    for name in ("resnet18", "preact_resnet20"):  # the twins' builder knows every family
        plain_model(name)


def test_weight_decay_only_on_conv_and_linear_weights():
    train = load_script()
    args = train.parse_args([])
    model = resnet_fast.models.resnet20(num_classes=10)
    decay, no_decay = train.param_groups(model, args)
    convs_linears = [
        m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    assert {id(p) for p in decay["params"]} == {id(m.weight) for m in convs_linears}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    (every,) = train.param_groups(model, train.parse_args(["--decay-all-params"]))
    assert len(every["params"]) == len(list(model.parameters()))


def test_checkpoint_loads_into_torchvision():
    torchvision = pytest.importorskip("torchvision")
    train = load_script()
    args = train.parse_args(["--model", "resnet18"])
    fast = train.build_models(args, torch.device("cpu"), torch.float32, sync=False)["fast"]
    torchvision.models.resnet18(num_classes=10).load_state_dict(fast.state_dict(), strict=True)
