"""Measuring what autograd keeps for backward.

The activation memory of a training step is what the forward pass saves for
the backward pass. ``saved_activations`` counts it exactly, on any device:
every tensor that autograd packs (``ctx.save_for_backward``, C++ autograd
nodes, custom ops) goes through ``torch.autograd.graph.saved_tensors_hooks``;
tensors that share a storage are counted once, at the storage's size, and
parameters (and anything else passed as ``exclude``) are left out, together
with dtype copies of them made during the forward (autocast's bfloat16 copies
of the weights): those are per step, not per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SavedTensors:
    """What one forward pass saved for backward.

    Attributes:
        bytes: total size of the distinct storages saved, in bytes.
        storages: number of distinct storages saved.
        packed: number of times a tensor was packed (>= storages: the same
            storage saved by several ops is counted once in ``bytes``).
    """

    bytes: int
    storages: int
    packed: int


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr())


def _copy_of(tensor: torch.Tensor, excluded: set[tuple[str, int]]) -> bool:
    """Whether ``tensor`` is a dtype/device copy (``.to()``, as autocast makes)
    of an excluded leaf, or a view of one, found through its autograd node."""
    base = tensor._base if tensor._base is not None else tensor
    node = base.grad_fn
    if node is None or node.name() != "ToCopyBackward0":
        return False
    for parent, _ in node.next_functions:
        variable = getattr(parent, "variable", None)  # AccumulateGrad of a leaf
        if variable is not None and _storage_key(variable) in excluded:
            return True
    return False


def saved_activations(
    fn: Callable[..., Any], *args: Any, exclude: Iterable[torch.Tensor] = (), **kwargs: Any
) -> tuple[Any, SavedTensors]:
    """Runs ``fn(*args, **kwargs)`` and measures the tensors it saves for backward.

    Args:
        fn: the forward computation, e.g. a model.
        *args: its positional arguments.
        exclude: tensors not to count, typically ``model.parameters()``
            (matched by storage), and the copies of them in another dtype
            made inside ``fn`` (e.g. by autocast).
        **kwargs: its keyword arguments.

    Returns:
        ``(fn's result, SavedTensors)``. The result's graph is intact:
        backward works as usual.

    Example:
        >>> out, saved = saved_activations(model, x, exclude=model.parameters())
        >>> saved.bytes / x.shape[0]  # saved activation bytes per image
    """
    excluded = {_storage_key(t) for t in exclude}
    sizes: dict[tuple[str, int], int] = {}
    packed = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal packed
        packed += 1
        key = _storage_key(tensor)
        if (
            key not in excluded
            and tensor.untyped_storage().nbytes() > 0
            and not _copy_of(tensor, excluded)
        ):
            sizes[key] = tensor.untyped_storage().nbytes()
        return tensor

    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = fn(*args, **kwargs)
    return result, SavedTensors(bytes=sum(sizes.values()), storages=len(sizes), packed=packed)
