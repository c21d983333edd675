"""convert(): fuse what a model's forward computes; revert(): undo it.

Two routes, both decided from traced graphs (graph_fusion/), never from
names alone:

1. a block whose dataflow is exactly torchvision's BasicBlock / Bottleneck
   becomes resnet_fast's fast block (lean memory, folded eval), holding the
   block's very submodules;
2. every other module's forward is traced (per child where the whole forward
   will not trace) and its BN -> ReLU, BN -> add -> ReLU and conv -> BN ->
   ReLU -> max-pool chains are replaced by fused calls, in a FusedGraph that
   shares the module's tensors (graph_fusion/graph_module.py).

What cannot be proven safe is left alone, with the reason in the report.
"""

import copy
import logging

from torch import nn

from .graph_fusion import TraceFailed
from .graph_fusion.blocks import torchvision_dataflow
from .graph_fusion.chains import NORMS
from .graph_fusion.graph_module import FusedGraph
from .models.plain import BasicBlock as PlainBasicBlock
from .models.plain import Bottleneck as PlainBottleneck
from .nn.batchnorm import BatchNormAddReLU2d, BatchNormReLU2d, fuse_block_norms, unfuse_batchnorm
from .nn.blocks import BasicBlock, Bottleneck
from .nn.memory import DEFAULT_MEMORY, check_memory_mode

log = logging.getLogger("resnet_fast")

_BASIC = ("conv1", "bn1", "relu", "conv2", "bn2", "downsample")
_BOTTLENECK = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample")
_FUSED_NORMS = (BatchNormReLU2d, BatchNormAddReLU2d)
_DONE = (BasicBlock, Bottleneck, FusedGraph)


def _block_kind(m: nn.Module) -> tuple[type | None, str]:
    """(fast block class, "") when m computes torchvision's block, else
    (None, why not); why is "" for modules that are no block candidate."""
    names = set(m._modules)
    if isinstance(m, _DONE):
        return None, ""
    if names in (set(_BASIC), set(_BASIC) - {"downsample"}):
        kind, stages = BasicBlock, 2
    elif names in (set(_BOTTLENECK), set(_BOTTLENECK) - {"downsample"}):
        kind, stages = Bottleneck, 3
    else:
        return None, ""
    why = torchvision_dataflow(m, stages)
    return (None, why) if why else (kind, "")


def _fast_block(old: nn.Module, kind: type, memory: str) -> nn.Module:
    """A fast block holding `old`'s very submodules (no tensor is copied)."""
    new = kind.__new__(kind)
    nn.Module.__init__(new)
    for name, child in old._modules.items():
        setattr(new, name, child)
    new.downsample = getattr(old, "downsample", None)  # a plain attribute when None
    new.stride = getattr(
        old, "stride", new.conv2.stride[0] if kind is Bottleneck else new.conv1.stride[0]
    )
    new.fused = True
    new.memory = memory
    norms = [new.bn1, new.bn2] + ([new.bn3] if kind is Bottleneck else [])
    fuse_block_norms(norms)
    new.train(old.training)
    return new


def _plain_block(old: nn.Module) -> nn.Module:
    kind = PlainBottleneck if isinstance(old, Bottleneck) else PlainBasicBlock
    try:  # torchvision's own classes when it is installed
        from torchvision.models import resnet as tv

        kind = tv.Bottleneck if kind is PlainBottleneck else tv.BasicBlock
    except ImportError:
        pass
    new = kind.__new__(kind)
    nn.Module.__init__(new)
    for name, child in old._modules.items():
        if isinstance(child, _FUSED_NORMS):
            unfuse_batchnorm(child)
        setattr(new, name, child)
    new.downsample = old.downsample
    new.stride = old.stride
    new.train(old.training)
    return new


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _outside_fused_graphs(module: nn.Module, path: str):
    """named_modules(), not descending into FusedGraphs: their graphs call
    their submodules' parts directly, so those must stay as they are."""
    if isinstance(module, FusedGraph):
        return
    yield path, module
    for name, child in module._modules.items():
        if child is not None:
            yield from _outside_fused_graphs(child, _join(path, name))


def _fast_blocks(model: nn.Module, memory: str, entries: list) -> nn.Module:
    """Route 1: torchvision-dataflow blocks become fast blocks, in place."""
    kind, why = _block_kind(model)
    if kind is not None:
        entries.append(("<model>", "converted", f"{kind.__name__} (torchvision's dataflow)"))
        return _fast_block(model, kind, memory)
    for name, module in list(_outside_fused_graphs(model, "")):
        for child_name, child in list(module._modules.items()):
            if child is None:
                continue
            kind, why = _block_kind(child)
            full = _join(name, child_name)
            if kind is not None:
                setattr(module, child_name, _fast_block(child, kind, memory))
                entries.append((full, "converted", f"{kind.__name__} (torchvision's dataflow)"))
            elif why:
                entries.append((full, "graph route", f"not torchvision's block: {why}"))
    return model


def _has_candidates(module: nn.Module) -> bool:
    """Whether a norm layer that is not fused yet lies in `module` outside fast modules."""
    if isinstance(module, _DONE):
        return False
    if isinstance(module, NORMS):
        return not isinstance(module, _FUSED_NORMS)
    return any(_has_candidates(c) for c in module._modules.values() if c is not None)


