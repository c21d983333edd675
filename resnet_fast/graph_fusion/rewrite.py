"""Replacing each fusable chain of a traced graph by one call (see calls.py).

The modules stay where they are: the new node reads the BN (and conv, pool)
through get_attr nodes and passes them to the call, so parameters, buffers,
their names and the modules' own settings are untouched.
"""

from torch import fx, nn

from . import calls
from .chains import Chain, LeftAlone, find_chains

STATE_ATTR = "_fusion_state"
"""The attribute of a FusedGraph holding its calls.FusionState."""


def _get(graph: fx.Graph, path: str) -> fx.Node:
    return graph.get_attr(path)


def _replace(graph: fx.Graph, chain: Chain, state: fx.Node, replaced: dict) -> None:
    """Replaces one chain; `replaced` maps the last node of every chain
    replaced so far to its call (a chain found earlier may read one)."""
    if chain.residual is not None:
        while chain.residual in replaced:
            chain.residual = replaced[chain.residual]
    with graph.inserting_before(chain.last):
        bn = _get(graph, chain.bn.target)
        x = chain.bn.args[0]
        key = chain.last.name
        if chain.kind == "bn_relu_pool":
            conv_node = chain.conv
            if conv_node is None:
                raise AssertionError("a pooled stem chain always starts at a convolution")
            args = (conv_node.args[0], _get(graph, conv_node.target), bn,
                    _get(graph, chain.pool.target), state, key)  # fmt: skip
            new = graph.call_function(calls.conv_bn_relu_pool, args)
        elif chain.conv is not None:
            args = (chain.conv.args[0], _get(graph, chain.conv.target), bn, state, key)
            relu = chain.kind != "bn"
            new = graph.call_function(calls.conv_bn_act, (*args, chain.residual, relu))
        else:
            new = graph.call_function(calls.bn_act, (x, bn, chain.residual, chain.kind != "bn"))
    chain.last.replace_all_uses_with(new)
    replaced[chain.last] = new
    for node in reversed(chain.nodes):
        graph.erase_node(node)


def fuse_graph(graph: fx.Graph, root: nn.Module) -> tuple[list[tuple[str, str]], list[LeftAlone]]:
    """Rewrites `graph` (traced from `root`) in place, chain by chain.

    A pooled stem chain without a convolution in front falls back to its
    BN + ReLU part (the pool stays as it is).

    Args:
        graph: the traced graph; changed in place.
        root: the module it was traced from.

    Returns:
        ((BN path, description) per fusion made, the chains left alone with why).
    """
    modules = dict(root.named_modules(remove_duplicate=False))
    found = find_chains(graph, modules)
    chains = [c for c in found if isinstance(c, Chain)]
    left = [c for c in found if isinstance(c, LeftAlone)]
    if not chains:
        return [], left
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first):
        state = graph.get_attr(STATE_ATTR)
    made, replaced = [], {}
    for chain in chains:
        if chain.kind == "bn_relu_pool" and chain.conv is None:
            chain.kind, chain.last, chain.pool = "bn_relu", chain.nodes[-2], None
            chain.nodes = chain.nodes[:-1]
        made.append((str(chain.bn.target), chain.describe()))
        _replace(graph, chain, state, replaced)
    graph.lint()
    return made, left
