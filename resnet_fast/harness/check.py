"""``resnet-fast check``: every backend available here against the reference.

A quick self-check for a new machine or build, not the test suite: each fused
op (training and eval, contiguous and channels_last, float32 and bfloat16) on
a small odd shape, forward output, every gradient and the running statistics,
compared with ``resnet_fast.reference`` evaluated in float64 on upcast inputs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import functional as RF
from .. import reference, use_backend
from .backends import BackendStatus, all_backends

# Worst relative error accepted (max |fast - oracle| / max |oracle| per tensor).
# The kernels land near 1e-6 in float32; bfloat16 outputs carry its rounding
# (2^-8 relative). A wrong formula, index or mask is off by O(1).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}

# N, C, H, W: C not a power of two, H != W, small enough for an interpreter.
SHAPE = (3, 12, 5, 7)
CONV_IN = 5


@dataclass
class CaseResult:
    """One op in one setting on one backend."""

    backend: str
    case: str
    worst: float  # worst relative error over the compared tensors
    tensor: str  # which tensor it came from
    tolerance: float
    error: str | None = None  # an exception the backend raised

    @property
    def ok(self) -> bool:
        return self.error is None and self.worst <= self.tolerance


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / max(scale, 1e-12)


def _inputs(device: str, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    n, c, h, w = SHAPE

    def act(*shape: int) -> torch.Tensor:
        t = torch.randn(*shape, generator=gen).to(dtype)
        return t.to(device).contiguous(memory_format=fmt)

    return {
        "x": act(n, c, h, w) * 2 + 0.5,  # off-centre, so the mean matters
        "residual": act(n, c, h, w),
        "conv_x": act(n, CONV_IN, h, w),
        "conv_w": (torch.randn(c, CONV_IN, 3, 3, generator=gen) / 4).to(device, dtype),
        "weight": (torch.rand(c, generator=gen) + 0.5).to(device),
        "bias": torch.randn(c, generator=gen).to(device),
        "running_mean": torch.randn(c, generator=gen).to(device),
        "running_var": (torch.rand(c, generator=gen) + 0.5).to(device),
        "grad": act(n, c, h, w),
    }


def _bn_state(t) -> tuple:
    """The BN arguments after the input(s), in the functional ops' order:
    running_mean, running_var, weight, bias."""
    return t["running_mean"], t["running_var"], t["weight"], t["bias"]


def _bn_relu(F, t, training, **kw):
    return F["bn"](t["x"], *_bn_state(t), training, **kw)


def _bn_add_relu(F, t, training, **kw):
    return F["bn_add"](t["x"], t["residual"], *_bn_state(t), training, **kw)


def _add_relu(F, t, training, relu=True):
    return F["add"](t["x"], t["residual"]) if relu else t["x"] + t["residual"]


def _conv_bn_relu(F, t, training, **kw):
    return F["conv"](
        t["conv_x"], t["conv_w"], *_bn_state(t), training, padding=1, residual=t["residual"], **kw
    )


_FAST = {
    "bn": RF.batch_norm_relu,
    "bn_add": RF.batch_norm_add_relu,
    "add": RF.add_relu,
    "conv": RF.conv_bn_relu,
}
_REFERENCE = {
    "bn": reference.batch_norm_act,
    "bn_add": reference.batch_norm_add_act,
    "add": reference.add_relu,
    "conv": reference.conv_bn_act,
}
# op -> (how to call it, the inputs that get gradients, whether it has a training mode)
CASES = {
    "batch_norm_relu": (_bn_relu, ("x", "weight", "bias"), True),
    "batch_norm_add_relu": (_bn_add_relu, ("x", "residual", "weight", "bias"), True),
    "add_relu": (_add_relu, ("x", "residual"), False),
    "conv_bn_relu": (_conv_bn_relu, ("conv_x", "conv_w", "residual", "weight", "bias"), True),
}
_STATS = ("running_mean", "running_var")


def _copies(tensors: dict, grads: tuple[str, ...], upcast: bool) -> dict:
    """Detached copies (in float64 if ``upcast``), with gradients on ``grads``."""
    out = {}
    for key, value in tensors.items():
        copy = value.detach().clone()
        if upcast:
            copy = copy.to(torch.float64)
        out[key] = copy.requires_grad_(key in grads)
    return out


def _mask_kink(base: dict, op: str, training: bool, dtype: torch.dtype) -> None:
    """Zeroes the output gradient where the float64 pre-activation lies within
    rounding distance of the ReLU's kink: there the low-precision mask may
    rightly differ, and with a zero gradient a flip cannot count as an error."""
    fn = CASES[op][0]
    with torch.no_grad(), use_backend("reference"):
        pre = fn(_REFERENCE, _copies(base, (), upcast=True), training, relu=False)
    margin = 1e-5 if dtype == torch.float32 else 1e-2
    keep = pre.abs() > margin * pre.abs().max()
    base["grad"] = base["grad"] * keep.to(base["grad"].dtype)


def run_case(
    backend: BackendStatus, op: str, training: bool, dtype: torch.dtype, channels_last: bool
) -> CaseResult:
    """Runs one op on ``backend`` and on the float64 reference and compares the
    output, every gradient and the running statistics."""
    fn, grad_names, _ = CASES[op]
    layout = "channels_last" if channels_last else "contiguous"
    name = f"{op} {'train' if training else 'eval'} {str(dtype).split('.')[-1]} {layout}"
    gen = torch.Generator().manual_seed(zlib.crc32(f"{backend.name} {name}".encode()))
    base = _inputs(backend.device, dtype, channels_last, gen)
    _mask_kink(base, op, training, dtype)
    fast = _copies(base, grad_names, upcast=False)
    oracle = _copies(base, grad_names, upcast=True)
    try:
        with use_backend(backend.name):
            out = fn(_FAST, fast, training)
            out.backward(fast["grad"])
    except Exception as error:  # noqa: BLE001 - any failure of the backend is reported
        message = f"{type(error).__name__}: {error}"
        return CaseResult(backend.name, name, float("inf"), "-", TOLERANCE[dtype], message)
    with use_backend("reference"):
        expected = fn(_REFERENCE, oracle, training)
        expected.backward(oracle["grad"])
    compared = {"output": (out, expected)}
    compared.update({f"grad {key}": (fast[key].grad, oracle[key].grad) for key in grad_names})
    if op != "add_relu":
        compared.update({key: (fast[key], oracle[key]) for key in _STATS})
    errors = {key: _relative_error(got, want) for key, (got, want) in compared.items()}
    worst_key = max(errors, key=errors.get)
    return CaseResult(backend.name, name, errors[worst_key], worst_key, TOLERANCE[dtype])


def dtypes_for(backend: BackendStatus) -> list[torch.dtype]:
    """float32 everywhere; bfloat16 too (the GPU's autocast dtype, and the CPU
    kernels support it)."""
    return [torch.float32, torch.bfloat16]


def run_check(
    backends: list[BackendStatus] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> tuple[list[CaseResult], list[BackendStatus]]:
    """Checks every available backend.

    Args:
        backends: which to check (default: all of ``resnet_fast.BACKENDS``).
        on_case: called with each result as it comes (progress, verbose output).

    Returns:
        (the results of the backends that ran, the backends that were skipped).
    """
    statuses = all_backends() if backends is None else backends
    results, skipped = [], []
    for status in statuses:
        if not status.available:
            skipped.append(status)
            continue
        probe = _probe(status)
        if probe is not None:
            skipped.append(probe)
            continue
        for op, (_, _, has_training) in CASES.items():
            for training in (True, False) if has_training else (False,):
                for dtype in dtypes_for(status):
                    for channels_last in (False, True):
                        result = run_case(status, op, training, dtype, channels_last)
                        results.append(result)
                        if on_case is not None:
                            on_case(result)
    return results, skipped


def _probe(status: BackendStatus) -> BackendStatus | None:
    """A backend whose prerequisites hold may still refuse tensors of this
    machine (not implemented in this version, or not for this device): that is
    a skip, reported with the backend's own message, not a mismatch."""
    x = torch.randn(4, device=status.device)
    try:
        with use_backend(status.name):
            RF.add_relu(x, x)
    except (NotImplementedError, ValueError) as error:
        return BackendStatus(status.name, None, f"cannot run here: {error}")
    return None
