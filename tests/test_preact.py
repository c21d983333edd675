"""Pre-activation ResNets of the zoo: each computes what its plain-PyTorch twin
in resnet_fast.models.plain computes (float64, exact up to rounding:
training forward, every gradient, running statistics, eval forward), with the
same state_dict keys, and every BN before a convolution runs fused."""

import copy

import pytest
import torch
from torch import nn

import resnet_fast.models as M
from resnet_fast.harness.fusion import OpCounter
from resnet_fast.models.plain import PLAIN_PREACT_BLOCKS, plain_model
from resnet_fast.models.preact import FUSED_PREACT_BLOCKS, PREACT_SPECS, PreActResNet
from resnet_fast.nn import BatchNormReLU2d

CL = torch.channels_last


def _build(name, fused, layers=None):
    """The zoo model (fused) or its plain twin; with ``layers``, the same
    architecture at a test-sized depth (same block and shortcut code)."""
    torch.manual_seed(0)
    if layers is None:
        return getattr(M, name)(num_classes=10) if fused else plain_model(name, num_classes=10)
    blocks = FUSED_PREACT_BLOCKS if fused else PLAIN_PREACT_BLOCKS
    kind, _, widths, stem, shortcut, init, _ = PREACT_SPECS[name]
    return PreActResNet(blocks[kind], layers, widths, stem, shortcut, 10, fused, init)


def _twins(name, dtype=torch.float64, fmt=torch.contiguous_format, layers=None):
    fast, ref = _build(name, True, layers), _build(name, False, layers)
    # Non-trivial affine parameters and running statistics: the defaults (1, 0,
    # 0, 1) would hide a swapped weight/bias or running mean/var.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for (key, a), b in zip(fast.state_dict().items(), ref.state_dict().items(), strict=True):
            assert key == b[0] and torch.equal(a, b[1]), key  # same seed, same initialization
            if key.endswith("running_var") or ("bn" in key and key.endswith("weight")):
                a.copy_(torch.rand(a.shape, generator=g) + 0.5)
            elif key.endswith(("bias", "running_mean")) and a.is_floating_point():
                a.copy_(torch.randn(a.shape, generator=g) * 0.2)
            b[1].copy_(a)
    return fast.to(dtype).to(memory_format=fmt), ref.to(dtype).to(memory_format=fmt)


def _input(size, dtype=torch.float64, fmt=torch.contiguous_format, batch=2):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64)
    return x.to(dtype).contiguous(memory_format=fmt)


