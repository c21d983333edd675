"""The entry every caller of the fused BN and add-ReLU ops goes through: the
public functional API, the fused BN modules, synchronized BN outside
training, convert()'s fused calls. Each checks its arguments (before any
running statistic is touched), asks the dispatch point for the backend of
the input's device, and calls that backend's op.
"""

from torch import Tensor, nn

from . import checks
from .backends import backend_for


def batch_norm_act(
    input: Tensor,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    relu: bool,
) -> Tensor:
    """act(batch_norm(input) [+ residual]), act = ReLU or identity.

    Args:
        input: [N, C, H, W].
        residual: [N, C, H, W] added before the activation, or None.
        running_mean, running_var: [C] or None; updated in place in training.
        weight, bias: [C] or None.
        training: batch statistics (True) or running statistics (False).
        momentum, eps: as in torch.nn.functional.batch_norm.
        relu: ReLU (True) or identity (False).

    Returns:
        [N, C, H, W], the dtype of ``input``, in the memory format the
        kernels write (contract: resnet_fast._ops.layout).
    """
    checks.check_bn_operands(input, residual, running_mean, running_var, weight, bias)
    checks.check_running_stats(input, residual, weight, bias, running_mean, running_var, training)
    checks.check_batch_statistics(input, training)
    checks.check_finite_nonneg("eps", eps)
    checks.check_finite_nonneg("momentum", momentum)
    ops = backend_for(input.device).ops
    args = (weight, bias, running_mean, running_var, training, float(momentum), float(eps), relu)
    if residual is None:
        return ops.bn_act_fwd(input, *args)[0]
    return ops.bn_add_act_fwd(input, residual, *args)[0]


def module_batch_norm_act(
    bn: nn.BatchNorm2d, input: Tensor, residual: Tensor | None, relu: bool
) -> Tensor:
    """act(bn(input) [+ residual]) as one op, with the module's parameters,
    running statistics and mode (:func:`bn_arguments`), act = ReLU or identity.

    Args:
        bn: an nn.BatchNorm2d (or a subclass that keeps its forward's rules).
        input, residual: [N, C, H, W]; residual may be None.
        relu: ReLU (True) or identity (False).
    """
    running_mean, running_var, training, momentum = bn_arguments(bn, input)
    return batch_norm_act(
        input, residual, running_mean, running_var, bn.weight, bn.bias,
        training, momentum, bn.eps, relu,
    )  # fmt: skip


def add_relu(input: Tensor, other: Tensor) -> Tensor:
    """relu(input + other); ``other`` of input's shape, dtype and device."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    checks.check_float(input, "input")
    checks.check_like(other, "other", input, "input")
    return backend_for(input.device).ops.add_relu_fwd(input, other)


def bn_arguments(bn: nn.BatchNorm2d, input: Tensor):
    """(running_mean, running_var, training, momentum) exactly as
    nn.BatchNorm2d.forward derives them from the module, incrementing
    num_batches_tracked as it does.

    Args:
        bn: an nn.BatchNorm2d (or a subclass that keeps its forward's rules).
        input: [N, C, H, W], checked for rank as BatchNorm2d checks it.
    """
    bn._check_input_dim(input)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if use_running else None
    running_var = bn.running_var if use_running else None
    return running_mean, running_var, training, momentum
