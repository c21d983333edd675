"""Eval-mode choices timed where they run: in the model, on an example batch.

A convolution timed alone runs with its input and weights hot in the caches
and nothing after it; in a model the layer before has just filled the caches
with its own data, and whatever a layer leaves behind (Winograd's transformed
input is 2.25x the input) is paid for by the layers after it, whose own
times then grow. So the eval-mode choice among the 1x1 / 3x3 algorithms
(the direct convolution, Winograd, tap by tap: eval_algorithms.py) is not timed
alone on first use, as the training choices are, but by :func:`tune`, in
whole forward passes of the model:

1. one pass finds the undecided keys (none loaded, stored or taken);
2. passes with every undecided convolution direct (the default) alternate
   with passes with every one run by each other candidate, ``ROUNDS`` of
   each after an untimed one: how much the whole pass gains with each
   (median of the differences within a round), and each key's own time by
   each candidate (medians);
3. each key's fastest candidate alone, where it beats the default by more
   than ``measured.MARGIN``; if that assignment differs from the uniform
   ones, passes with it alternate with all-direct ones likewise;
4. of the assignments timed (each candidate everywhere, each key's fastest
   alone), the one whose whole pass gains most is switched, if it gains more
   than the margin of its convolutions' direct time; else none is. The whole
   pass decides, because what a layer costs the layers after it shows up
   only there.

The choices are stored (measured.py) like any other, so later processes, and
torch.compile traces, take them without timing anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Hashable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import eval_algorithms, measured

KINDS = (eval_algorithms.KIND,)
"""The choices tuned in the model."""

ROUNDS = 7
"""Timed forward passes of each assignment (after an untimed one)."""


def tune(model: nn.Module, example: Tensor) -> dict[str, str]:
    """Times the eval-mode choices of ``model`` (those not decided yet: none
    loaded, stored or taken in this process) on ``example`` and stores them,
    so that every later eval call with inputs of its shape, in this process
    and later ones, runs the faster candidate; see the module doc. Costs
    at most ``(2 + candidates) * (1 + ROUNDS) + 1`` forward passes when a
    choice is open (3 candidates), one when none is.

    Usage, for deployment::

        model.eval()
        resnet_fast.freeze(model)
        resnet_fast.tune(model, batch)  # a batch of the shape to be served

    In a torch.distributed job every rank runs the passes and takes rank 0's
    choices. Nothing is timed (the defaults stay) where choices may not be
    (``RESNET_FAST_MEASURE=0``, deterministic algorithms, a GPU model).

    Args:
        model: a model holding resnet_fast modules, in eval mode.
        example: an input batch [N, C, H, W] of the size and memory format
            the model will be given.

    Returns:
        {encoded key: choice} of the choices decided now.

    Raises:
        TypeError: ``model`` is not an nn.Module or ``example`` not a tensor.
        ValueError: ``model`` is in training mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"resnet_fast.tune: model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(example, Tensor):
        raise TypeError(f"resnet_fast.tune: example must be a tensor; got {type(example).__name__}")
    if model.training:
        raise ValueError("resnet_fast.tune times eval-mode choices: call model.eval() first")
    with torch.no_grad():
        with measured.trial(KINDS) as discovery:
            model(example)
        open_keys = list(discovery.undecided)
        if not open_keys or not measured.can_measure(example.device):
            return {}
        default = eval_algorithms.DEFAULT
        others = list(
            dict.fromkeys(c for key in open_keys for c in eval_algorithms.candidates(key)[1:])
        )  # fmt: skip
        # Each candidate everywhere it can run.
        uniform = [
            {key: c for key in open_keys if c in eval_algorithms.candidates(key)} for c in others
        ]
        uniform_gains, own = _paired_gains(model, example, uniform)
        direct_ms = own[0]
        fastest_alone = {}
        for key in open_keys:
            ms, other = min(
                (own[1 + i][key], c) for i, c in enumerate(others) if key in uniform[i]
            )  # fmt: skip
            if ms < direct_ms[key] * (1 - measured.MARGIN):
                fastest_alone[key] = other
        options = []  # (whole-pass gain, assignment); on a tie the earlier one
        if fastest_alone and fastest_alone not in uniform:
            (gain,), _ = _paired_gains(model, example, [fastest_alone])
            options.append((gain, fastest_alone))
        options += zip(uniform_gains, uniform, strict=True)
        gain, best = max(options, key=lambda option: option[0])
        margin = measured.MARGIN * sum(direct_ms[key] for key in best)
        switched = best if gain > margin else {}
    chosen = {key: switched.get(key, default) for key in open_keys}
    chosen = _as_rank0_decides(chosen)
    return {measured.encode(key): measured.settle(key, choice) for key, choice in chosen.items()}


def _paired_gains(
    model: nn.Module, example: Tensor, assignments: list[dict[Hashable, str]]
) -> tuple[list[float], list[dict[Hashable, float]]]:
    """How many milliseconds a forward pass saves with each of
    ``assignments`` against all defaults (median over ``ROUNDS`` rounds of
    the difference within a round; the order of a round alternates), and
    the time of each key's own work in the passes of each (all defaults
    first; medians)."""
    runs = [{}, *assignments]
    totals: list[list[float]] = [[] for _ in runs]
    own: list[dict[Hashable, list[float]]] = [{} for _ in runs]
    for r in range(1 + ROUNDS):
        order = list(enumerate(runs)) if r % 2 == 0 else list(enumerate(runs))[::-1]
        for i, assign in order:
            with measured.trial(KINDS, assign) as run:
                start = time.perf_counter()
                model(example)
                elapsed = (time.perf_counter() - start) * 1e3
            if r == 0:
                continue  # untimed: fills the caches (packed, transformed weights)
            totals[i].append(elapsed)
            for key, ms in run.times.items():
                own[i].setdefault(key, []).append(ms)
    gains = [
        statistics.median(b - t for b, t in zip(totals[0], totals[i], strict=True))
        for i in range(1, len(runs))
    ]
    medians = [{key: statistics.median(ms) for key, ms in times.items()} for times in own]
    return gains, medians


def _as_rank0_decides(chosen: dict[Hashable, str]) -> dict[Hashable, str]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return chosen
    message = [chosen]
    dist.broadcast_object_list(message, src=0)
    return message[0]
