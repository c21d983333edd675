"""The processes of ``resnet-fast bench``'s variants (peer_worker.py), and the
turns they take being timed.

One process per variant: ONNX Runtime's and OpenVINO's thread pools spin
between calls, and PyTorch's OpenMP threads spin for a while after each
parallel region; in one process they would run on each other's cores (the
issue that made eager PyTorch five times slower beside ONNX Runtime). Here
only one process works at a time: the others wait on their pipe, and after
each turn the coordinator leaves ``SETTLE_S`` for the last one's threads to
stop spinning before the next starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

from .environment import child_allocator_env
from .variants import Job

SETTLE_S = 0.05
"""Idle time between two variants' turns (spinning thread pools stop in
well under this)."""


class WorkerError(RuntimeError):
    """A variant's process failed to build or to run; the message says why."""


class Worker:
    """One variant's process, built and warmed up when the constructor
    returns.

    Args:
        job: what it builds (variants.Job).

    Raises:
        WorkerError: the variant could not be built or run (the reason).
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        env = {**os.environ, **child_allocator_env(), "OMP_NUM_THREADS": str(job.threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "resnet_fast.harness.peer_worker", json.dumps(asdict(job))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()[-2000:]
            raise WorkerError(f"{self.job.variant} exited: {err.strip().splitlines()[-1:] or '?'}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def time_once(self) -> float:
        """Milliseconds of one call (after one untimed call)."""
        self.proc.stdin.write("time\n")
        self.proc.stdin.flush()
        return self._reply()["ms"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def take_turns(
    workers: dict[str, Worker], rounds: int, on_round: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """``rounds`` timed calls of every worker, one worker at a time, the order
    alternating round by round.

    Returns:
        label -> its times in milliseconds, in the order measured.
    """
    labels = list(workers)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for index in range(rounds):
        for label in labels if index % 2 == 0 else labels[::-1]:
            samples[label].append(workers[label].time_once())
            time.sleep(SETTLE_S)
        if on_round is not None:
            on_round()
    return samples
