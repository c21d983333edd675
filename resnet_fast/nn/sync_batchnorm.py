"""Synchronized versions of the fused BatchNorm modules, and
convert_sync_batchnorm, the counterpart of
torch.nn.SyncBatchNorm.convert_sync_batchnorm for fast models.

In training, with torch.distributed initialized and more than one process in
the group, they normalize with the statistics of the whole distributed batch
(resnet_fast.distributed.sync_batch_norm). Otherwise (eval, one process)
they are the plain fused modules, as torch.nn.SyncBatchNorm falls back to
BatchNorm. They subclass nn.BatchNorm2d (state_dict keys, eval-mode folding
in the blocks) and the fused ReLU ones subclass the fused modules, so code
that recognizes those (the blocks, resnet_fast.revert) keeps working.
"""

from torch import Tensor, nn

from .._ops.fused import batch_norm_act, bn_arguments
from ..distributed import sync_batch_norm, sync_world_size
from .batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from .scripting import NotScriptable

__all__ = [
    "SyncBatchNorm2d",
    "SyncBatchNormReLU2d",
    "SyncBatchNormAddReLU2d",
    "convert_sync_batchnorm",
]


class SyncBatchNorm2d(NotScriptable, nn.BatchNorm2d):
    """BatchNorm2d with batch statistics over the processes of
    ``process_group``; the identity activation (a downsample branch's BN).

    Args:
        num_features, eps, momentum, affine, track_running_stats, device,
            dtype: as in nn.BatchNorm2d.
        process_group: the processes that normalize together; None for the
            default group.

    Shape:
        input: [N, C, H, W], this process's share of the batch (sizes may
        differ across processes); output: the same.
    """

    _relu = False

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        self.process_group = process_group

    def _sync_forward(self, input: Tensor, residual: Tensor | None) -> Tensor:
        running_mean, running_var, training, momentum = bn_arguments(self, input)
        if self.training and training and sync_world_size(self.process_group) > 1:
            return sync_batch_norm(
                input, running_mean, running_var, self.weight, self.bias, momentum, self.eps,
                residual=residual, relu=self._relu, process_group=self.process_group,
            )  # fmt: skip
        return batch_norm_act(
            input, residual, running_mean, running_var, self.weight, self.bias,
            training, momentum, self.eps, self._relu,
        )  # fmt: skip

    def forward(self, input: Tensor) -> Tensor:
        return self._sync_forward(input, None)

    def __getstate__(self):
        # A process group belongs to the running processes: copies and
        # pickles leave it behind (None: the default group where they land).
        state = super().__getstate__()
        state["process_group"] = None
        return state


class SyncBatchNormReLU2d(SyncBatchNorm2d, BatchNormReLU2d):
    """relu(SyncBatchNorm2d(input)) as fused passes around the collectives.

    Shape:
        input: [N, C, H, W]; output: the same.
    """

    _relu = True

    def forward(self, input: Tensor) -> Tensor:
        return self._sync_forward(input, None)


class SyncBatchNormAddReLU2d(SyncBatchNorm2d, BatchNormAddReLU2d):
    """relu(SyncBatchNorm2d(input) + residual): a residual block's tail.

    Shape:
        input, residual: [N, C, H, W]; output: the same.
    """

    _relu = True

    def forward(self, input: Tensor, residual: Tensor) -> Tensor:
        return self._sync_forward(input, residual)


# Exact types: a subclass of BatchNorm2d with its own forward is left alone.
_SYNC_OF = {
    nn.BatchNorm2d: SyncBatchNorm2d,
    BatchNormReLU2d: SyncBatchNormReLU2d,
    BatchNormAddReLU2d: SyncBatchNormAddReLU2d,
}


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Makes every BatchNorm of ``module`` synchronized across processes, in
    place: the counterpart of torch.nn.SyncBatchNorm.convert_sync_batchnorm
    for fast models, keeping the fused BN + ReLU / BN + add + ReLU modules
    fused and running on the CPU too.

    nn.BatchNorm2d, BatchNormReLU2d and BatchNormAddReLU2d become
    SyncBatchNorm2d, SyncBatchNormReLU2d and SyncBatchNormAddReLU2d (the same
    objects, so parameters, buffers, hooks and an optimizer built before stay
    valid); modules that are synchronized already get the new group. Other
    BatchNorm modules (1d, 3d) become torch.nn.SyncBatchNorm, as torch's
    function does. Call it before wrapping the model in
    DistributedDataParallel.

    Args:
        module: any nn.Module.
        process_group: the processes that share statistics; None for the
            default group.

    Returns:
        ``module`` (or its replacement when ``module`` itself is a BatchNorm
        that torch.nn.SyncBatchNorm replaces).
    """
    kind = _SYNC_OF.get(type(module))
    if kind is not None:
        module.__class__ = kind
        module.process_group = process_group
    elif isinstance(module, SyncBatchNorm2d):
        module.process_group = process_group
    elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, nn.SyncBatchNorm
    ):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, process_group)
        if new is not child:
            setattr(module, name, new)
    return module
