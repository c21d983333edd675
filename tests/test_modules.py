"""resnet_fast.nn: fused BatchNorm modules behave as nn.BatchNorm2d; blocks
take torchvision's constructor, names and errors."""

import functools

import pytest
import torch
from torch import nn

import resnet_fast
from resnet_fast.models import plain
from resnet_fast.nn import BasicBlock, BatchNormAddReLU2d, BatchNormReLU2d, Bottleneck


def _twins(momentum=0.1, track_running_stats=True, affine=True):
    kwargs = dict(momentum=momentum, track_running_stats=track_running_stats, affine=affine)
    fused, ref = BatchNormReLU2d(6, **kwargs), nn.BatchNorm2d(6, **kwargs)
    if affine:
        with torch.no_grad():
            for m in (fused, ref):
                m.weight.copy_(torch.linspace(0.5, 1.5, 6))
                m.bias.copy_(torch.linspace(-0.2, 0.3, 6))
    return fused, ref


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_relu_module_matches_batchnorm2d(momentum, track_running_stats, affine):
    fused, ref = _twins(momentum, track_running_stats, affine)
    assert isinstance(fused, nn.BatchNorm2d)
    assert list(fused.state_dict()) == list(ref.state_dict())
    for step in range(3):
        x = torch.randn(4, 6, 5, 5) * 2 + step
        torch.testing.assert_close(fused(x), torch.relu(ref(x)), rtol=1e-5, atol=1e-5)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    fused.eval(), ref.eval()
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(fused(x), torch.relu(ref(x)), rtol=1e-5, atol=1e-5)


def test_batchnorm_add_relu_module():
    fused, ref = BatchNormAddReLU2d(6), nn.BatchNorm2d(6)
    x, r = torch.randn(4, 6, 5, 5), torch.randn(4, 6, 5, 5)
    torch.testing.assert_close(fused(x, r), torch.relu(ref(x) + r), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.running_var, ref.running_var)


def test_fused_batchnorm_rejects_wrong_rank():
    with pytest.raises(ValueError, match="expected 4D input"):
        BatchNormReLU2d(3)(torch.randn(2, 3, 4))


def test_sync_batchnorm_conversion_keeps_blocks_working():
    """resnet_fast.convert_sync_batchnorm (not torch's, which swaps in a
    SyncBatchNorm that takes no residual) keeps the block fused and runnable."""
    block = BasicBlock(8, 8)
    converted = resnet_fast.convert_sync_batchnorm(block)
    assert isinstance(converted.bn1, nn.BatchNorm2d) and isinstance(converted.bn2, nn.BatchNorm2d)
    assert type(converted.bn1).__name__ == "SyncBatchNormReLU2d"
    out = converted(torch.randn(2, 8, 5, 5))  # one process: the plain fused computation
    assert out.shape == (2, 8, 5, 5) and (out >= 0).all()


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("stride", [1, 2])
def test_blocks_match_torchvision_structure_and_math(kind, stride):
    fast_cls, ref_cls = (
        (BasicBlock, plain.BasicBlock) if kind == "basic" else (Bottleneck, plain.Bottleneck)
    )
    inplanes, planes = 16, 8
    out = planes * fast_cls.expansion

    def make(cls):
        torch.manual_seed(0)
        down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        return cls(inplanes, planes, stride, down)

    fast, ref = make(fast_cls), make(ref_cls)
    assert fast_cls.expansion == ref_cls.expansion
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in fast.named_modules()] == [n for n, _ in ref.named_modules()]
    x = torch.randn(2, inplanes, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)


def test_block_argument_errors_match_torchvision():
    with pytest.raises(ValueError, match="BasicBlock only supports groups=1 and base_width=64"):
        BasicBlock(8, 8, groups=2)
    with pytest.raises(ValueError, match="BasicBlock only supports groups=1 and base_width=64"):
        BasicBlock(8, 8, base_width=32)
    with pytest.raises(NotImplementedError, match="Dilation > 1 not supported in BasicBlock"):
        BasicBlock(8, 8, dilation=2)


def test_norm_layer_partial_of_batchnorm_is_fused():
    block = Bottleneck(16, 4, norm_layer=functools.partial(nn.BatchNorm2d, momentum=0.01))
    assert block.fused and block.bn1.momentum == 0.01
    assert isinstance(block.bn3, BatchNormAddReLU2d)


def test_other_norm_layer_falls_back_with_one_warning():
    def gn(c):
        return nn.GroupNorm(2, c)

    from resnet_fast.nn import blocks

    blocks._warned_unfused.discard("GroupNorm")  # the warning is once per process
    with pytest.warns(RuntimeWarning, match="GroupNorm, not nn.BatchNorm2d"):
        block = BasicBlock(8, 8, norm_layer=gn)
    assert not block.fused
    torch.manual_seed(0)
    ref = plain.BasicBlock(8, 8, norm_layer=gn)
    ref.load_state_dict(block.state_dict())
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), ref(x))


def test_public_api_exposes_modules():
    assert (
        resnet_fast.nn.BasicBlock is BasicBlock
        and resnet_fast.nn.BatchNormReLU2d is BatchNormReLU2d
    )
