"""The models ``resnet-fast bench`` knows: how to build each one's eager
baseline and its fast counterpart, and the input size it runs at by default.

Two kinds:
- the zoo (resnet_fast.models): eager = the plain twin from
  resnet_fast.models.plain, fast = the zoo model with the same weights;
- user code (tutorial_models.py): eager = the model as a user wrote it,
  fast = ``resnet_fast.convert`` of a copy of it. Whatever convert fuses (or
  does not) is what gets measured; the bench counts it (fusion.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .. import models as fast_models
from ..models.cifar import CIFAR_SPECS
from ..models.plain import plain_model
from ..models.preact import PREACT_SPECS
from ..models.resnet import SPECS
from .tutorial_models import TUTORIAL_MODELS

ZOO_CLASSES = 1000


@dataclass(frozen=True)
class BenchModel:
    """One benchmarked model.

    Attributes:
        name: as given to ``--models``.
        num_classes: classifier outputs (the labels of the random batches).
        build_eager: the eager baseline (called under a fixed seed).
        build_fast: the fast model, given the eager one; never modifies it.
        sizes: (batch size, resolution) per device type ("cpu", "cuda") where
            the model has its own default; missing: the bench's default.
    """

    name: str
    num_classes: int
    build_eager: Callable[[], nn.Module]
    build_fast: Callable[[nn.Module], nn.Module]
    sizes: dict[str, tuple[int, int]]


def _zoo(name: str) -> BenchModel:
    def fast_from(eager: nn.Module) -> nn.Module:
        fast = getattr(fast_models, name)(num_classes=ZOO_CLASSES)
        fast.load_state_dict(eager.state_dict())  # same keys by design
        return fast

    return BenchModel(
        name, ZOO_CLASSES, lambda: plain_model(name, num_classes=ZOO_CLASSES), fast_from, {}
    )


def _converted(eager: nn.Module) -> nn.Module:
    import resnet_fast

    return resnet_fast.convert(copy.deepcopy(eager))


def _tutorial(name: str) -> BenchModel:
    # CIFAR-sized: 32x32 is the only input its fixed 4x4 pool accepts.
    return BenchModel(
        name, 10, TUTORIAL_MODELS[name], _converted, {"cpu": (64, 32), "cuda": (256, 32)}
    )


BENCH_MODELS: dict[str, BenchModel] = {
    **{name: _zoo(name) for name in [*SPECS, *CIFAR_SPECS, *PREACT_SPECS]},
    **{name: _tutorial(name) for name in TUTORIAL_MODELS},
}


def bench_model_spec(name: str) -> BenchModel:
    """The BenchModel called ``name``; ValueError naming the known ones."""
    if name not in BENCH_MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(BENCH_MODELS)}")
    return BENCH_MODELS[name]
