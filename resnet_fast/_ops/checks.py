"""Argument checks of the public functional API and of the ops' Python
entries (fake kernels, Triton ops).

They run before any kernel (so before a running statistic is touched) and
name the argument, the value it got and what was expected. The C++ entry
points check again, for callers of torch.ops.resnet_fast directly, with the
same contracts (csrc/common/checks.h) and messages; the C++ checks raise
RuntimeError, these ValueError (a wrong value or shape) or TypeError (a wrong
type or dtype).
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .numerics import acc_dtype

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
    """``t`` has the shape, dtype and device of ``ref``."""
    check_matches(t, name, tuple(ref.shape), ref_name, ref, ref_name)


def check_matches(
    t: Tensor, name: str, shape: tuple[int, ...], shape_of: str, ref: Tensor, ref_name: str
) -> None:
    """``t`` is a Tensor of ``shape`` (the shape of what ``shape_of`` names)
    with the dtype and device of ``ref``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have the shape of {shape_of} {shape}, got {tuple(t.shape)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(
            f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}"
        )


def check_channel_vectors(
    channels: int, device: torch.device, what: Callable[[], str], **vectors: Tensor | None
) -> None:
    """Checks [C] vectors: ``what()`` says where C comes from, for the
    message (made only for one: this runs on every BN call)."""
    for name, v in vectors.items():
        if v is None:
            continue
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a Tensor or None, got {type(v).__name__}")
        if v.dim() != 1 or v.numel() != channels:
            raise ValueError(
                f"{name} must be a 1-D tensor of {channels} elements ({what()}), "
                f"got shape {tuple(v.shape)}"
            )
        if v.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {v.dtype}")
        if v.device != device:
            raise ValueError(f"{name} must be on the device {device} ({what()}), got {v.device}")


def check_bn_operands(
    input: Tensor,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
) -> None:
    """The tensors of a BatchNorm call: input [N, C, H, W] float; residual
    None or of input's shape, dtype and device; running_mean, running_var,
    weight, bias (checked in this order, for the first message) None or [C]
    on input's device."""
    check_activation(input, "input")
    if residual is not None:
        check_like(residual, "residual", input, "input")
    check_channel_vectors(
        input.shape[1],
        input.device,
        lambda: f"the channels of input {tuple(input.shape)}",
        running_mean=running_mean,
        running_var=running_var,
        weight=weight,
        bias=bias,
    )


def check_conv_bn_vectors(
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
) -> None:
    """The [C_out] vectors of a conv + BN call (C_out = conv_weight.shape[0]):
    each None or [C_out] on conv_weight's device."""
    check_channel_vectors(
        conv_weight.shape[0],
        conv_weight.device,
        lambda: f"the output channels of conv_weight {tuple(conv_weight.shape)}",
        running_mean=running_mean,
        running_var=running_var,
        bn_weight=bn_weight,
        bn_bias=bn_bias,
        conv_bias=conv_bias,
    )


# --- the contracts of the torch.ops.resnet_fast ops ---------------------------
# The same contracts as csrc/common/checks.h, for the fake kernels and the Triton
# ops' entries: one function per contract, the messages of the C++ checks.


def check_float(t: Tensor, name: str) -> None:
    """``t`` is a Tensor of a supported float dtype."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def check_channel_vector(t: Tensor | None, name: str, input: Tensor) -> None:
    """An optional [C] vector (C = input.shape[1]) of any float dtype on input's device."""
    check_channel_vectors(
        input.shape[1],
        input.device,
        lambda: f"the channels of input {tuple(input.shape)}",
        **{name: t},
    )


def check_channel_stat(t: Tensor, name: str, input: Tensor, dtype: torch.dtype) -> None:
    """A [C] tensor of exactly ``dtype`` on input's device (the statistics the
    ops save and exchange: float64 mean, acc-type invstd)."""
    c = input.shape[1]
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() != c:
        raise ValueError(f"{name} must be a [{c}] {dtype} tensor, got shape {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be a [{c}] {dtype} tensor, got {t.dtype}")
    if t.device != input.device:
        raise ValueError(f"{name} must be on the device of input ({input.device}), got {t.device}")


