"""Finding the fusable BN chains in a traced graph, and why others are not.

A chain starts at a BatchNorm2d node and is fused only when the graph proves
the fused op computes the same thing:

- "bn_relu":      bn -> relu, the ReLU the BN output's only user;
- "bn_add_relu":  bn -> add(other) -> relu, each the previous one's only
                  user; `other` (the shortcut) may be anything;
- "bn_relu_pool": bn -> relu -> nn.MaxPool2d, an ImageNet stem;
- "bn":           a projection shortcut's BN feeding the add of another
                  chain, fused without activation.

A convolution whose only user is the BN joins the chain (its BN is folded
into it in eval). Everything else is left alone with a reason.
"""

from dataclasses import dataclass

from torch import fx, nn

from ..nn.batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from .spelling import add_operands, relu_operand, writes_in_place

# Every normalization layer: only plain nn.BatchNorm2d is fused; the others
# are named in the report.
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _named(prefix: str, node: fx.Node) -> str:
    return f"{prefix}.{node.target}" if prefix else str(node.target)


@dataclass
class Chain:
    """One fusable chain: its nodes and what the fused call needs."""

    kind: str  # "bn_relu" | "bn_add_relu" | "bn_relu_pool" | "bn" (no activation)
    bn: fx.Node
    last: fx.Node  # the node whose value the fused call replaces
    nodes: list[fx.Node]  # every node the fused call replaces, in graph order
    conv: fx.Node | None = None
    residual: fx.Node | None = None
    pool: fx.Node | None = None

    def describe(self, prefix: str = "") -> str:
        """ "conv + bn + relu" and the like, modules named from `prefix`."""
        parts = [_named(prefix, n) for n in (self.conv, self.bn) if n is not None]
        parts += {"bn_relu": ["relu"], "bn_add_relu": ["add", "relu"]}.get(self.kind, [])
        if self.kind == "bn_relu_pool":
            parts += ["relu", _named(prefix, self.pool)]
        return " + ".join(parts)


@dataclass
class LeftAlone:
    where: str
    why: str


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def plain_bn(module: nn.Module) -> bool:
    """Exactly nn.BatchNorm2d: a subclass may compute something else."""
    return type(module) is nn.BatchNorm2d


def plain_conv(module: nn.Module) -> bool:
    """Exactly nn.Conv2d with numeric zero padding: the fused convolutions take
    explicit pads, not "same"/"valid" nor other padding modes."""
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def _plain_conv(module: nn.Module) -> bool:
    return plain_conv(module) and not _hooked(module)


def mutated_between(start: fx.Node, end: fx.Node, watched, modules) -> bool:
    """Whether a node strictly between start and end may write into a watched node."""
    node = start.next
    while node is not end:
        if writes_in_place(node, modules) and node.args and node.args[0] in watched:
            return True
        node = node.next
    return False


def _norm_note(node: fx.Node, module: nn.Module) -> LeftAlone | None:
    if plain_bn(module) or isinstance(module, (BatchNormReLU2d, BatchNormAddReLU2d)):
        return None
    if isinstance(module, NORMS):
        what = type(module).__name__
        return LeftAlone(
            str(node.target), f"{what} is not nn.BatchNorm2d (fusing would change the math)"
        )
    return None


def _chain_from(bn_node: fx.Node, modules) -> Chain | LeftAlone:
    where = str(bn_node.target)
    bn = modules[bn_node.target]
    if _hooked(bn):
        return LeftAlone(where, "the BatchNorm2d has forward hooks")
    if len(bn_node.args) != 1 or bn_node.kwargs:
        return LeftAlone(where, "the BatchNorm2d is called with extra arguments")
    user = _only_user(bn_node)
    if user is None:
        n = len(bn_node.users)
        return LeftAlone(
            where, f"the BN output has {n} users (fusing needs a ReLU as its only user)"
        )
    relu_in = relu_operand(user, modules)
    if relu_in is bn_node and not _hooked_module(user, modules):
        last, kind, residual, nodes = user, "bn_relu", None, [bn_node, user]
        pool = _only_user(user)
        if (
            pool is not None
            and pool.op == "call_module"
            and len(pool.args) == 1
            and not pool.kwargs
        ):
            m = modules[pool.target]
            if type(m) is nn.MaxPool2d and not m.return_indices and not _hooked(m):
                last, kind, nodes = pool, "bn_relu_pool", [bn_node, user, pool]
        chain = Chain(kind, bn_node, last, nodes, residual=residual)
        if kind == "bn_relu_pool":
            chain.pool = last
    else:
        operands = add_operands(user)
        if operands is None:
            if _is_relu(user, modules):
                return LeftAlone(where, "the ReLU after the BN is not a plain one")
            why = f"the BN output goes to {_say(user)}, not to a ReLU or an add"
            x = bn_node.args[0]
            if isinstance(x, fx.Node) and relu_operand(x, modules) is not None:
                why = "BN after a ReLU, with no ReLU after it: nothing to fuse (" + why + ")"
            return LeftAlone(where, why)
        a, b, in_place = operands
        if a is b:
            return LeftAlone(where, "the BN output is added to itself")
        if in_place and a is not bn_node:
            return LeftAlone(where, "an in-place add writes into the shortcut, not the BN output")
        residual = b if a is bn_node else a
        relu = _only_user(user)
        if relu is None or relu_operand(relu, modules) is not user or _hooked_module(relu, modules):
            return LeftAlone(
                where, "the sum BN + shortcut is not followed by a ReLU as its only user"
            )
        chain = Chain("bn_add_relu", bn_node, relu, [bn_node, user, relu], residual=residual)
    x = bn_node.args[0]
    if isinstance(x, fx.Node) and x.op == "call_module" and _only_user(x) is bn_node:
        if _plain_conv(modules[x.target]) and len(x.args) == 1 and not x.kwargs:
            chain.conv, chain.nodes = x, [x, *chain.nodes]
    first = chain.nodes[0]
    inputs = {a for n in chain.nodes for a in n.all_input_nodes} - set(chain.nodes)
    if mutated_between(first, chain.last, inputs, modules):
        return LeftAlone(where, "an input of the chain is modified in place inside it")
    return chain


