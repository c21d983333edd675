"""One variant of one model in a process of its own (see variants.py), timed
on request: thread pools that spin (ONNX Runtime's, OpenVINO's, OpenMP's)
then never run while another variant is being timed.

    python -m resnet_fast.harness.peer_worker JOB_JSON

Builds the step, runs the job's warm-up calls, saves the first inference
output to ``job.logits``, prints one JSON line {"ready": seconds}, then for
each line "time" on stdin runs the step twice (the first call wakes the
thread pool after the coordinator's idle gap, like a steady stream of
requests) and prints the second call's milliseconds; "quit" ends it. Any
failure prints {"error": ...} and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch


def _peak_memory_mib(step, device: torch.device) -> float:
    """Peak CUDA memory one step allocates above what was resident before it
    (activations, gradients, workspaces), in MiB."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def main() -> int:
    from .environment import set_threads
    from .timing import time_call_ms
    from .variants import Job, build_step

    job = Job(**json.loads(sys.argv[1]))
    # The protocol keeps the original stdout; whatever the libraries print
    # (exporters, runtimes, from Python or C) goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    try:
        set_threads(job.threads)
        start = time.perf_counter()
        step = build_step(job)
        out = step()
        if job.logits and isinstance(out, torch.Tensor):
            torch.save(out.detach().float().cpu(), job.logits)
        for _ in range(max(job.warmup - 1, 0)):
            step()
        ready = {"ready": time.perf_counter() - start}
        device = torch.device(job.device)
        if device.type == "cuda":
            ready["peak_memory_MiB"] = _peak_memory_mib(step, device)
    except Exception as error:  # noqa: BLE001  (reported to the coordinator, which names it)
        reply({"error": f"{type(error).__name__}: {error}"[:2000]})
        return 1
    reply(ready)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        step()
        reply({"ms": time_call_ms(step, device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
