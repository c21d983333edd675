"""Runs a script in several CPU processes joined by gloo on loopback, for the
distributed tests: every process imports this checkout's resnet_fast, and a
hang becomes a test failure after `timeout` seconds instead of blocking CI.

The processes meet through a file store in a fresh temporary directory (no
port to pick: nothing to collide with other test runs on the machine); gloo
then connects them over the loopback interface.
"""

import os
import pathlib
import subprocess
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on the path,
    one thread per process (two processes share the machine's cores), gloo
    on loopback where the interface is called lo."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    if "GLOO_SOCKET_IFNAME" not in env and os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    env.update(extra)
    return env


def run_ranks(script: pathlib.Path, world_size: int, workdir: pathlib.Path, timeout: float) -> list:
    """Runs `python script RANK WORLD_SIZE WORKDIR` for every rank and returns
    the objects the ranks saved to WORKDIR/rank{RANK}.pt, in rank order.

    Fails (AssertionError with the ranks' stderr) when a rank exits non-zero
    or the ranks do not all finish within `timeout` seconds (all are killed).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    procs = []
    for rank in range(world_size):
        log = open(workdir / f"rank{rank}.log", "w+")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, str(script), str(rank), str(world_size), str(workdir)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    deadline = time.monotonic() + timeout
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        timed_out = any(proc.poll() is None for proc, _ in procs)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        logs = []
        for rank, (proc, log) in enumerate(procs):
            log.seek(0)
            logs.append(f"--- rank {rank} (exit {proc.returncode}) ---\n{log.read()[-3000:]}")
            log.close()
    report = "\n".join(logs)
    assert not timed_out, f"the ranks did not finish within {timeout:.0f} s:\n{report}"
    assert all(proc.returncode == 0 for proc, _ in procs), f"a rank failed:\n{report}"
    return [
        torch.load(workdir / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)
    ]
