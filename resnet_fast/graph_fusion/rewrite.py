"""Replacing each fusable chain of a traced graph by one call (see calls.py).

The modules stay where they are: the new node reads the BN (and conv, pool)
through get_attr nodes and passes them to the call, so parameters, buffers,
their names and the modules' own settings are untouched.
"""

from torch import fx, nn

from . import calls
from .chains import Block, Chain, LeftAlone, find_chains, group_blocks, mutated_between

STATE_ATTR = "_fusion_state"
"""The attribute of a FusedGraph holding its calls.FusionState."""


def _replace(graph: fx.Graph, chain: Chain, state: fx.Node, replaced: dict) -> None:
    """Replaces one chain; `replaced` maps the last node of every chain
    replaced so far to its call (a chain found earlier may read one)."""
    if chain.residual is not None:
        chain.residual = _resolve(chain.residual, replaced)
    with graph.inserting_before(chain.last):
        bn = graph.get_attr(chain.bn.target)
        x = chain.bn.args[0]
        key = chain.last.name
        if chain.kind == "bn_relu_pool":
            conv_node = chain.conv
            if conv_node is None:
                raise AssertionError("a pooled stem chain always starts at a convolution")
            args = (conv_node.args[0], graph.get_attr(conv_node.target), bn,
                    graph.get_attr(chain.pool.target), state, key)  # fmt: skip
            new = graph.call_function(calls.conv_bn_relu_pool, args)
        elif chain.conv is not None:
            args = (chain.conv.args[0], graph.get_attr(chain.conv.target), bn, state, key)
            relu = chain.kind != "bn"
            new = graph.call_function(calls.conv_bn_act, (*args, chain.residual, relu))
        else:
            new = graph.call_function(calls.bn_act, (x, bn, chain.residual, chain.kind != "bn"))
    chain.last.replace_all_uses_with(new)
    replaced[chain.last] = new
    for node in reversed(chain.nodes):
        graph.erase_node(node)


def _named(prefix: str, target) -> str:
    return f"{prefix}.{target}" if prefix else str(target)


def _resolve(node, replaced: dict):
    while node in replaced:
        node = replaced[node]
    return node


def _replace_block(graph: fx.Graph, block: Block, state: fx.Node, replaced: dict) -> None:
    """Replaces a whole residual block by one residual_block call."""
    tail = block.stages[-1]
    chains = block.stages + ([block.projection] if block.projection is not None else [])
    with graph.inserting_before(tail.last):
        stages = tuple(
            (graph.get_attr(c.conv.target), graph.get_attr(c.bn.target)) for c in block.stages
        )
        projection = None
        if block.projection is not None:
            p = block.projection
            projection = (graph.get_attr(p.conv.target), graph.get_attr(p.bn.target))
        given = _resolve(block.given, replaced) if block.given is not None else None
        x = _resolve(block.input, replaced)
        args = (x, stages, projection, given, state, tail.last.name)
        new = graph.call_function(calls.residual_block, args)
    tail.last.replace_all_uses_with(new)
    replaced[tail.last] = new
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in sorted((n for c in chains for n in c.nodes), key=order.get, reverse=True):
        graph.erase_node(node)


def _block_is_safe(block: Block, modules) -> bool:
    """No node inside the block's span writes into its input or shortcut."""
    nodes = [n for c in block.stages for n in c.nodes]
    if block.projection is not None:
        nodes += block.projection.nodes
    graph_order = {n: i for i, n in enumerate(nodes[0].graph.nodes)}
    first = min(nodes, key=graph_order.get)
    last = block.stages[-1].last
    watched = {block.input} | ({block.given} if block.given is not None else set())
    return not mutated_between(first, last, watched, modules)


def _drop_identities(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    """nn.Identity calls (timm's placeholders for drop-block, anti-aliasing)
    pass their input through: removing them lets BN -> Identity -> ReLU fuse."""
    for node in list(graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if type(module) is nn.Identity and len(node.args) == 1 and not node.kwargs:
            if not (module._forward_hooks or module._forward_pre_hooks):
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)


def fuse_graph(
    graph: fx.Graph, root: nn.Module, prefix: str = ""
) -> tuple[list[tuple[str, str]], list[LeftAlone]]:
    """Rewrites `graph` (traced from `root`) in place, chain by chain.

    A pooled stem chain without a convolution in front falls back to its
    BN + ReLU part (the pool stays as it is).

    Args:
        graph: the traced graph; changed in place.
        root: the module it was traced from.
        prefix: root's path in the model, for the names in the result.

    Returns:
        ((BN path, description) per fusion made, the chains left alone with why).
    """
    modules = dict(root.named_modules(remove_duplicate=False))
    _drop_identities(graph, modules)
    found = find_chains(graph, modules)
    chains = [c for c in found if isinstance(c, Chain)]
    left = [LeftAlone(_named(prefix, c.where), c.why) for c in found if isinstance(c, LeftAlone)]
    if not chains:
        return [], left
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first):
        state = graph.get_attr(STATE_ATTR)
    made, replaced = [], {}
    blocks, chains = group_blocks(chains)
    unsafe = [b for b in blocks if not _block_is_safe(b, modules)]
    for block in unsafe:  # its chains are fused one by one instead
        chains += block.stages + ([block.projection] if block.projection else [])
    blocks = [b for b in blocks if b not in unsafe]
    order = {n: i for i, n in enumerate(graph.nodes)}
    items = sorted(
        [(order[b.stages[-1].last], b) for b in blocks] + [(order[c.last], c) for c in chains],
        key=lambda item: item[0],
    )
    for _, item in items:
        if isinstance(item, Block):
            made.append((_named(prefix, item.stages[-1].bn.target), item.describe(prefix)))
            _replace_block(graph, item, state, replaced)
            continue
        chain = item
        if chain.kind == "bn_relu_pool" and chain.conv is None:
            chain.kind, chain.last, chain.pool = "bn_relu", chain.nodes[-2], None
            chain.nodes = chain.nodes[:-1]
        made.append((_named(prefix, chain.bn.target), chain.describe(prefix)))
        _replace(graph, chain, state, replaced)
    graph.lint()
    return made, left
