"""How much of a model's BatchNorm work runs fused: the aten batch-norm calls
and the ``torch.ops.resnet_fast`` calls of one training forward, counted
below autograd by a TorchDispatchMode, so the count holds whatever module,
block or graph rewrite produced the calls.

A converted model that fused nothing must not pass for a fast one: the bench
warns and shows the count next to the timings.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts, while active, the aten batch-norm forward calls
    (``batch_norms``) and the resnet_fast op calls (``fused_ops``),
    whatever module, block or graph rewrite makes them."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_norms = 0
        self.fused_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name.startswith("aten::") and "batch_norm" in name and "backward" not in name:
            self.batch_norms += 1
        elif name.startswith("resnet_fast::"):
            self.fused_ops += 1
        return func(*args, **(kwargs or {}))


def count_calls(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(aten batch-norm calls, resnet_fast op calls) of one training-mode
    forward of a copy of ``model`` (the model's running statistics stay as
    they are)."""
    probe = copy.deepcopy(model).train()
    with OpCounter() as counter:  # with autograd on: the path a training step takes
        probe(x)
    return counter.batch_norms, counter.fused_ops


@dataclass
class FusionCount:
    """The fast model against its eager baseline, one training forward each.

    Attributes:
        batch_norms: aten batch-norm calls of the eager model.
        unfused: aten batch-norm calls left in the fast model.
        fused_ops: resnet_fast op calls of the fast model.
    """

    batch_norms: int
    unfused: int
    fused_ops: int

    @property
    def fused(self) -> int:
        return max(self.batch_norms - self.unfused, 0)

    def text(self) -> str:
        """ "17/20": BatchNorms fused out of the eager model's."""
        return f"{self.fused}/{self.batch_norms}"


def count_fusion(fast: nn.Module, eager: nn.Module, x: torch.Tensor) -> FusionCount:
    """How many of ``eager``'s BatchNorms ``fast`` runs fused, on input ``x``
    (a small batch: the count does not depend on its size)."""
    eager_bn, _ = count_calls(eager, x)
    fast_bn, fused_ops = count_calls(fast, x)
    return FusionCount(eager_bn, fast_bn, fused_ops)


def warn_if_unfused(name: str, count: FusionCount) -> str | None:
    """A warning (also returned, for the report) when the fast model fused no
    BatchNorm: its timings are then (about) eager's own."""
    if count.fused > 0:
        return None
    message = (
        f"{name}: the fast model fused 0 of {count.batch_norms} BatchNorms "
        f"({count.fused_ops} resnet_fast op calls); its 'fast' timings are the eager computation"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message


def fusion_dict(count: FusionCount) -> dict:
    """The JSON form of a count."""
    return {**asdict(count), "fused": count.fused}
