"""convert()'s general route: fuse what a module's forward computes.

tracing.py traces a forward with torch.fx down to its layers; spelling.py
recognizes a ReLU or an add however it is written; chains.py finds the
BN -> ReLU, BN -> add -> ReLU and stem chains the graph proves fusable;
rewrite.py replaces each by one call (calls.py); graph_module.py holds the
result, a FusedGraph over the original's tensors; blocks.py tells whether a
block's dataflow is exactly torchvision's (the fast-block route).
"""

from torch import fx, nn

from .chains import LeftAlone
from .rewrite import fuse_graph
from .tracing import TraceFailed, trace

__all__ = ["LeftAlone", "TraceFailed", "fused_graph", "trace"]


def fused_graph(
    module: nn.Module,
    leaf_paths: frozenset[str] = frozenset(),
    prefix: str = "",
    leaf_types: tuple[type, ...] = (),
) -> tuple[fx.Graph, list[tuple[str, str]], list[LeftAlone]]:
    """The traced graph of `module` with every provable chain fused.

    Args:
        module: the module whose forward to trace.
        leaf_paths: submodules kept as leaves (their forward is not traced).
        prefix: the module's path in the model, put in front of the names
            the fusions and reasons give.
        leaf_types: module types kept as leaves (see tracing.trace).

    Returns:
        (graph, (BN path, description) per fusion made, chains left alone with why).

    Raises:
        TraceFailed: the forward cannot be traced.
    """
    graph = trace(module, leaf_paths, leaf_types)
    made, left = fuse_graph(graph, module, prefix)
    return graph, made, left
