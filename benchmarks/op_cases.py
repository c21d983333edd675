"""The fused ops and the eager PyTorch sequences they replace, as callables
that run one forward (and optionally backward) step. Shared by the
pytest-benchmark file and the ratio script."""

import torch
import torch.nn.functional as F

import resnet_fast.functional as RF

OPS = ("batch_norm_relu", "batch_norm_add_relu", "add_relu")


def make_inputs(op, batch, channels, size, dtype, channels_last, seed=0):
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def act():
        t = torch.randn(batch, channels, size, size, generator=gen, dtype=dtype)
        return t.contiguous(memory_format=fmt).requires_grad_()

    inputs = {"x": act(), "other": act(), "grad": act().detach()}
    inputs["weight"] = (torch.rand(channels, generator=gen) + 0.5).requires_grad_()
    inputs["bias"] = torch.randn(channels, generator=gen).requires_grad_()
    inputs["running_mean"] = torch.zeros(channels)
    inputs["running_var"] = torch.ones(channels)
    return inputs


def forward_fn(op, impl, t):
    """A zero-argument callable computing op with impl ("fused" or "eager")."""
    x, other, w, b, rm, rv = (
        t["x"], t["other"], t["weight"], t["bias"], t["running_mean"], t["running_var"]
    )  # fmt: skip
    if op == "batch_norm_relu":
        if impl == "fused":
            return lambda: RF.batch_norm_relu(x, rm, rv, w, b, training=True)
        return lambda: F.relu(F.batch_norm(x, rm, rv, w, b, training=True))
    if op == "batch_norm_add_relu":
        if impl == "fused":
            return lambda: RF.batch_norm_add_relu(x, other, rm, rv, w, b, training=True)
        return lambda: F.relu(F.batch_norm(x, rm, rv, w, b, training=True) + other)
    if op == "add_relu":
        if impl == "fused":
            return lambda: RF.add_relu(x, other)
        return lambda: F.relu(x + other)
    raise ValueError(op)


def step_fn(op, impl, t, backward):
    fwd = forward_fn(op, impl, t)
    if not backward:
        return lambda: fwd()
    grad = t["grad"]
    leaves = [t[k] for k in ("x", "other", "weight", "bias")]

    def step():
        for leaf in leaves:  # a fresh .grad each step, as after optimizer.zero_grad()
            leaf.grad = None
        fwd().backward(grad)

    return step


def minimal_bytes(op, t, backward):
    """Bytes the fused op must move at least: each activation read or written once."""
    act = t["x"].numel() * t["x"].element_size()
    passes = {  # forward, backward (read/write of each activation once)
        "batch_norm_relu": (2, 3),  # x -> y ; dy, x -> dx
        "batch_norm_add_relu": (3, 5),  # x, r -> y ; dy, x, r -> dx, dr
        "add_relu": (3, 3),  # a, b -> y ; dy, y -> g
    }[op]
    return act * (passes[0] + (passes[1] if backward else 0))
