"""The numeric rules every Python-side backend shares, each written once: the
accumulation dtype, the split of the float64 mean into two accumulation-type
parts, the running-statistics update, and Chan's merge of statistics over
disjoint parts of a batch. The Triton launchers, the pure-PyTorch stage
functions, the fake kernels and synchronized BN use them; the C++ and CUDA
kernels implement the same rules, written once for both
(csrc/common/channel_math.h), in the same order of operations.

resnet_fast.reference does not use them: it is the tests' oracle, written
from the definitions so that it stays an independent computation.
"""

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels accumulate in: float64 for float64 inputs,
    float32 for float32, float16 and bfloat16."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def split_mean(mean: Tensor, acc: torch.dtype) -> tuple[Tensor, Tensor]:
    """The float64 mean as (hi, lo), both [C] in ``acc``: hi = acc(mean),
    lo = acc(mean - hi). The kernels center as (x - hi) - lo, so an fp32
    input with mean 1e4 and std 1 is centered to fp32 precision.

    Args:
        mean: [C] float64.
        acc: the accumulation dtype (see acc_dtype).
    """
    hi = mean.to(acc)
    return hi, (mean - hi.double()).to(acc)


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    momentum: float,
    count: int,
) -> None:
    """running = (1 - momentum) * running + momentum * batch, with the
    unbiased variance var * count / (count - 1), computed in float64 and
    rounded once into the buffers, as torch.nn.functional.batch_norm does.

    Args:
        running_mean, running_var: [C] buffers updated in place, or None
            (nothing to update).
        mean, var: [C] float64 batch mean and biased variance.
        momentum: weight of the batch statistics.
        count: values per channel in the batch (N * H * W, over every
            process for a synchronized BN); 0 leaves the buffers alone.
    """
    if running_mean is None or count == 0:
        return
    unbias = count / (count - 1) if count > 1 else float("inf")
    with torch.no_grad():
        new_mean = (1 - momentum) * running_mean.double() + momentum * mean
        new_var = (1 - momentum) * running_var.double() + momentum * var * unbias
        running_mean.copy_(new_mean)
        running_var.copy_(new_var)


def merge_moments(means: Tensor, vars: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Chan's parallel merge of the statistics of P disjoint parts of a batch.

    Args:
        means: [P, C] per-part means.
        vars: [P, C] per-part biased variances.
        counts: [P] values per channel in each part (0 for an empty part).

    Returns:
        (mean [C], biased var [C], total count []) of the union, in float64.
    """
    means, vars, counts = means.double(), vars.double(), counts.double()
    total = counts.sum()
    weights = (counts / total.clamp_min(1)).unsqueeze(1)  # [P, 1]
    mean = (weights * means).sum(0)
    # M2 / total: each part's spread plus its mean's offset from the merged
    # mean, both in float64, so that no large sums cancel.
    var = (weights * (vars + (means - mean).square())).sum(0)
    return mean, var, total
