"""BatchNorm2d subclasses whose forward is a fused op.

They keep nn.BatchNorm2d's parameters, buffers, state_dict keys, momentum
(including momentum=None, the cumulative average), num_batches_tracked,
track_running_stats and eval() behaviour; only the forward changes, so
optimizers, weight-decay filters and tools that look for BatchNorm2d keep
working. (torch.nn.SyncBatchNorm.convert_sync_batchnorm finds them too, but
swaps in torch's SyncBatchNorm, which the fused blocks cannot call: use
resnet_fast.convert_sync_batchnorm, nn/sync_batchnorm.py.)
"""

from torch import Tensor, nn

from .._ops.fused import module_batch_norm_act
from .scripting import NotScriptable


class BatchNormReLU2d(NotScriptable, nn.BatchNorm2d):
    """relu(BatchNorm2d(input)) as one fused op; an nn.BatchNorm2d otherwise.

    Shape:
        input: [N, C, H, W]; output: the same, in input's memory format.
    """

    def forward(self, input: Tensor) -> Tensor:
        return module_batch_norm_act(self, input, None, relu=True)


class BatchNormAddReLU2d(NotScriptable, nn.BatchNorm2d):
    """relu(BatchNorm2d(input) + residual) as one fused op: a residual block's tail.

    Shape:
        input, residual: [N, C, H, W]; output: the same.
    """

    def forward(self, input: Tensor, residual: Tensor) -> Tensor:
        return module_batch_norm_act(self, input, residual, relu=True)


def is_plain_batchnorm2d(module: nn.Module) -> bool:
    """A BatchNorm2d whose forward is BatchNorm2d's own (or one of ours)."""
    fused = (BatchNormReLU2d, BatchNormAddReLU2d)
    return type(module) in (nn.BatchNorm2d, *fused)


def fuse_batchnorm(bn: nn.BatchNorm2d, kind: type) -> nn.BatchNorm2d:
    """Turns `bn` into `kind` in place (same object, same tensors) and returns it."""
    if not is_plain_batchnorm2d(bn):
        raise TypeError(f"expected an nn.BatchNorm2d, got {type(bn).__name__}")
    bn.__class__ = kind
    return bn


def fuse_block_norms(norms: list[nn.BatchNorm2d]) -> None:
    """A residual block's norms, in place: BN + ReLU for all but the last,
    BN + residual add + ReLU for the last."""
    for bn in norms[:-1]:
        fuse_batchnorm(bn, BatchNormReLU2d)
    fuse_batchnorm(norms[-1], BatchNormAddReLU2d)


def unfuse_batchnorm(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """Turns one of our fused BN modules back into a plain nn.BatchNorm2d, in place."""
    bn.__class__ = nn.BatchNorm2d
    return bn