def check_finite_nonneg(name: str, value: float) -> None:
    """eps, momentum: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _extent(t: Tensor) -> tuple[int, int]:
    """[first, last] byte of t's elements in its storage."""
    size = t.element_size()
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
    start = t.storage_offset() * size
    return start, start + last * size + size - 1


def _storage_address(t: Tensor) -> int | None:
    """Where t's storage starts, or None when t has no element or no real
    storage (meta, fake): then it overlaps nothing. Two tensors may share an
    element when their storages start at the same address and their byte
    extents meet (a conservative answer for strided views)."""
    if t.numel() == 0 or t.device.type == "meta" or isinstance(t, torch._subclasses.FakeTensor):
        return None
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _extents_meet(a: Tensor, b: Tensor) -> bool:
    (a0, a1), (b0, b1) = _extent(a), _extent(b)
    return a0 <= b1 and b0 <= a1


def _has_internal_overlap(t: Tensor) -> bool:
    return any(s == 0 and n > 1 for n, s in zip(t.shape, t.stride(), strict=True))


def check_running_stats(
    input: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
) -> None:
    """Given together, required in eval, [C] float vectors; in training (where
    they are written) neither may overlap itself, the other, or any tensor the
    op reads."""
    check_channel_vector(running_mean, "running_mean", input)
    check_channel_vector(running_var, "running_var", input)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("running_mean must be defined in evaluation mode (training=False)")
    if not training or running_mean is None:
        return
    written = {"running_mean": running_mean, "running_var": running_var}
    for name, t in written.items():
        if _has_internal_overlap(t):
            raise ValueError(
                f"{name} is written in training and must not have overlapping elements, "
                f"got strides {t.stride()}"
            )
    # Storage addresses are not traceable: under torch.compile only the same
    # tensor is caught here (the compiled graph's C++ ops check the rest).
    tracing = torch.compiler.is_compiling()
    # Each storage looked up once: this runs on every training BN call.
    stats = [(name, t, None if tracing else _storage_address(t)) for name, t in written.items()]
    (_, mean, mean_at), (_, var, var_at) = stats
    if mean is var or (mean_at is not None and mean_at == var_at and _extents_meet(mean, var)):
        raise ValueError(
            "running_mean and running_var must not share memory (both are written in "
            "training), got the same memory"
        )
    read = {"input": input, "residual": residual, "weight": weight, "bias": bias}
    for rname, r in read.items():
        if r is None:
            continue
        r_at = None if tracing else _storage_address(r)
        for sname, s, s_at in stats:
            if r is s or (s_at is not None and s_at == r_at and _extents_meet(s, r)):
                raise ValueError(
                    f"{sname} must not share memory with {rname} (it is written in training "
                    f"while {rname} is read)"
                )


