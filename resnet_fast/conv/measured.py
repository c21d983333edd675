"""Choices measured on this machine, once per shape, kept between processes.

Which of two implementations of the same computation is faster depends on
the machine (its caches, its oneDNN and BLAS kernels, its core count), not
only on the shape: a rule tuned on one machine can lose on the next. So the
choices that depend on it are timed on this machine: a training
convolution through oneDNN, as a matrix product or as Winograd
(training.py), and a residual block's training step lean or as eager
PyTorch (resnet_fast/lean/residual.py), the first time a shape is seen;
Winograd or the direct convolution in eval (inference.py) only in the
model, by resnet_fast.tune (settle.py, which says why), the direct one
until then.

The candidates round differently, so a choice changes the result's last
bits. To keep the same command with the same seed giving the same bits, a
choice, once made, is stored (choice_store.py: one file per machine, torch
and resnet_fast build) and every later process takes it from there; a
training checkpoint can carry them too (:func:`measured_choices`,
:func:`load_measured_choices`). A key is decided, in this order, by: a
choice loaded or already taken in this process; the stored one; a timing
now (stored at once, or the stored one adopted if another process stored
first); the default where nothing may be timed.

A measurement runs every candidate once untimed, then ``ROUNDS`` timed
rounds interleaved (the order alternating), and compares medians. One
candidate is the default: another wins only if it is faster by more than
``MARGIN``, so that noise does not flip a choice the machine cannot tell
apart. A measurement costs ``1 + ROUNDS`` calls of each candidate.

Nothing is timed (and the default is taken) where a timing is not safe or
not wanted: for work not on the CPU (a GPU needs synchronized timing), with
``RESNET_FAST_MEASURE=0`` (read at import; the test suite sets it) or
``torch.use_deterministic_algorithms(True)`` (then no choice depends on a
timing, stored ones included, only on what the user loads), and inside a
region whose recording must not change: torch.compile / export / jit / fx
tracing, a torch.func transform, a ``saved_tensors_hooks`` context (which
torch.utils.checkpoint uses) or a backward pass (a checkpoint's
recomputation). There a key with no choice yet takes the default and keeps
it for the rest of the process, so the checkpointed forward and its
recomputation take the same path.

In a torch.distributed job (more than one process in the default group),
rank 0 decides each new key and broadcasts it: every rank takes the same
choices, so their math agrees. The ranks reach each new shape together, as
they reach their collectives (the same model on batches of the same size).
A key rank 0 meets while it times another key's candidates (a block's
convolutions) is decided and stored there alone, and broadcast from the
store once every rank meets it.

While torch.compile traces, a choice is decided once, outside the graph
(``torch.compiler.assume_constant_result``: the traced code keeps the
answer as a constant, with no guard that could recompile it): the one taken
in this process, loaded or stored, else, for the kinds that can rebuild
their candidates from the key alone (:func:`rebuilds`: random inputs of the
key's shapes), a timing now, stored as any other; else the default. Ranks
that compile on different machines may then differ: load the same choices
on every rank first (:func:`load_measured_choices`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Hashable, Iterator

import torch
import torch.distributed as dist

from .choice_store import ChoiceStore, fingerprint, folder
from .switches import env_switch

ROUNDS = 3
"""Timed calls of each candidate (after one untimed call)."""

MARGIN = 0.03
"""How much faster (relative median time) another candidate must be than
the first to be chosen."""

ENABLED = env_switch("RESNET_FAST_MEASURE")
"""Whether choices are measured (``RESNET_FAST_MEASURE``, default 1)."""

_log = logging.getLogger("resnet_fast")
_choices: dict[Hashable, str] = {}  # decided in this process
_loaded: dict[str, str] = {}  # from load_measured_choices, by encoded key
_recorders: list[dict[Hashable, str]] = []
_store: ChoiceStore | None = None
_announced = False
_rebuilders: dict[str, Callable[[tuple], dict[str, Callable[[], object]]]] = {}
_trial: Trial | None = None
_untuned: set[Hashable] = set()  # timed only in the model, not decided yet
_measuring = 0  # how many measurements are running (a candidate may meet other keys)
_generation = 0  # changes whenever a decided key's answer may change


def generation() -> int:
    """A number that changes whenever the answer choose() gives a key it has
    answered before may change (a trial starts or ends; choices are settled,
    loaded or reset): what a caller that keeps an answer checks it against."""
    return _generation


def _answers_change() -> None:
    global _generation
    _generation += 1


def encode(key: Hashable) -> str:
    """A key as stored on disk and exchanged with checkpoints: its repr
    (tuples of strings, numbers, dtypes and named tuples)."""
    return repr(key)


def _the_store() -> ChoiceStore:
    global _store
    if _store is None:
        _store = ChoiceStore(folder(), fingerprint())
    return _store


def _announce(where: str) -> None:
    global _announced
    if not _announced:
        _announced = True
        _log.info("resnet_fast: machine-dependent choices %s", where)


def _unsafe_region() -> str | None:
    """Why nothing may be timed now, or None."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return "tracing"
    if torch.fx._symbolic_trace.is_fx_symbolic_tracing():
        return "tracing"
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return "a torch.func transform"
    if torch._C._autograd._top_saved_tensors_default_hooks(True) is not None:
        return "saved_tensors_hooks (torch.utils.checkpoint)"
    if torch._C._current_graph_task_id() != -1:
        return "a backward pass"
    return None


