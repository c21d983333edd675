"""Timing that survives a noisy machine.

Every implementation under comparison runs in the same process, interleaved
round by round (the order alternates every round), so that a slow phase of the
machine hits all of them alike and their ratio holds. Each one is warmed up
first; on a GPU every call is bracketed by CUDA events after a synchronize, on
the CPU by ``time.perf_counter``. Summaries use the median, with the minimum
and the interquartile range kept alongside.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Waits for the work queued on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds that one call of ``fn`` takes on ``device``."""
    if device.type == "cuda":
        # Events measure the device's time between them; the synchronize
        # before keeps earlier work out of the interval.
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    fn()
    return (time.perf_counter() - start_s) * 1e3


def interleaved_ms(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    warmup: int,
    on_round: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Times several callables round by round.

    Args:
        fns: label -> zero-argument callable (one training step, one forward...).
        device: where they run; decides between CUDA events and a wall clock.
        rounds: timed calls of each callable.
        warmup: untimed calls of each callable first (caches, autotuning,
            torch.compile, allocator pools).
        on_round: called after the warm-up and after every round (progress).

    Returns:
        label -> the ``rounds`` times in milliseconds, in the order measured.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        synchronize(device)
    if on_round is not None:
        on_round()
    labels = list(fns)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for index in range(rounds):
        # Alternating the order keeps any implementation from always running
        # right after the same neighbour (caches, allocator, clock boost).
        for label in labels if index % 2 == 0 else labels[::-1]:
            samples[label].append(time_call_ms(fns[label], device))
        if on_round is not None:
            on_round()
    return samples


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, minimum and interquartile range of a list of times (ms)."""
    ordered = sorted(times_ms)
    if len(ordered) >= 4:
        quartiles = statistics.quantiles(ordered, n=4)
        iqr = quartiles[2] - quartiles[0]
    else:
        iqr = ordered[-1] - ordered[0]
    return {
        "median_ms": statistics.median(ordered),
        "min_ms": ordered[0],
        "iqr_ms": iqr,
        "rounds": len(ordered),
    }


def time_ms(
    fn: Callable[[], object], rounds: int, warmup: int, device: torch.device | None = None
) -> tuple[float, float]:
    """(minimum, median) milliseconds of ``fn`` alone over ``rounds`` calls
    after ``warmup``; for comparisons prefer ``interleaved_ms``."""
    stats = summarize(
        interleaved_ms({"fn": fn}, device or torch.device("cpu"), rounds, warmup)["fn"]
    )
    return stats["min_ms"], stats["median_ms"]
