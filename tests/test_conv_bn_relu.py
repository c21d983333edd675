"""conv_bn_relu: training (conv + fused BN op) and eval (BN folded into the
convolution, epilogue fused), against the unfused fp64 reference."""

import pytest
import torch
from helpers import assert_close, channel_params, make_activation

import resnet_fast.functional as RF
from resnet_fast import reference

# (C_in, C_out, kernel, stride, padding, dilation, groups): every ResNet kind.
CONVS = {
    "1x1": (16, 24, 1, 1, 0, 1, 1),
    "1x1_s2": (16, 24, 1, 2, 0, 1, 1),
    "3x3": (8, 12, 3, 1, 1, 1, 1),
    "3x3_s2": (8, 12, 3, 2, 1, 1, 1),
    "7x7_s2_stem": (3, 8, 7, 2, 3, 1, 1),
    "3x3_dilated": (8, 8, 3, 1, 2, 2, 1),
    "3x3_grouped": (16, 16, 3, 1, 1, 1, 4),
}


def _case(name, layout, gen, residual):
    cin, cout, k, stride, pad, dil, groups = CONVS[name]
    x = make_activation((2, cin, 10, 10), layout, torch.float32, gen)
    weight = make_activation(
        (cout, cin // groups, k, k), "contiguous", torch.float32, gen, scale=0.3
    )
    bn_w, bn_b, rm, rv = channel_params(cout, gen)
    conv_bias = torch.randn(cout, generator=gen)
    hw = (10 + 2 * pad - dil * (k - 1) - 1) // stride + 1
    r = make_activation((2, cout, hw, hw), layout, torch.float32, gen) if residual else None
    kwargs = dict(stride=stride, padding=pad, dilation=dil, groups=groups, conv_bias=conv_bias)
    return x, weight, rm, rv, bn_w, bn_b, r, kwargs


def _reference(x, weight, rm, rv, bn_w, bn_b, r, kwargs, training, relu):
    to64 = lambda t: None if t is None else t.double()  # noqa: E731
    k64 = {**kwargs, "conv_bias": to64(kwargs["conv_bias"])}
    return reference.conv_bn_act(
        to64(x), to64(weight), rm.double().clone(), rv.double().clone(), to64(bn_w), to64(bn_b),
        training, residual=to64(r), relu=relu, **k64,
    )  # fmt: skip


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "identity"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", list(CONVS))
def test_matches_reference(name, layout, training, residual, relu, gen):
    x, weight, rm, rv, bn_w, bn_b, r, kwargs = _case(name, layout, gen, residual)
    expected = _reference(x, weight, rm, rv, bn_w, bn_b, r, kwargs, training, relu)
    out = RF.conv_bn_relu(x, weight, rm, rv, bn_w, bn_b, training, residual=r, relu=relu, **kwargs)
    assert_close(
        out, expected, torch.float32, "out", scale=max(expected.abs().max().item(), 1.0) * 4
    )


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_eval_gradients_flow_through_folding(residual, gen):
    """Fine-tuning with frozen statistics: grads reach the conv and BN weights."""
    x, weight, rm, rv, bn_w, bn_b, r, kwargs = _case("3x3", "channels_last", gen, residual)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bn_w, bn_b)]
    out = RF.conv_bn_relu(
        leaves[0], leaves[1], rm, rv, leaves[2], leaves[3], False, residual=r, **kwargs
    )
    out.sum().backward()
    leaves64 = [t.detach().double().requires_grad_() for t in (x, weight, bn_w, bn_b)]
    _reference(
        leaves64[0], leaves64[1], rm, rv, leaves64[2], leaves64[3], r, kwargs, False, True
    ).sum().backward()
    for mine, expected in zip(leaves, leaves64, strict=True):
        assert_close(
            mine.grad,
            expected.grad,
            torch.float32,
            "grad",
            scale=expected.grad.abs().max().item() * 4,
        )


def test_fold_bn_matches_definition(gen):
    weight = torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64)
    conv_bias = torch.randn(6, generator=gen, dtype=torch.float64)
    bn_w, bn_b, rm, rv = channel_params(6, gen, dtype=torch.float64)
    w, b = RF.fold_bn(weight, conv_bias, rm, rv, bn_w, bn_b, 1e-5)
    x = torch.randn(2, 3, 7, 7, generator=gen, dtype=torch.float64)
    folded = torch.nn.functional.conv2d(x, w, b)
    unfolded = reference.batch_norm_act(
        torch.nn.functional.conv2d(x, weight, conv_bias), rm, rv, bn_w, bn_b, relu=False
    )
    assert_close(folded, unfolded, torch.float64, "folded conv")
