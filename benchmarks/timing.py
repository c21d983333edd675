"""Wall-clock timing shared by the benchmark scripts."""

import statistics
import time


def time_ms(fn, rounds: int, warmup: int) -> tuple[float, float]:
    """(min, median) milliseconds of fn() over `rounds` calls after `warmup`."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, statistics.median(times) * 1e3
