"""load_state_dict all or nothing: nn.Module.load_state_dict copies every
tensor it can and raises about the rest afterwards, leaving a model half
loaded. The fast models and blocks check the whole state_dict first (shapes,
and with strict=True missing and unexpected keys) and load nothing when it
does not fit."""

from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn.parameter import is_lazy


def _shape_error(key: str, target: Tensor, value: Tensor) -> str | None:
    want, got = tuple(target.shape), tuple(value.shape)
    # nn.Module accepts a 1-element 1-D tensor for a 0-D one (old checkpoints).
    if want == got or is_lazy(target) or (want == () and got == (1,)):
        return None
    return (
        f"size mismatch for {key}: copying a param with shape {list(got)} from checkpoint, "
        f"the shape in current model is {list(want)}"
    )


def check_loadable(module: nn.Module, state_dict, strict: bool) -> None:
    """Raises RuntimeError, before anything is copied, when `state_dict` does
    not fit `module`; otherwise does nothing (nn.Module's checks still run)."""
    if not isinstance(state_dict, Mapping):
        return  # nn.Module.load_state_dict raises its own TypeError
    own = module.state_dict(keep_vars=True)
    errors = []
    for key, value in state_dict.items():
        target = own.get(key)
        if isinstance(target, Tensor) and isinstance(value, Tensor):
            error = _shape_error(key, target, value)
            if error is not None:
                errors.append(error)
    if strict:
        unexpected = [key for key in state_dict if key not in own]
        # BatchNorm fills num_batches_tracked in for checkpoints without it.
        missing = [
            key for key in own if key not in state_dict and not key.endswith("num_batches_tracked")
        ]
        if unexpected:
            errors.append(f"unexpected key(s) in state_dict: {', '.join(unexpected)}")
        if missing:
            errors.append(f"missing key(s) in state_dict: {', '.join(missing)}")
    if errors:
        raise RuntimeError(
            f"Error(s) in loading state_dict for {type(module).__name__}; nothing was loaded:"
            "\n\t" + "\n\t".join(errors)
        )
