"""TorchScript refusal for the fused modules.

Their forwards dispatch from Python (backend choice, eval-mode fold cache,
memory-lean autograd), which TorchScript cannot compile. torch.jit.script
calls ``__prepare_scriptable__`` on a module and on each of its submodules
before compiling anything, so a fused module found anywhere in the tree stops
it there with a message that names the ways that do work.
"""


class NotScriptable:
    """Mixin for nn.Module subclasses: torch.jit.script raises a clear error."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"torch.jit.script cannot compile resnet_fast's {type(self).__name__}: its forward "
            "runs Python that TorchScript does not support (backend dispatch, the eval-mode "
            "fold cache, memory-lean autograd). Use torch.compile(model) to compile it, or "
            "torch.export.export(model, (example_input,)) for a standalone graph; "
            "both call the fused ops."
        )