def can_measure(device: torch.device) -> bool:
    """Whether a choice for work on ``device`` may be timed now."""
    return (
        ENABLED
        and device.type == "cpu"
        and not torch.are_deterministic_algorithms_enabled()
        and _unsafe_region() is None
    )


def rebuilds(kind: str):
    """Registers the decorated function as the builder of the candidates of
    choices of ``kind`` from their key alone (random inputs of the key's
    shapes): what lets such a choice be timed while torch.compile traces,
    where the caller has fake tensors only."""

    def register(build: Callable[[tuple], dict[str, Callable[[], object]]]):
        _rebuilders[kind] = build
        return build

    return register


class Trial:
    """A run of a model whose choices of ``kinds`` are being timed where they
    run (settle.py): choose() answers the undecided keys of those kinds from
    ``assign`` (full key -> candidate; the default for keys not in it), and
    timed() adds up how long the work of each such key takes in this run.

    Attributes:
        undecided: the full keys of ``kinds`` with no choice yet, in the
            order first asked.
        times: full key -> milliseconds of its work in this run (summed over
            the places the key runs).
    """

    def __init__(self, kinds: tuple[str, ...], assign: dict[Hashable, str]) -> None:
        self.kinds, self.assign = kinds, assign
        self.undecided: list[Hashable] = []
        self.times: dict[Hashable, float] = {}


@contextlib.contextmanager
def trial(kinds: tuple[str, ...], assign: dict[Hashable, str] | None = None) -> Iterator[Trial]:
    """Runs the block as a Trial (see there); one at a time."""
    global _trial
    if _trial is not None:
        raise RuntimeError("resnet_fast: measured choices are being settled already")
    _trial = Trial(kinds, assign or {})
    _answers_change()
    try:
        yield _trial
    finally:
        _trial = None
        _answers_change()


def timing() -> bool:
    """Whether a Trial runs (see there)."""
    return _trial is not None


_NOT_TIMED = contextlib.nullcontext()


def timed(key: Hashable) -> contextlib.AbstractContextManager:
    """Times the work of ``key`` (as given to choose()) when a Trial runs;
    outside one, a shared no-op context (this sits on every eval call)."""
    return _NOT_TIMED if _trial is None else _timed_in_trial(key)


@contextlib.contextmanager
def _timed_in_trial(key: Hashable) -> Iterator[None]:
    full = (*key, torch.get_num_threads())
    start = time.perf_counter()
    yield
    if full in _trial.undecided:
        _trial.times[full] = _trial.times.get(full, 0.0) + (time.perf_counter() - start) * 1e3


def settle(key: Hashable, chosen: str) -> str:
    """Decides ``key`` (a full key, as Trial.undecided holds it) for this
    process and stores it (or takes the one another process stored first)."""
    _choices[key] = _the_store().settle(encode(key), chosen)
    _untuned.discard(key)
    _answers_change()
    return _choices[key]


def choose(
    key: Hashable,
    default: str,
    candidates: Callable[[], dict[str, Callable[[], object]]] | None,
    device: torch.device,
) -> str:
    """The choice for ``key``, decided once (see the module doc).

    Args:
        key: what the choice depends on (kind, shapes, dtype...); its first
            element names the kind of choice. The thread count is appended
            here: a choice holds for the threads it was timed with.
        default: the choice when none can be measured, and the one kept
            unless another is faster by more than ``MARGIN``.
        candidates: builds name -> a zero-argument callable doing the work
            once (``default`` among them), without side effects the caller
            cannot undo; called only when a measurement runs. None for a
            kind that is only timed where it runs (settle.py): then the
            choice taken, loaded or stored, else the default.
        device: where the work runs.

    Returns:
        The name of the chosen candidate.
    """
    if torch.compiler.is_compiling():
        return _traced_choice(key, default) if device.type == "cpu" else default
    key = (*key, torch.get_num_threads())
    chosen = _choices.get(key)
    if chosen is None and _trial is not None and key[0] in _trial.kinds:
        chosen = _stored(key)
        if chosen is None:
            if key not in _trial.undecided:
                _trial.undecided.append(key)
            return _trial.assign.get(key, default)
    if chosen is None:
        chosen = _decide(key, default, candidates, device) if candidates else _known(key, default)
    for used in _recorders:
        used[key] = chosen
    return chosen


@torch.compiler.assume_constant_result
def _traced_choice(key: tuple, default: str) -> str:
    """The choice for ``key`` while torch.compile traces (see the module
    doc); runs outside the graph, once per trace."""
    key = (*key, torch.get_num_threads())
    chosen = _choices.get(key) or _loaded.get(encode(key))
    if chosen is None and ENABLED and not torch.are_deterministic_algorithms_enabled():
        store = _the_store()
        chosen = store.read().get(encode(key))
        rebuild = _rebuilders.get(key[0])
        if chosen is None and rebuild is not None:
            chosen = store.settle(encode(key), _measure(key, default, lambda: rebuild(key)))
    return chosen or default


