"""FusedGraph: a module whose forward is its original's traced graph, with
the fusable chains replaced by fused calls (see resnet_fast.graph_fusion).

It shares its original's parameter, buffer and child-module dicts (the very
same tensors, the same state_dict keys), answers attribute look-ups the
original would, and keeps the original to give back on revert(). The
graph's code is derived data: deepcopy / pickling keep the original and the
leaves, and the graph is traced again when the copy is built.

As with any torch.fx graph, plain Python values the forward read while it
was traced (a stride, `if self.downsample is not None`) are fixed in the
graph: change such attributes on the original, then convert again. Modules
and tensors are read at call time, and a module of a fused chain that is
replaced, re-classed or given a hook later runs its own forward.
"""

from torch import nn

from ..nn.folding import FoldingMixin
from ..nn.memory import DEFAULT_MEMORY
from . import fused_graph
from .calls import FusionState
from .rewrite import STATE_ATTR

_SHARED = (
    "_parameters",
    "_buffers",
    "_non_persistent_buffers_set",
    "_modules",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_is_full_backward_hook",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class FusedGraph(FoldingMixin):
    """`original`'s forward with BN chains fused, over the same modules and tensors.

    Build it with resnet_fast.convert(); it is not meant to be built by hand.

    Args:
        original: the module whose forward was traced.
        leaf_paths: submodules that were kept as leaves when tracing.
        memory: "auto", "lean" or "standard" (residual blocks and stems in
            training; see resnet_fast.nn.memory.MEMORY_MODES).
        path: where `original` sits in the converted model (for the report).

    Shape:
        as `original`.
    """

    memory: str = DEFAULT_MEMORY

    def __init__(
        self, original: nn.Module, leaf_paths: frozenset[str], memory: str, path: str = ""
    ) -> None:
        super().__init__()
        for name in _SHARED:
            if name in original.__dict__:
                self.__dict__[name] = original.__dict__[name]
        self.__dict__["_original"] = original
        self.__dict__["_leaf_paths"] = frozenset(leaf_paths)
        self.__dict__["_path"] = path
        self.training = original.training
        self._build(memory)

    def _build(self, memory: str) -> None:
        graph, made, left = fused_graph(
            self._original, self._leaf_paths, self._path, leaf_types=(FusedGraph,)
        )
        code = graph.python_code(root_module="self")
        namespace = dict(code.globals)
        exec(
            compile(code.src, f"<resnet_fast fused {type(self._original).__name__}>", "exec"),
            namespace,
        )  # noqa: S102
        self.__dict__["_graph_forward"] = namespace["forward"]
        self.__dict__["code"] = code.src
        self.__dict__["fusions"] = made
        self.__dict__["left_alone"] = left
        self.__dict__[STATE_ATTR] = FusionState(memory=memory)
        # FoldingMixin's cache: train() and moving the module release it.
        self.__dict__["_fold_cache"] = self.__dict__[STATE_ATTR].cache
        self.__dict__["memory"] = memory

    def __setattr__(self, name, value):
        if name == "memory":
            self.__dict__["_fusion_state"].memory = value
        super().__setattr__(name, value)

    def forward(self, *args, **kwargs):
        return self._graph_forward(self, *args, **kwargs)

    def __prepare_scriptable__(self):
        raise RuntimeError(
            "torch.jit.script cannot compile a model converted by resnet_fast.convert() (its "
            "fused graphs call Python functions); use torch.compile or torch.export instead, "
            "or resnet_fast.revert() the model first"
        )

    def revert_graph(self) -> nn.Module:
        """The original module (same children, same tensors), in this module's mode."""
        original = self._original
        original.train(self.training)
        return original

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_original")
            if original is None:
                raise
            return getattr(original, name)

    # Containers (a traced nn.Sequential) keep answering len / [i] / iteration.
    def __getitem__(self, index):
        return self._original[index]

    def __len__(self) -> int:
        return len(self._original)

    def __iter__(self):
        return iter(self._original)

    def __bool__(self) -> bool:  # a module is truthy, whatever __len__ says
        return True

    def __getstate__(self):
        state = super().__getstate__()
        for key in ("_graph_forward", "code", "_fusion_state"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._build(state.get("memory", DEFAULT_MEMORY))

    def extra_repr(self) -> str:
        return f"fused from {type(self._original).__name__}: {len(self.fusions)} fusions"