def _hooked_module(node: fx.Node, modules) -> bool:
    return node.op == "call_module" and _hooked(modules[node.target])


def _is_relu(node: fx.Node, modules) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    return "relu" in str(getattr(node.target, "__name__", node.target))


def _say(node: fx.Node) -> str:
    if node.op == "output":
        return "the output"
    name = getattr(node.target, "__name__", node.target)
    return f"{node.op} {name}"


def _shortcut_bn(bn_node: fx.Node, taken: set, modules) -> Chain | None:
    """A BN whose only user is the add of a fused chain (a projection
    shortcut next to the main path's BN): fused as BN alone (conv folded in eval)."""
    user = _only_user(bn_node)
    if user is None or user not in taken or add_operands(user) is None:
        return None
    if _hooked(modules[bn_node.target]) or len(bn_node.args) != 1 or bn_node.kwargs:
        return None
    chain = Chain("bn", bn_node, bn_node, [bn_node])
    x = bn_node.args[0]
    if isinstance(x, fx.Node) and x.op == "call_module" and _only_user(x) is bn_node:
        if _plain_conv(modules[x.target]) and len(x.args) == 1 and not x.kwargs:
            chain.conv, chain.nodes = x, [x, bn_node]
    return chain


def find_chains(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[Chain | LeftAlone]:
    """Every BatchNorm2d chain of `graph`: fusable ones as Chain, the others
    (and other norm layers) as LeftAlone with the reason.

    When two BNs feed one add (main path and projection shortcut), the first
    in graph order takes the add and the ReLU; the other is fused alone.

    Args:
        graph: a traced graph (see tracing.trace).
        modules: the traced root's named_modules(), as a dict.

    Returns:
        Chains and reasons in graph order; chains never share a node.
    """
    found: list[Chain | LeftAlone] = []
    taken: set[fx.Node] = set()
    pending: list[tuple[int, fx.Node, LeftAlone]] = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = modules.get(node.target)
        if module is None or not isinstance(module, NORMS):
            continue
        if isinstance(module, (BatchNormReLU2d, BatchNormAddReLU2d)):
            continue  # fused already
        note = _norm_note(node, module)
        result = note if note is not None else _chain_from(node, modules)
        if isinstance(result, Chain) and taken.intersection(result.nodes):
            result = LeftAlone(str(node.target), "its add is fused with another BN")
        if isinstance(result, Chain):
            taken.update(result.nodes)
        elif note is None:  # a plain BN: maybe a shortcut's, fused once all adds are known
            pending.append((len(found), node, result))
        found.append(result)
    for index, node, _ in pending:
        chain = _shortcut_bn(node, taken, modules)
        if chain is not None and not taken.intersection(chain.nodes):
            taken.update(chain.nodes)
            found[index] = chain
    return found


@dataclass
class Block:
    """Fusable chains that form one residual block: conv -> BN -> ReLU
    stages, the last ending in BN + shortcut + ReLU."""

    stages: list[Chain]
    projection: Chain | None  # a "bn" chain on the block input, or None
    given: fx.Node | None  # the shortcut when neither identity nor projection

    @property
    def input(self) -> fx.Node:
        return self.stages[0].conv.args[0]

    def describe(self, prefix: str = "") -> str:
        """ "block: conv1 + bn1 -> conv2 + bn2 (+ shortcut) + relu", named from `prefix`."""
        parts = [f"{_named(prefix, c.conv)} + {_named(prefix, c.bn)}" for c in self.stages]
        if self.projection is not None:
            p = self.projection
            shortcut = f"{_named(prefix, p.conv)} + {_named(prefix, p.bn)}"
        else:
            shortcut = "identity" if self.given is None else "shortcut"
        return "block: " + " -> ".join(parts) + f" (+ {shortcut}) + relu"


def group_blocks(chains: list[Chain]) -> tuple[list[Block], list[Chain]]:
    """Groups chains into residual blocks where the graph shows one: a
    BN + add + ReLU chain after a convolution, reading a run of conv -> BN
    -> ReLU chains (each output used only by the next convolution), at least
    two stages in all.

    Returns:
        (blocks, the chains in no block).
    """
    by_last = {c.last: c for c in chains}
    used: set[int] = set()
    blocks = []
    for chain in chains:
        if chain.kind != "bn_add_relu" or chain.conv is None:
            continue
        stages = [chain]
        while True:
            source = stages[0].conv.args[0]
            prev = by_last.get(source)
            if (
                prev is None or prev.kind != "bn_relu" or prev.conv is None
                or len(source.users) != 1 or id(prev) in used
            ):  # fmt: skip
                break
            stages.insert(0, prev)
        if len(stages) < 2:
            continue
        x = stages[0].conv.args[0]
        projection, given = None, None
        if chain.residual is not x:
            shortcut = by_last.get(chain.residual)
            if (
                shortcut is not None and shortcut.kind == "bn" and shortcut.conv is not None
                and shortcut.conv.args[0] is x
            ):  # fmt: skip
                projection = shortcut
            else:
                given = chain.residual
        block = Block(stages, projection, given)
        blocks.append(block)
        used.update(id(c) for c in stages)
        if projection is not None:
            used.add(id(projection))
    return blocks, [c for c in chains if id(c) not in used]