def _stored(key) -> str | None:
    """The choice loaded or stored for a full key, remembered; else None."""
    chosen = _loaded.get(encode(key)) if _loaded else None
    if chosen is None and ENABLED and not torch.are_deterministic_algorithms_enabled():
        chosen = _the_store().read().get(encode(key))
    if chosen is not None:
        _choices[key] = chosen
    return chosen


def _known(key, default: str) -> str:
    """A choice timed only where it runs: loaded or stored, else the default
    until settle() decides it (the store is read once per key)."""
    if key in _untuned:
        return default
    chosen = _stored(key)
    if chosen is None:
        _untuned.add(key)
    return chosen or default


def _decide(key, default, candidates, device) -> str:
    if _loaded and encode(key) in _loaded:
        chosen = _choices[key] = _loaded[encode(key)]
        return chosen
    if not ENABLED or device.type != "cpu" or _unsafe_region() == "tracing":
        # A traced graph keeps the path it traced: the default, as every
        # choice with measuring off.
        return default
    if torch.are_deterministic_algorithms_enabled():
        _announce("take their defaults (torch.use_deterministic_algorithms(True))")
        return default
    if _world_size() > 1:
        if _measuring:
            # Met while rank 0 times another key's candidates: the other ranks
            # wait for that key's broadcast, not this one's. Decided and
            # stored here alone, not remembered, so that when every rank
            # meets it rank 0 broadcasts it (from the store) to all.
            return _stored_or_measured(key, default, candidates, device)
        chosen = _choices[key] = _decided_by_rank0(key, default, candidates, device)
        return chosen
    chosen = _choices[key] = _stored_or_measured(key, default, candidates, device)
    return chosen


def _stored_or_measured(key, default, candidates, device) -> str:
    store = _the_store()
    encoded = encode(key)
    stored = store.read().get(encoded)
    _announce(
        f"come from {store.path} (delete it to measure again); shapes not in it are timed "
        "on first use and added"
    )
    if stored is not None:
        return stored
    if not can_measure(device):
        # Kept for the process, not stored: a later process may time it.
        _log.debug("resnet_fast: %s takes its default %s (%s)", key, default, _unsafe_region())
        return default
    measured = _measure(key, default, candidates)
    return store.settle(encoded, measured)


def _world_size() -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def _decided_by_rank0(key, default, candidates, device) -> str:
    message = [None]
    if dist.get_rank() == 0:
        message[0] = _stored_or_measured(key, default, candidates, device)
    dist.broadcast_object_list(message, src=0)
    return message[0]


def _measure(key, default, candidates) -> str:
    global _measuring
    _measuring += 1
    try:
        fns = candidates()
        names = [default] + [name for name in fns if name != default]
        times = _interleaved_medians({name: fns[name] for name in names})
    finally:
        _measuring -= 1
    fastest = min(names, key=times.__getitem__)
    chosen = fastest if times[fastest] < times[names[0]] * (1 - MARGIN) else names[0]
    _log.debug(
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


def measured_choices() -> dict[str, str]:
    """Every choice this process has taken so far, {encoded key: choice}:
    what a checkpoint saves so that a resumed run takes the same choices
    (see :func:`load_measured_choices`). JSON-serializable."""
    taken = {encode(key): choice for key, choice in _choices.items()}
    return {**_loaded, **taken}


def load_measured_choices(choices: dict[str, str]) -> None:
    """Takes ``choices`` (from :func:`measured_choices` of an earlier run)
    before anything stored or measured, for the keys they name.

    Raises:
        TypeError: not a {str: str} mapping.
    """
    if not isinstance(choices, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in choices.items()
    ):
        raise TypeError("choices must be a dict of str -> str, as measured_choices() returns")
    _loaded.update(choices)
    _untuned.clear()
    for key in [k for k in _choices if encode(k) in choices]:
        _choices[key] = choices[encode(key)]
    _answers_change()
    _log.info("resnet_fast: %d machine-dependent choices loaded", len(choices))


def reset_measured_choices(stored: bool = False) -> None:
    """Forgets every choice of this process (measured, stored or loaded):
    the next use of each shape decides again.

    Args:
        stored: also delete this machine's stored choices, so that they are
            measured again (after a change of thread count, say, or of
            machine load).
    """
    _choices.clear()
    _loaded.clear()
    _untuned.clear()
    _answers_change()
    if stored:
        _the_store().clear()


def store_summary() -> dict:
    """Where the stored choices are: {"folder", "file" (this machine and
    build's, which may not exist yet), "entries" (in it), "files" (in the
    folder, every build's)}."""
    store = _the_store()
    directory = os.path.dirname(store.path)
    files = (
        [n for n in os.listdir(directory) if n.endswith(".json")]
        if os.path.isdir(directory)
        else []
    )
    return {
        "folder": directory,
        "file": store.path,
        "entries": len(store.read()),
        "files": len(files),
    }
