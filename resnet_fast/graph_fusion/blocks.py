"""Whether a block computes exactly torchvision's BasicBlock / Bottleneck,
judged from its traced graph (names only say where to look).

torchvision's dataflow, with `downsample` traced as one leaf:

    out = relu(bn1(conv1(x)))            (BasicBlock: conv1, conv2;
    out = relu(bn2(conv2(out)))           Bottleneck: conv1 .. conv3)
    out = bn3(conv3(out))
    relu(out + (x or downsample(x)))

with exactly these nodes, each intermediate used once, every ReLU plain
(any spelling), every add plain, every convolution exactly nn.Conv2d with
zero padding and every norm exactly nn.BatchNorm2d. Such a block can take
the fast-block route (nn/blocks.py) without changing what it computes.
"""

from torch import fx, nn

from .chains import plain_bn, plain_conv
from .spelling import add_operands, relu_operand
from .tracing import TraceFailed, trace


def _module_node(node, name: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and node.target == name


def _single(node: fx.Node, name: str, source: fx.Node) -> bool:
    """node is call_module `name` on `source` alone, and used once."""
    return (
        _module_node(node, name) and node.args == (source,) and not node.kwargs
        and len(node.users) == 1
    )  # fmt: skip


def _plain_parts(block: nn.Module, stages: int) -> str:
    for i in range(1, stages + 1):
        conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
        if not plain_conv(conv):
            return f"conv{i} is not a plain nn.Conv2d with numeric zero padding"
        if not plain_bn(bn):
            return (
                f"bn{i} is {type(bn).__name__}, not nn.BatchNorm2d (fusing would change the math)"
            )
        if (
            conv._forward_hooks
            or conv._forward_pre_hooks
            or bn._forward_hooks
            or bn._forward_pre_hooks
        ):
            return f"conv{i} or bn{i} has forward hooks"
    ds = getattr(block, "downsample", None)
    if isinstance(ds, nn.Sequential) and len(ds) == 2:
        conv, norm = ds[0], ds[1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            if type(conv) is not nn.Conv2d or not plain_bn(norm):
                return "the downsample's conv or norm is a subclass (the fast block folds it)"
    return ""


def torchvision_dataflow(block: nn.Module, stages: int) -> str:
    """ "" when `block`'s forward is torchvision's block dataflow with
    `stages` conv-BN stages, else why not.

    Args:
        block: a module with conv1.., bn1.. (and maybe downsample) children.
        stages: 2 (BasicBlock) or 3 (Bottleneck).

    Returns:
        "" or the reason.
    """
    why = _plain_parts(block, stages)
    if why:
        return why
    if block._forward_hooks or block._forward_pre_hooks:
        return "the block has forward hooks"
    leaves = (
        frozenset({"downsample"}) if getattr(block, "downsample", None) is not None else frozenset()
    )
    try:
        graph = trace(block, leaves)
    except TraceFailed as e:
        return f"its forward does not trace ({e})"
    modules = dict(block.named_modules())
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    output = nodes[-1]
    if len(inputs) != 1 or len(output.args) != 1 or not isinstance(output.args[0], fx.Node):
        return "not one tensor in, one tensor out"
    x = inputs[0]
    has_ds = "downsample" in leaves
    expected = 3 * stages + 1 + has_ds  # conv, bn, relu per stage, the add, the downsample
    if len(nodes) - 2 != expected:
        return "its graph has other nodes than torchvision's block"
    relu = output.args[0]
    add = relu_operand(relu, modules)
    operands = add_operands(add) if add is not None else None
    if operands is None or len(add.users) != 1:
        return "it does not end in relu(out + shortcut)"
    a, b, in_place = operands
    last_bn = f"bn{stages}"
    out, shortcut = (a, b) if _module_node(a, last_bn) else (b, a)
    if in_place and out is not a:
        return "its add writes into the shortcut"
    if has_ds:
        if not _single(shortcut, "downsample", x):
            return "its shortcut is not downsample(x)"
    elif shortcut is not x:
        return "its shortcut is not the block input"
    node = out
    for i in range(stages, 0, -1):
        if not _module_node(node, f"bn{i}") or len(node.users) != 1 or len(node.args) != 1:
            return f"bn{i} is not where torchvision has it"
        conv = node.args[0]
        if not isinstance(conv, fx.Node) or not _module_node(conv, f"conv{i}"):
            return f"bn{i} does not follow conv{i}"
        if len(conv.users) != 1 or len(conv.args) != 1 or conv.kwargs:
            return f"conv{i}'s output is used elsewhere"
        source = conv.args[0]
        if i == 1:
            if source is not x:
                return "conv1 does not read the block input"
            break
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            return f"conv{i}'s input is used elsewhere"
        prev = relu_operand(source, modules)
        if prev is None:
            return f"conv{i} does not read a ReLU (not torchvision's post-activation order)"
        node = prev
    return ""