class _GraphRoute:
    """Route 2, one module tree: trace, fuse, recurse where tracing fails."""

    def __init__(self, memory: str, entries: list):
        self.memory, self.entries = memory, entries
        self.seen: dict[int, nn.Module] = {}

    def _record(self, path: str, fused: FusedGraph) -> None:
        for where, what in fused.fusions:
            self.entries.append((where, "converted", what))
        for left in fused.left_alone:
            self.entries.append((left.where, "left alone", left.why))

    def visit(self, module: nn.Module, path: str) -> nn.Module:
        if id(module) in self.seen:
            return self.seen[id(module)]
        result = self._visit(module, path)
        self.seen[id(module)] = result
        return result

    def _attempt(self, module: nn.Module, path: str, leaves: frozenset[str]) -> FusedGraph:
        return FusedGraph(module, leaves, self.memory, path)

    def _visit(self, module: nn.Module, path: str) -> nn.Module:
        if not _has_candidates(module):
            return module
        try:
            fused = self._attempt(module, path, frozenset())
        except TraceFailed as e:
            first_why = str(e)
        else:
            self._record(path, fused)
            return fused if fused.fusions else module
        untraceable = set()
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            new = self.visit(child, _join(path, name))
            if new is not child:
                module._modules[name] = new
            else:
                untraceable.add(name)
        # Children are now fused (leaves by type) or kept as they are (as
        # leaves, so their own forward need not trace): the module's own
        # code may trace now.
        try:
            fused = self._attempt(module, path, frozenset(untraceable))
        except TraceFailed as e:
            if type(module).forward is not nn.Module.forward:  # a container has no forward
                why = first_why if first_why == str(e) else f"{first_why}; {e}"
                why = f"forward not traceable ({why}): children converted one by one"
                self.entries.append((path or "<model>", "left alone", why))
            return module
        self._record(path, fused)
        return fused if fused.fusions else module


def convert(
    model: nn.Module,
    inplace: bool = True,
    report: list | None = None,
    memory: str = DEFAULT_MEMORY,
) -> nn.Module:
    """Fuses the BatchNorm chains `model`'s forward computes, proven from its
    traced graph: BN -> ReLU, BN -> add -> ReLU (any shortcut), conv -> BN
    folded in eval, the ImageNet stem's conv -> BN -> ReLU -> max-pool, and
    torchvision-dataflow blocks as resnet_fast's fast blocks.

    Parameters and buffers are reused, not copied, so an optimizer built
    before the conversion keeps updating the right tensors, and state_dict
    keys do not change. Submodules are replaced in their parents; when the
    model's own forward is rewritten the returned object is a new module
    (a FusedGraph over the same tensors): use the return value.

    Args:
        model: any nn.Module.
        inplace: convert `model` itself (True) or a deep copy (False).
        report: if a list is given, one (where, action, what or why) tuple is
            appended per fusion made ("converted") and per chain or module
            left as it was ("left alone", "graph route"). A one-line summary
            is logged on the "resnet_fast" logger either way.
        memory: "auto" (default), "lean" or "standard": what fast blocks
            and fused stems keep for backward (see
            resnet_fast.nn.memory.MEMORY_MODES).

    Returns:
        The converted model.

    Raises:
        TypeError: `model` is not an nn.Module.
    """
    check_memory_mode(memory)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    entries: list = []
    model = _fast_blocks(model, memory, entries)
    model = _GraphRoute(memory, entries).visit(model, "")
    fused = sum(1 for e in entries if e[1] == "converted")
    left = sum(1 for e in entries if e[1] == "left alone")
    reasons = [f"{n}: {w}" for n, a, w in entries if a == "left alone"]
    more = f"; and {len(reasons) - 3} more (see report=)" if len(reasons) > 3 else ""
    log.info(
        "resnet_fast.convert: %d fusions made, %d patterns left alone%s%s", fused, left,
        "".join(f"; {r}" for r in reasons[:3]), more,
    )  # fmt: skip
    if report is not None:
        report.extend(entries)
    return model


def revert(model: nn.Module, inplace: bool = True) -> nn.Module:
    """Undoes convert(): fused graphs give back their original modules, fast
    blocks become plain blocks (torchvision's when it is installed), fused
    BatchNorms plain nn.BatchNorm2d. Tensors are reused, as in convert().

    Args:
        model: a model holding resnet_fast modules.
        inplace: revert `model` itself (True) or a deep copy (False).

    Returns:
        The reverted model (a new object when the model itself was a FusedGraph).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, FusedGraph):
        model = model.revert_graph()
    for module in list(model.modules()):
        for child_name, child in list(module._modules.items()):
            if isinstance(child, FusedGraph):
                module._modules[child_name] = child.revert_graph()
    for module in list(model.modules()):
        for child_name, child in list(module._modules.items()):
            if isinstance(child, (BasicBlock, Bottleneck)):
                setattr(module, child_name, _plain_block(child))
        for flag in ("stem_fused", "classifier_prepacked"):
            if getattr(module, flag, False):
                setattr(module, flag, False)
    for module in model.modules():
        if isinstance(module, _FUSED_NORMS):
            unfuse_batchnorm(module)
    return model
