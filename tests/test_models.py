"""resnet_fast.models: torchvision's architecture, parameter counts,
initialization and state_dict keys, and the same function as the reference."""

import importlib.util

import pytest
import torch

import resnet_fast.models as M
from resnet_fast.models.plain import plain_model

PARAMS = {  # torchvision's counts; the CIFAR ones as in the literature's implementations
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "cifar_resnet18": 11_173_962, "cifar_resnet34": 21_282_122, "cifar_resnet50": 23_520_842,
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962,
}  # fmt: skip
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_keys(name):
    model = getattr(M, name)()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert list(model.state_dict()) == list(plain_model(name).state_dict())


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed (no CPU build here)")
@pytest.mark.parametrize(
    "name",
    [
        n
        for n in PARAMS
        if not n.startswith(("cifar", "resnet20", "resnet3", "resnet4", "resnet5", "resnet110"))
    ],
)
def test_state_dict_round_trips_with_torchvision(name):
    """Same keys both ways, and the same function: equal to rounding in
    float64; in float32 no further from float64 than torchvision is (deep
    models at init have outputs of 1e4 and more, so fp32 rounding is large)."""
    import torchvision

    tv = getattr(torchvision.models, name)()
    fast = getattr(M, name)()
    fast.load_state_dict(tv.state_dict(), strict=True)
    tv.load_state_dict(fast.state_dict(), strict=True)
    tv.eval(), fast.eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        y_fast32, y_tv32 = fast(x.float()), tv(x.float())
        fast, tv = fast.double(), tv.double()
        y_fast, y_tv = fast(x), tv(x)
    scale = y_tv.abs().max().item()
    torch.testing.assert_close(y_fast, y_tv, rtol=1e-10, atol=1e-10 * scale)
    tv_err = (y_tv32.double() - y_tv).abs().max().item()
    fast_err = (y_fast32.double() - y_tv).abs().max().item()
    assert fast_err <= 2 * tv_err + 1e-6 * scale, (fast_err, tv_err, scale)


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "resnext50_32x4d", "resnet20", "cifar_resnet18"]
)
def test_same_seed_same_weights_and_outputs(name):
    torch.manual_seed(0)
    fast = getattr(M, name)(num_classes=10)
    torch.manual_seed(0)
    ref = plain_model(name, num_classes=10)
    for (k, a), b in zip(fast.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # float64: deep networks at init amplify fp32 rounding differences; in
    # fp64 any difference larger than rounding is a bug.
    cl = torch.channels_last
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=cl)
    fast, ref = fast.double().to(memory_format=cl), ref.double().to(memory_format=cl)
    for mode in ("train", "eval"):
        getattr(fast, mode)(), getattr(ref, mode)()
        a, b = fast(x), ref(x)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


def test_torchvision_keyword_arguments():
    m = M.resnet50(
        num_classes=7, zero_init_residual=True, replace_stride_with_dilation=[False, True, True]
    )
    assert m.fc.out_features == 7
    assert all(
        float(b.bn3.weight.abs().sum()) == 0 for layer in (m.layer1, m.layer4) for b in layer
    )
    assert m.layer4[0].conv2.dilation == (2, 2) and m.layer4[1].conv2.dilation == (4, 4)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="replace_stride_with_dilation"):
        M.resnet18(replace_stride_with_dilation=[True])
    with pytest.raises(ValueError, match="fixes groups=32"):
        M.resnext50_32x4d(groups=8)


def test_option_a_shortcut_pads_zeros():
    model = M.resnet20()
    shortcut = model.layers[1][0].downsample
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    assert sum(p.numel() for p in shortcut.parameters()) == 0


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed (no CPU build here)")
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_convert_of_torchvision_models_computes_the_same(name):
    """convert() of a real torchvision model: the same outputs and gradients
    in float64 (training, then eval), the same state_dict."""
    import torchvision

    import resnet_fast

    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(num_classes=10).double()
    fast = resnet_fast.convert(tv, inplace=False)
    assert list(fast.state_dict()) == list(tv.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for mode in ("train", "eval"):
        getattr(tv, mode)(), getattr(fast, mode)()
        y_tv, y_fast = tv(x), fast(x)
        torch.testing.assert_close(y_fast, y_tv, rtol=1e-10, atol=1e-10 * y_tv.abs().max().item())
    for p in list(tv.parameters()) + list(fast.parameters()):
        p.grad = None
    tv.train(), fast.train()
    tv(x).square().sum().backward()
    fast(x).square().sum().backward()
    for (k, a), b in zip(fast.named_parameters(), tv.parameters(), strict=True):
        torch.testing.assert_close(
            a.grad, b.grad, rtol=1e-8, atol=1e-8 * b.grad.abs().max().item(), msg=k
        )
