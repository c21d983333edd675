"""The many spellings of one operation in a traced graph.

A ReLU may be an nn.ReLU module, F.relu / F.relu_, torch.relu / torch.relu_,
or the Tensor methods relu / relu_, in place or not; an addition may be
``+``, ``+=``, torch.add or Tensor.add / add_. Each function here answers
"is this node that operation, and on which operands", so the pattern
finders never look at names.
"""

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

_RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_OPERATOR_IN_PLACE = {
    getattr(operator, f"i{op}")
    for op in ("add", "and", "floordiv", "lshift", "matmul", "mod", "mul", "or", "pow",
               "rshift", "sub", "truediv", "xor")
}  # fmt: skip


def relu_operand(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The node a ReLU node reads, or None when `node` is no plain ReLU.

    nn.ReLU subclasses are not ReLUs here: their forward may differ.
    """
    if node.op == "call_module":
        module = modules.get(node.target)
        if type(module) is not nn.ReLU or node.kwargs or len(node.args) != 1:
            return None
        return node.args[0] if isinstance(node.args[0], fx.Node) else None
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        extra = set(node.kwargs) - {"inplace", "input"}
        if extra or len(node.args) > 2:
            return None
        x = node.args[0] if node.args else node.kwargs.get("input")
        return x if isinstance(x, fx.Node) else None
    if node.op == "call_method" and node.target in _RELU_METHODS:
        if node.kwargs or len(node.args) != 1:
            return None
        return node.args[0] if isinstance(node.args[0], fx.Node) else None
    return None


def add_operands(node: fx.Node) -> tuple[fx.Node, fx.Node, bool] | None:
    """(a, b, in_place) when `node` computes a + b (alpha 1, no out=), else None.

    in_place means the result is written into `a`.
    """
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        in_place = node.target is operator.iadd
    elif node.op == "call_method" and node.target in _ADD_METHODS:
        in_place = node.target == "add_"
    else:
        return None
    if len(node.args) != 2 or set(node.kwargs) - {"alpha"} or node.kwargs.get("alpha", 1) != 1:
        return None
    a, b = node.args
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        return None
    return a, b, in_place


def writes_in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether `node` may write into its first operand."""
    if node.op == "call_module":
        return bool(getattr(modules.get(node.target), "inplace", False))
    if node.kwargs.get("inplace") or "out" in node.kwargs:
        return True
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("__")
    if node.op == "call_function":
        if node.target in _OPERATOR_IN_PLACE:
            return True
        name = getattr(node.target, "__name__", "")
        return name.endswith("_") and not name.startswith("__")
    return False