def check_bn_forward_op(
    input: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> None:
    """Every argument of bn_act_fwd / bn_add_act_fwd (csrc check_bn_forward)."""
    check_activation(input, "input")
    if residual is not None:
        check_like(residual, "residual", input, "input")
    check_channel_vector(weight, "weight", input)
    check_channel_vector(bias, "bias", input)
    check_running_stats(input, residual, weight, bias, running_mean, running_var, training)
    check_finite_nonneg("eps", eps)
    check_finite_nonneg("momentum", momentum)
    check_batch_statistics(input, training)


def check_affine_and_stats(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    mean_name: str,
    invstd: Tensor,
    invstd_name: str,
) -> None:
    """weight, bias: [C] or None; mean [C] float64; invstd [C] acc dtype."""
    check_channel_vector(weight, "weight", input)
    check_channel_vector(bias, "bias", input)
    check_channel_stat(mean, mean_name, input, torch.float64)
    check_channel_stat(invstd, invstd_name, input, acc_dtype(input.dtype))


def check_bn_apply_op(
    input: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    mean_name: str = "mean",
    invstd_name: str = "invstd",
) -> None:
    """An op that applies given statistics: bn_apply."""
    check_activation(input, "input")
    if residual is not None:
        check_like(residual, "residual", input, "input")
    check_affine_and_stats(input, weight, bias, mean, mean_name, invstd, invstd_name)


def check_bn_backward_op(
    grad_out: Tensor,
    input: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    invstd: Tensor,
    grad_name: str = "grad_out",
    mean_name: str = "save_mean",
    invstd_name: str = "save_invstd",
) -> None:
    """Every argument of a BN backward or backward stage (csrc check_bn_backward)."""
    check_activation(input, "input")
    check_like(grad_out, grad_name, input, "input")
    if residual is not None:
        check_like(residual, "residual", input, "input")
    check_affine_and_stats(input, weight, bias, mean, mean_name, invstd, invstd_name)


def check_elementwise_pair(primary: Tensor, primary_name: str, other: Tensor, other_name: str):
    """add_relu: ``primary`` float (any rank), ``other`` of its shape, dtype, device."""
    check_float(primary, primary_name)
    check_like(other, other_name, primary, primary_name)


def _int_pair(value, name: str, minimum: int) -> tuple[int, int]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) not in (1, 2) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in items
    ):
        raise ValueError(f"{name} must be one or two ints, got {value!r}")
    pair = (items[0], items[0]) if len(items) == 1 else (items[0], items[1])
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def check_conv2d_op(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    stride,
    padding,
    dilation,
    groups: int,
) -> tuple[int, int]:
    """Every argument of triton_conv2d / triton_conv2d_stats.

    Returns:
        (H_out, W_out) of the convolution.
    """
    check_activation(input, "input")
    check_float(weight, "weight")
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be 4-D [C_out, C_in / groups, kH, kW], got shape {tuple(weight.shape)}"
        )
    if weight.dtype != input.dtype:
        raise TypeError(f"weight must have the dtype of input ({input.dtype}), got {weight.dtype}")
    if weight.device != input.device:
        raise ValueError(
            f"weight must be on the device of input ({input.device}), got {weight.device}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    c_out, c_in_g, kh, kw = weight.shape
    c_in = input.shape[1]
    if c_in % groups or c_out % groups or c_in_g * groups != c_in:
        raise ValueError(
            f"weight {tuple(weight.shape)} with groups={groups} does not fit input "
            f"{tuple(input.shape)}: expected C_in = {c_in} = weight.shape[1] * groups and "
            "C_out divisible by groups"
        )
    if min(kh, kw, c_out) < 1:
        raise ValueError(f"weight must have non-empty C_out, kH, kW, got {tuple(weight.shape)}")
    if input.shape[0] > 0 and input.shape[2] * input.shape[3] == 0:
        # PyTorch's convolution refuses these too (only N = 0 may be empty).
        raise ValueError(f"input must have non-empty H and W, got shape {tuple(input.shape)}")
    sh, sw = _int_pair(stride, "stride", 1)
    ph, pw = _int_pair(padding, "padding", 0)
    dh, dw = _int_pair(dilation, "dilation", 1)
    h_out = (input.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (input.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"input {tuple(input.shape)} is smaller than the (dilated, padded) kernel "
            f"{tuple(weight.shape[2:])}: the output would be {h_out}x{w_out}"
        )
    if bias is not None:
        check_channel_vectors(
            c_out,
            input.device,
            lambda: f"the output channels of weight {tuple(weight.shape)}",
            bias=bias,
        )
    if residual is not None:
        check_float(residual, "residual")
        expected = (input.shape[0], c_out, h_out, w_out)
        check_matches(residual, "residual", expected, "the output", input, "input")
    return h_out, w_out


def check_batch_statistics(input: Tensor, training: bool) -> None:
    """Training needs more than one value per channel to have a variance
    (the same message as torch.nn.functional.batch_norm)."""
    if training and input.numel() // max(input.shape[1], 1) == 1 and input.shape[1] > 0:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {input.size()}"
        )
