"""torch.jit.script of a fused module: refused with a message that names the
ways that work (torch.compile, torch.export), wherever the module sits."""

import pytest
import torch
from torch import nn

import resnet_fast.models as M
from resnet_fast.nn import (
    BasicBlock,
    BatchNormAddReLU2d,
    BatchNormReLU2d,
    Bottleneck,
    SyncBatchNorm2d,
    SyncBatchNormReLU2d,
)
from resnet_fast.nn.batchnorm import unfuse_batchnorm

# torch.jit.script itself warns that it is deprecated, pointing the same way.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

REFUSAL = r"torch.jit.script cannot compile resnet_fast's {}.*torch\.compile.*torch\.export"

MODULES = {
    "resnet20": (lambda: M.resnet20(), "CifarResNet"),
    "BasicBlock": (lambda: BasicBlock(8, 8), "BasicBlock"),
    "Bottleneck": (lambda: Bottleneck(16, 4), "Bottleneck"),
    "BatchNormReLU2d": (lambda: BatchNormReLU2d(4), "BatchNormReLU2d"),
    "BatchNormAddReLU2d": (lambda: BatchNormAddReLU2d(4), "BatchNormAddReLU2d"),
    "SyncBatchNorm2d": (lambda: SyncBatchNorm2d(4), "SyncBatchNorm2d"),
    "SyncBatchNormReLU2d": (lambda: SyncBatchNormReLU2d(4), "SyncBatchNormReLU2d"),
    # Inside a plain container: found before anything is compiled.
    "nested": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), BatchNormReLU2d(4)), "BatchNormReLU2d"),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_script_is_refused_with_the_way_out(name):
    build, kind = MODULES[name]
    with pytest.raises(RuntimeError, match=REFUSAL.format(kind)):
        torch.jit.script(build())


def test_an_unfused_batchnorm_scripts_again():
    """The refusal belongs to the fused class: the same module turned back
    into nn.BatchNorm2d (what revert() does) compiles."""
    bn = unfuse_batchnorm(BatchNormReLU2d(4).eval())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(torch.jit.script(bn)(x), bn(x))