def _train_step(model, x):
    """Training-mode logits and every gradient of a fixed loss."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
    return out.detach(), {k: p.grad for k, p in model.named_parameters()}


def _assert_matches(fast, ref, x, rtol, atol):
    out_f, grads_f = _train_step(fast, x)
    out_r, grads_r = _train_step(ref, x)
    torch.testing.assert_close(out_f, out_r, rtol=rtol, atol=atol)
    for k, g in grads_r.items():
        scale = max(g.abs().max().item(), 1.0)
        torch.testing.assert_close(grads_f[k], g, rtol=rtol, atol=atol * scale, msg=k)
    # Running statistics (and num_batches_tracked) after the training step.
    for (k, a), b in zip(fast.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=k)
    fast.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=rtol, atol=atol)


# (name, blocks per stage or None for the model as published, input size).
# ImageNet models run at 40x40 so that layer4's BatchNorm sees more than two
# values per channel (over two, float64 gradients lose digits to conditioning).
FULL = [
    ("preact_resnet18", [1, 1, 1, 1], 40),
    ("preact_resnet50", [1, 1, 1, 1], 40),
    ("cifar_preact_resnet18", [1, 1, 1, 1], 16),
    ("preact_resnet20", None, 32),
    ("preact_resnet164", [2, 2, 2], 32),
]


@pytest.mark.parametrize("name,layers,size", FULL, ids=[c[0] for c in FULL])
def test_matches_the_plain_twin_in_float64(name, layers, size):
    fast, ref = _twins(name, layers=layers)
    _assert_matches(fast, ref, _input(size), rtol=1e-9, atol=1e-9)


def test_channels_last_float32_is_close():
    name = "cifar_preact_resnet18"
    fast, ref = _twins(name, torch.float32, CL)
    x = _input(16, torch.float32, CL, batch=4)
    fast.train(), ref.train()
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)
    fast.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)
        features = fast.layer2(fast.layer1(fast.conv1(x)))  # no hidden NCHW copies
        assert features.is_contiguous(memory_format=CL)


@pytest.mark.parametrize(
    "name,mode",
    [("preact_resnet50", "train"), ("preact_resnet50", "eval"), ("preact_resnet20", "train")],
)
def test_every_batchnorm_runs_fused(name, mode):
    fast, ref = _twins(name, torch.float32, layers=[1, 1, 1, 1][: len(PREACT_SPECS[name].widths)])
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(
        isinstance(m, BatchNormReLU2d) for m in fast.modules() if isinstance(m, nn.BatchNorm2d)
    )
    x = _input(32, torch.float32)
    getattr(fast, mode)(), getattr(ref, mode)()
    with OpCounter() as fast_ops, torch.no_grad():
        fast(x)
    with OpCounter() as ref_ops, torch.no_grad():
        ref(x)
    assert ref_ops.batch_norms == len(bns) and ref_ops.fused_ops == 0  # the counter sees them
    assert fast_ops.batch_norms == 0 and fast_ops.fused_ops >= len(bns) - 1  # eval: stem BN folded


@pytest.mark.parametrize("name", sorted(PREACT_SPECS))
def test_every_model_builds_with_the_twins_keys(name):
    fast, ref = getattr(M, name)(), plain_model(name)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert fast.fc.out_features == PREACT_SPECS[name].num_classes
    if name in ("preact_resnet20", "preact_resnet110"):  # option A: as many as resnet20/110
        assert sum(p.numel() for p in fast.parameters()) == sum(
            p.numel() for p in getattr(M, name.replace("preact_", ""))().parameters()
        )
    if name in ("preact_resnet164", "preact_resnet101", "cifar_preact_resnet50"):
        with torch.no_grad():  # deep ones, not compared above: they run, with the shape
            assert fast.eval()(_input(16, torch.float32)).shape == (
                2,
                PREACT_SPECS[name].num_classes,
            )


def test_parameter_counts_from_the_literature():
    # Identity Mappings (He et al. 2016): ResNet-164 has 1.7M parameters; the
    # CIFAR pre-activation ResNet-18 has 11.17M with the final BN.
    count = {n: sum(p.numel() for p in getattr(M, n)().parameters()) for n in
             ("preact_resnet164", "cifar_preact_resnet18")}  # fmt: skip
    assert 1.65e6 < count["preact_resnet164"] < 1.75e6
    assert count["cifar_preact_resnet18"] == 11_172_170


def test_state_dict_round_trip_and_copy():
    name = "cifar_preact_resnet18"
    fast, ref = _twins(name, torch.float32)
    fresh = M.cifar_preact_resnet18()
    fresh.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(fast.state_dict(), strict=True)
    clone = copy.deepcopy(fast)
    x = _input(16, torch.float32)
    for m in (fast, ref, fresh, clone):
        m.eval()
    with torch.no_grad():
        want = ref(x)
        for m in (fast, fresh, clone):
            torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)


def test_first_imagenet_unit_uses_the_stem_activation():
    model = M.preact_resnet18()
    assert model.layer1[0].bn1 is None and isinstance(model.layer1[1].bn1, BatchNormReLU2d)
    assert isinstance(M.cifar_preact_resnet18().layer1[0].bn1, BatchNormReLU2d)


def test_bad_keyword_arguments():
    with pytest.raises(TypeError, match="unexpected keyword"):
        M.preact_resnet18(groups=2)
    with pytest.raises(ValueError, match="num_classes"):
        M.preact_resnet20(num_classes=0)
