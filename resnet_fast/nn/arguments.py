"""Constructor argument checks of the blocks and models: a wrong value fails
at construction, with an error that names the owner, the argument, the value
and what was expected, instead of deep inside nn.Conv2d or at the first
forward."""

from collections.abc import Sequence


def positive_int(owner: str, name: str, value) -> int:
    """`value` when it is an int >= 1 (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name} must be at least 1, got {value}")
    return value


def stride(owner: str, value) -> int | tuple[int, int]:
    """A convolution stride: an int >= 1, or a pair of them."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{owner}: stride must be an int or a pair, got {value!r}")
        for v in value:
            positive_int(owner, "stride", v)
        return tuple(value)
    return positive_int(owner, "stride", value)


def boolean(owner: str, name: str, value) -> bool:
    """`value` when it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def optional_callable(owner: str, name: str, value):
    """`value` when it is None or callable (a module, a class, a function)."""
    if value is not None and not callable(value):
        raise TypeError(
            f"{owner}: {name} must be None or callable, got {type(value).__name__} {value!r}"
        )
    return value


def positive_ints(owner: str, name: str, value, length: int | None = None) -> list[int]:
    """`value` as a list when it is a sequence of ints >= 1 (of `length`)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{owner}: {name} must be a list of ints, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{owner}: {name} must have {length} entries, got {value!r}")
    for v in value:
        positive_int(owner, f"every entry of {name}", v)
    return list(value)


def one_of(owner: str, name: str, value, choices: Sequence) -> str:
    """`value` when it is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def model_kwargs(name: str, kwargs: dict, accepted: Sequence[str]) -> dict:
    """The keyword arguments of model function `name`, checked by name.

    torchvision's `weights=None` and `progress` are accepted and have nothing
    to do here (no download happens); any other `weights` is refused, as
    there are no weights to load.
    """
    kwargs = dict(kwargs)
    weights = kwargs.pop("weights", None)
    if weights is not None:
        raise ValueError(
            f"{name}: weights={weights!r}: resnet_fast ships no pretrained weights; build "
            "the model and load_state_dict a checkpoint of the same architecture "
            "(torchvision's state_dict keys are the same)"
        )
    if "progress" in kwargs:
        boolean(name, "progress", kwargs.pop("progress"))
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        raise TypeError(
            f"{name}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    return kwargs
