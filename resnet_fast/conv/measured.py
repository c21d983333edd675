"""Choices measured on this machine, once per shape, at first use.

Which of two implementations of the same computation is faster depends on
the machine (its caches, its oneDNN and BLAS kernels, its core count), not
only on the shape: a rule tuned on one machine can lose on the next. So the
choices that depend on it (a convolution as a matrix product or through
oneDNN, training.py; Winograd or the direct convolution in eval,
inference.py; a residual block's training step lean or as eager PyTorch,
resnet_fast/lean/residual.py) are timed here the first time a shape is seen, and the
winner is kept for the rest of the process.

A measurement runs every candidate once untimed, then ``ROUNDS`` timed
rounds interleaved (the order alternating), and compares medians. One
candidate is the default: another wins only if it is faster by more than
``MARGIN``, so that noise does not flip a choice the machine cannot tell
apart. A measurement costs ``1 + ROUNDS`` calls of each candidate.

Measurements run on the CPU only (a GPU needs synchronized timing), never
while torch.compile traces, and not at all with ``RESNET_FAST_MEASURE=0``
(read at import): then every choice is its default. The test suite
sets it, so that what a test checks does not depend on the machine's timing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Hashable, Iterator

import torch

ROUNDS = 3
"""Timed calls of each candidate (after one untimed call)."""

MARGIN = 0.03
"""How much faster (relative median time) another candidate must be than
the first to be chosen."""

_ENV = "RESNET_FAST_MEASURE"
_setting = os.environ.get(_ENV, "1")
if _setting not in ("0", "1"):
    raise ValueError(f"{_ENV} must be 0 or 1; got {_setting!r}")
ENABLED = _setting == "1"
"""Whether choices are measured (``RESNET_FAST_MEASURE``, default 1)."""

_log = logging.getLogger("resnet_fast")
_choices: dict[Hashable, str] = {}
_recorders: list[dict[Hashable, str]] = []


def can_measure(device: torch.device) -> bool:
    """Whether a choice for work on ``device`` may be timed now."""
    return ENABLED and device.type == "cpu" and not torch.compiler.is_compiling()


def choose(
    key: Hashable,
    default: str,
    candidates: Callable[[], dict[str, Callable[[], object]]],
    device: torch.device,
) -> str:
    """The name of the fastest candidate for ``key``, timed on first use.

    Args:
        key: what the choice depends on (kind, shapes, dtype, threads...);
            its first element names the kind of choice.
        default: the choice when none can be measured, and the one kept
            unless another is faster by more than ``MARGIN``.
        candidates: builds name -> a zero-argument callable doing the work
            once (``default`` among them), without side effects the caller
            cannot undo; called only when a measurement runs.
        device: where the work runs (see :func:`can_measure`).

    Returns:
        The remembered choice for ``key``; without one, the measured winner
        (remembered), or ``default`` when it cannot be measured now.
    """
    chosen = _choices.get(key)
    if chosen is None:
        chosen = _measure(key, default, candidates, device)
    for used in _recorders:
        used[key] = chosen
    return chosen


def _measure(key, default, candidates, device) -> str:
    if not can_measure(device):
        return default
    fns = candidates()
    names = [default] + [name for name in fns if name != default]
    times = _interleaved_medians({name: fns[name] for name in names})
    fastest = min(names, key=times.__getitem__)
    chosen = fastest if times[fastest] < times[names[0]] * (1 - MARGIN) else names[0]
    _choices[key] = chosen
    _log.info(
        "resnet_fast measured %s: %s (%s)",
        key,
        chosen,
        ", ".join(f"{n} {t:.3f} ms" for n, t in times.items()),
    )
    return chosen


def _interleaved_medians(candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
    for fn in candidates.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates.items())
    for r in range(ROUNDS):
        for name, fn in order if r % 2 == 0 else reversed(order):
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in samples.items()}


@contextlib.contextmanager
def recording() -> Iterator[dict[Hashable, str]]:
    """Collects the choices made (measured or remembered) inside the block:
    yields a dict that fills with key -> choice."""
    used: dict[Hashable, str] = {}
    _recorders.append(used)
    try:
        yield used
    finally:
        _recorders.remove(used)


def measured_choices() -> dict[Hashable, str]:
    """A copy of every choice measured so far in this process (key -> name)."""
    return dict(_choices)


def reset_measured_choices() -> None:
    """Forgets every measured choice: the next use of each shape measures
    again (after a change of thread count, say, or of machine load)."""
    _choices.clear()
