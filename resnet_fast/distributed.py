"""Synchronized BatchNorm across processes: batch statistics over the whole
distributed batch, the fused apply and grad-input passes local.

Forward, per process:
  1. local statistics: mean and biased variance per channel (fp64), and the
     local count N * H * W (the ``bn_stats`` op);
  2. one all_gather of (mean, var, count) from every process, merged with
     Chan's formula in fp64 (``combine_stats``): gathering the stable partials
     rather than all-reducing sums of x and x^2 keeps inputs with a large mean
     exact, and weighting by the gathered counts handles uneven per-process
     batch sizes (including empty ones), as torch.nn.SyncBatchNorm does;
  3. the running statistics updated from the global mean and unbiased
     variance, the same on every process;
  4. the fused normalize [+ residual] [+ ReLU] pass with the global statistics
     (``bn_apply``).

Backward, per process:
  1. local reductions sum(g), sum(g * (x - mean)), g the gradient through the
     ReLU mask (``bn_act_bwd_reduce``; ``bn_add_act_bwd_reduce`` also writes
     the residual's gradient g in the same pass);
  2. weight and bias gradients from the local sums: each process holds its
     share, and DistributedDataParallel (or the caller) reduces them like any
     other parameter gradient;
  3. one all_reduce (sum) of the two [C] sums, divided by the global count;
  4. the fused grad-input pass (``bn_bwd_apply``) with the global means: this
     is what carries the gradient through the statistics, which depend on
     every process's input.

Every process must call the forward and the backward the same number of
times, in the same order, with the same channel count: the collectives pair
up across processes as in torch.nn.SyncBatchNorm.
"""

import torch
import torch.distributed as dist
from torch import Tensor

from ._ops import checks
from ._ops.backends import backend_for
from ._ops.numerics import acc_dtype, merge_moments, update_running_stats

__all__ = ["combine_stats", "sync_batch_norm", "sync_world_size"]


def sync_world_size(process_group=None) -> int:
    """Processes a BN over ``process_group`` (None: the default group) spans:
    1 when torch.distributed is unavailable or not initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


# Chan's merge of the per-process statistics: the one the Triton reductions
# use for their per-program partials.
combine_stats = merge_moments


def _gather_stats(mean: Tensor, var: Tensor, count: int, group) -> tuple[Tensor, Tensor, int]:
    """(global mean, global biased var, global count) from every process's."""
    c = mean.numel()
    local = torch.cat([mean, var, mean.new_tensor([float(count)])])  # [2C + 1] float64
    world = dist.get_world_size(group)
    if dist.get_backend(group) == "gloo":  # gloo has no all_gather_into_tensor
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local, group=group)
        gathered = torch.stack(parts)
    else:
        gathered = local.new_empty((world, local.numel()))
        dist.all_gather_into_tensor(gathered, local, group=group)
    g_mean, g_var, total = combine_stats(gathered[:, :c], gathered[:, c : 2 * c], gathered[:, -1])
    # One host read per layer (torch.nn.SyncBatchNorm has one too): the count
    # decides the unbiased running variance and the one-value check.
    return g_mean, g_var, int(total.item())


class _SyncBatchNormAct(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, input, residual, weight, bias, running_mean, running_var,
        momentum, eps, relu, group, stages,
    ):  # fmt: skip
        c = input.shape[1]
        local_mean, local_var = stages.bn_stats(input)
        mean, var, count = _gather_stats(local_mean, local_var, input.numel() // max(c, 1), group)
        if count <= 1 and c > 0:
            # torch.nn.functional.batch_norm's message, about the global batch.
            raise ValueError(
                "Expected more than 1 value per channel when training, got input size "
                f"{input.size()} with {count} value(s) per channel over all processes"
            )
        update_running_stats(running_mean, running_var, mean, var, momentum, count)
        invstd = torch.rsqrt(var + eps).to(acc_dtype(input.dtype))
        out = stages.bn_apply(input, residual, weight, bias, mean, invstd, relu)
        ctx.save_for_backward(input, residual, weight, bias, mean, invstd)
        ctx.count, ctx.relu, ctx.group, ctx.stages = count, relu, group, stages
        return out

    @staticmethod
    def backward(ctx, grad_out):
        input, residual, weight, bias, mean, invstd = ctx.saved_tensors
        need_input, need_residual, need_weight, need_bias = ctx.needs_input_grad[:4]
        stages = ctx.stages
        if residual is None:
            sum_g, sum_gx = stages.bn_act_bwd_reduce(
                grad_out, input, weight, bias, mean, invstd, ctx.relu
            )
            grad_residual, grad_src, mask_from_x = None, grad_out, ctx.relu
        else:
            sum_g, sum_gx, grad_residual = stages.bn_add_act_bwd_reduce(
                grad_out, input, residual, weight, bias, mean, invstd, ctx.relu
            )
            grad_src, mask_from_x = grad_residual, False  # already masked
        grad_weight = (sum_gx * invstd).to(weight.dtype) if need_weight else None
        grad_bias = sum_g.to(bias.dtype) if need_bias else None
        grad_input = None
        if need_input:
            c = sum_g.numel()
            sums = torch.cat([sum_g, sum_gx])
            dist.all_reduce(sums, group=ctx.group)
            mean_g, mean_gx = (sums / ctx.count).split(c)
            grad_input = stages.bn_bwd_apply(
                grad_src, input, weight, bias, mean, invstd, mean_g, mean_gx, mask_from_x
            )
        return (
            grad_input,
            grad_residual if need_residual else None,
            grad_weight,
            grad_bias,
            None, None, None, None, None, None, None,
        )  # fmt: skip


def _check(input, residual, running_mean, running_var, weight, bias) -> None:
    # The one-value-per-channel rule of the single-process ops applies to the
    # global batch here, checked once it is known.
    checks.check_bn_operands(input, residual, running_mean, running_var, weight, bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")


def sync_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    residual: Tensor | None = None,
    relu: bool = False,
    process_group=None,
) -> Tensor:
    """Training-mode act(batch_norm(input) [+ residual]) with the batch
    statistics of every process in ``process_group``.

    Every process of the group must call it (and run its backward) in the
    same order. Per-process batch sizes may differ, and may be zero.

    Args:
        input: [N, C, H, W], this process's share of the batch;
            float32/float64/float16/bfloat16.
        running_mean, running_var: [C] or None; updated in place with the
            global statistics (identically on every process).
        weight, bias: [C] or None.
        momentum: weight of the batch statistic in the running average.
        eps: added to the variance.
        residual: [N, C, H, W] added before the activation, or None.
        relu: ReLU (True) or identity (False) as the activation.
        process_group: the processes whose batches are normalized together;
            None for the default group.

    Returns:
        [N, C, H, W] in the dtype (and the kernels' memory format) of input.

    Raises:
        RuntimeError: torch.distributed is not initialized.
        ValueError: bad arguments, or a single value per channel over all
            processes.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sync_batch_norm needs torch.distributed initialized "
            "(torch.distributed.init_process_group); use "
            "resnet_fast.functional.batch_norm_relu & co. in a single process"
        )
    _check(input, residual, running_mean, running_var, weight, bias)
    return _SyncBatchNormAct.apply(
        input, residual, weight, bias, running_mean, running_var,
        float(momentum), float(eps), bool(relu), process_group, backend_for(input.device).ops,
    )  # fmt: skip
