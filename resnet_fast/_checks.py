"""Argument checks of the public functional API.

They run before any kernel (so before a running statistic is touched) and
name the argument, the value it got and what was expected. The C++ entry
points check again, for callers of torch.ops.resnet_fast directly.
"""

import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_activation(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(
            f"{name} must be 4-D [N, C, H, W], got {t.dim()}-D with shape {tuple(t.shape)}"
        )
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def check_like(t: Tensor, name: str, ref: Tensor, ref_name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.shape != ref.shape:
        raise ValueError(
            f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}"
        )
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(
            f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}"
        )


def check_channel_vectors(
    channels: int, device: torch.device, what: str, **vectors: Tensor | None
) -> None:
    """Checks [C] vectors: ``what`` says where C comes from, for the message."""
    for name, v in vectors.items():
        if v is None:
            continue
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a Tensor or None, got {type(v).__name__}")
        if v.dim() != 1 or v.numel() != channels:
            raise ValueError(
                f"{name} must be a 1-D tensor of {channels} elements ({what}), "
                f"got shape {tuple(v.shape)}"
            )
        if v.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {v.dtype}")
        if v.device != device:
            raise ValueError(f"{name} must be on the device {device} ({what}), got {v.device}")


def check_batch_norm(
    input: Tensor,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
) -> None:
    check_activation(input, "input")
    if residual is not None:
        check_like(residual, "residual", input, "input")
    check_channel_vectors(
        input.shape[1],
        input.device,
        f"the channels of input {tuple(input.shape)}",
        running_mean=running_mean,
        running_var=running_var,
        weight=weight,
        bias=bias,
    )
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("running_mean must be defined in evaluation mode (training=False)")
    if training and input.numel() // max(input.shape[1], 1) == 1 and input.shape[1] > 0:
        # The same message as torch.nn.functional.batch_norm.
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {input.size()}"
        )
