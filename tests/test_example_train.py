"""examples/train.py under torchrun with 2 CPU processes (gloo): a short run
on the synthetic data finishes, prints both models' accuracy, and the fast
model learns (well above the 10% of chance after one epoch)."""

import re
import subprocess
import sys

import pytest
from dist_harness import ROOT, child_env

pytest.importorskip("tqdm", reason="examples/train.py needs tqdm (pip install tqdm)")

TIMEOUT_S = 300  # the run takes ~20 s alone; generous for a loaded 2-core machine


def test_train_example_under_torchrun():
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(ROOT / "examples" / "train.py"), "--synthetic", "--epochs", "1", "--image-size", "8",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=child_env(), timeout=TIMEOUT_S, cwd=ROOT
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"examples/train.py did not finish within {TIMEOUT_S} s:\n{e.stderr}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "2 process(es), gloo backend" in out, out
    assert "fast model synchronized" in out, out
    final = re.search(r"final test accuracy: fast ([\d.]+)%, reference ([\d.]+)%", out)
    assert final, out
    fast, reference = map(float, final.groups())
    assert fast > 40 and reference > 40, out
    assert out.count("epoch 1/1 | fast:") == 1, "only rank 0 prints"
