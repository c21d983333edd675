"""torch.fx tracing of one module's forward, down to the layers convert()
reasons about.

Leaves (called, not traced into): torch.nn's own layers (convolutions, norms
of every kind, activations, pooling, ...), resnet_fast's fused modules, and
any module the caller names (a child whose own forward would not trace) or
whose type it names (convert()'s fused graphs). Every
other module's forward is traced through, so a block's dataflow appears in
its parent's graph.
"""

from torch import fx, nn

from ..nn.batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from ..nn.blocks import BasicBlock, Bottleneck


class TraceFailed(Exception):
    """A forward that torch.fx cannot trace; the message says why."""


_FAST_TYPES = (BasicBlock, Bottleneck, BatchNormReLU2d, BatchNormAddReLU2d)


class _Tracer(fx.Tracer):
    def __init__(self, leaf_paths: frozenset[str], leaf_types: tuple[type, ...]):
        super().__init__()
        self.leaf_paths = leaf_paths
        self.fast_types = _FAST_TYPES + leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_paths or isinstance(m, self.fast_types):
            return True
        # A norm layer is a leaf whatever module defines it: tracing into a
        # BatchNorm subclass would show F.batch_norm, never fused anyway.
        if isinstance(m, nn.modules.batchnorm._NormBase):
            return True
        return super().is_leaf_module(m, qualname)


def _training_flags(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


def _trace_once(module: nn.Module, leaf_paths: frozenset[str], leaf_types) -> fx.Graph:
    try:
        return _Tracer(leaf_paths, leaf_types).trace(module)
    except Exception as e:  # noqa: BLE001  (any failure means: not traceable)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TraceFailed(f"{type(e).__name__}: {first[:160]}") from e


def trace(
    module: nn.Module,
    leaf_paths: frozenset[str] = frozenset(),
    leaf_types: tuple[type, ...] = (),
) -> fx.Graph:
    """The forward of `module` as a torch.fx graph over its leaf layers.

    The forward is traced in both training and eval mode: a Python branch on
    `self.training` is fixed into a traced graph, so a forward whose graph
    depends on the mode is reported untraceable rather than frozen in one.

    Args:
        module: the module to trace.
        leaf_paths: qualified names of submodules to keep as leaves.
        leaf_types: module types to keep as leaves, besides torch.nn's
            layers and resnet_fast's fused modules.

    Returns:
        The graph traced in the module's current mode.

    Raises:
        TraceFailed: when torch.fx cannot trace the forward (data-dependent
            control flow, a tensor built from a traced value, ...) or the
            graph differs between training and eval.
    """
    flags = _training_flags(module)
    graph = _trace_once(module, leaf_paths, leaf_types)
    try:
        module.train(not module.training)
        other = _trace_once(module, leaf_paths, leaf_types)
    finally:
        for m, flag in flags:
            m.training = flag
    if graph.python_code("self").src != other.python_code("self").src:
        raise TraceFailed("the forward branches on self.training (a traced graph fixes one mode)")
    return graph
