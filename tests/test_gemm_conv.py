"""Convolutions as matrix products (resnet_fast/conv/gemm.py, training.py): the GEMM
path against oneDNN's convolution and its backward in float64, for every
kind of ResNet convolution, and how the measured choice between the two is
wired."""

import os
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_conv_gradcheck

from resnet_fast.conv import gemm, measured, taps, training, winograd
from resnet_fast.conv.spec import ConvSpec, output_hw

CL = torch.channels_last
_aten = torch.ops.aten

# (kernel, stride, padding, dilation): every convolution of a ResNet / ResNeXt
# trunk (groups aside), plus an unpadded strided 3x3.
CONVS = {
    "1x1": (1, 1, 0, 1),
    "1x1-s2": (1, 2, 0, 1),
    "3x3": (3, 1, 1, 1),
    "3x3-s2": (3, 2, 1, 1),
    "3x3-dilated": (3, 1, 2, 2),
    "7x7-s2-stem": (7, 2, 3, 1),
    "3x3-s2-unpadded": (3, 2, 0, 1),
}
# (N, C_in, H, W, C_out): channels that are not powers of two, non-square maps,
# a 1x1 map.
SHAPES = [(2, 20, 7, 5, 12), (3, 9, 4, 6, 17), (2, 16, 1, 1, 8)]


def _case(kind, shape, gen):
    k, s, p, d = CONVS[kind]
    n, c_in, h, w, c_out = shape
    x = torch.randn(n, c_in, h, w, dtype=torch.float64, generator=gen).contiguous(memory_format=CL)
    weight = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=gen)
    bias = torch.randn(c_out, dtype=torch.float64, generator=gen)
    return (
        x,
        weight.contiguous(memory_format=CL),
        bias,
        ConvSpec((s, s), (p, p), (d, d), 1),
    )


def _valid(x, weight, spec):
    return min(output_hw(x, weight, spec)) > 0


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", list(CONVS))
def test_gemm_path_matches_onednn_in_float64(kind, shape, monkeypatch):
    monkeypatch.setattr(gemm, "MODE", "always")
    gen = torch.Generator().manual_seed(hash((kind, shape)) % 2**31)
    x, weight, bias, spec = _case(kind, shape, gen)
    if not _valid(x, weight, spec):
        pytest.skip("no output pixels at this size")
    assert training.conv_path(x, weight, spec) == "gemm"
    want = F.conv2d(x, weight, bias, spec.stride, spec.padding, spec.dilation)
    got = training.conv2d(x, weight, bias, spec)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.is_contiguous(memory_format=CL)

    grad = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    want_grads = _aten.convolution_backward(
        grad, x, weight, [bias.shape[0]], spec.stride, spec.padding, spec.dilation, False,
        [0, 0], 1, [True, True, True],
    )  # fmt: skip
    got_grads = training.conv2d_backward(grad, x, weight, bias, spec, (True, True, True))
    for name, g, w in zip(("input", "weight", "bias"), got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-11, msg=f"grad {name}")
    # The weight gradient comes in the weight's own (channels_last) layout, so
    # autograd keeps it without a copy (strides of size-1 dimensions aside).
    for size, got_stride, want_stride in zip(
        weight.shape, got_grads[1].stride(), weight.stride(), strict=True
    ):
        assert size == 1 or got_stride == want_stride
    assert got_grads[0].is_contiguous(memory_format=CL)


def test_backward_computes_only_what_the_mask_asks_for(monkeypatch):
    monkeypatch.setattr(gemm, "MODE", "always")
    x, weight, bias, spec = _case("3x3-s2", SHAPES[0], torch.Generator().manual_seed(3))
    grad = torch.randn_like(training.conv2d(x, weight, None, spec))
    full = training.conv2d_backward(grad, x, weight, bias, spec, (True, True, True))
    for mask in [(True, False, False), (False, True, False), (False, False, True)]:
        got = training.conv2d_backward(grad, x, weight, bias, spec, mask)
        for wanted, g, f in zip(mask, got, full, strict=True):
            if wanted:
                torch.testing.assert_close(g, f, rtol=0, atol=0)
            else:
                assert g is None


def test_gradcheck_through_the_gemm_path(monkeypatch):
    monkeypatch.setattr(gemm, "MODE", "always")
    x, weight, bias, spec = _case("3x3-s2", (2, 5, 5, 4, 3), torch.Generator().manual_seed(4))
    assert_conv_gradcheck(
        lambda x, weight, bias: training.conv2d(x, weight, bias, spec),
        lambda grad, x, weight, bias: training.conv2d_backward(
            grad, x, weight, bias, spec, (True, True, True)
        ),
        x, weight, bias,
    )  # fmt: skip


def _conv_args(n, c_in, hw, c_out, k, stride=1, dtype=torch.float32, fmt=CL):
    x = torch.randn(n, c_in, hw, hw, dtype=dtype).contiguous(memory_format=fmt)
    weight = torch.randn(c_out, c_in, k, k, dtype=dtype)
    pad = k // 2
    return x, weight, ConvSpec((stride, stride), (pad, pad), (1, 1), 1)


@pytest.mark.parametrize(
    "gemm_ms, winograd_ms, taps_ms, expected",
    [
        (1.0, 3.0, 3.0, "gemm"),
        (2.0, 3.0, 3.0, "onednn"),
        (1.99, 3.0, 3.0, "onednn"),
        (1.5, 1.0, 3.0, "winograd"),
        (1.5, 1.0, 0.5, "taps"),
    ],
)
def test_auto_takes_the_measured_faster_path(
    gemm_ms, winograd_ms, taps_ms, expected, measuring, monkeypatch
):
    """With measurement on, conv_path takes what the timing of every path
    says (oneDNN unless another is faster by more than the margin); the
    timings are injected, so the test does not depend on this machine."""
    monkeypatch.setattr(gemm, "MODE", "auto")
    timed = []

    def fake_medians(candidates):
        timed.append(sorted(candidates))
        return {"onednn": 2.0, "gemm": gemm_ms, "winograd": winograd_ms, "taps": taps_ms}

    monkeypatch.setattr(measured, "_interleaved_medians", fake_medians)
    args = _conv_args(16, 512, 2, 512, 3)
    assert training.conv_path(*args) == expected
    assert training.conv_path(*args) == expected  # remembered: timed once
    assert timed == [["gemm", "onednn", "taps", "winograd"]]


def test_the_two_candidates_compute_the_same_convolution(monkeypatch):
    """What the measurement times is the convolution each way: forward and
    both gradients agree in float64."""
    x, weight, spec = _conv_args(3, 12, 5, 8, 3, stride=2, dtype=torch.float64)
    grad = torch.randn(3, 8, 3, 3, dtype=torch.float64).contiguous(memory_format=CL)
    mask = [True, True, False]
    want = _aten.convolution_backward(
        grad, x, weight, None, spec.stride, spec.padding, spec.dilation, False, [0, 0], 1, mask
    )
    got = gemm.backward(grad, x, weight, spec, mask)
    for g, w in zip(got[:2], want[:2], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        gemm.forward(x, weight, None, spec),
        F.conv2d(x, weight, None, spec.stride, spec.padding),
        rtol=1e-12,
        atol=1e-12,
    )
    assert sorted(training._candidates(x, weight, spec, True, False, False)) == ["gemm", "onednn"]


def test_auto_without_measurement_and_large_patches_take_onednn(measuring, monkeypatch):
    monkeypatch.setattr(gemm, "MODE", "auto")
    monkeypatch.setattr(measured, "ENABLED", False)
    assert training.conv_path(*_conv_args(16, 512, 2, 512, 3)) == "onednn"
    # Measurement on, but the patch matrix would exceed MAX_PATCH_BYTES (and
    # Winograd and the tap-by-tap path are off): no timing at all.
    monkeypatch.setattr(measured, "ENABLED", True)
    monkeypatch.setattr(winograd, "ENABLED", False)
    monkeypatch.setattr(taps, "ENABLED", False)
    monkeypatch.setattr(gemm, "MAX_PATCH_BYTES", 1000)

    def no_timing(candidates):
        raise AssertionError("measured a convolution over the patch limit")

    monkeypatch.setattr(measured, "_interleaved_medians", no_timing)
    assert training.conv_path(*_conv_args(16, 512, 2, 512, 3)) == "onednn"


@pytest.mark.parametrize(
    "why",
    ["nchw", "bfloat16", "autocast", "groups", "mode never", "empty batch"],
)
def test_the_gemm_path_is_not_taken_where_it_does_not_apply(why, monkeypatch):
    monkeypatch.setattr(gemm, "MODE", "always")
    x, weight, spec = _conv_args(16, 2048, 2, 512, 1)
    if why == "nchw":
        x = x.contiguous()
    elif why == "bfloat16":
        x, weight = x.bfloat16(), weight.bfloat16()
    elif why == "groups":
        spec, weight = spec._replace(groups=2), weight[:, :1024]
    elif why == "mode never":
        monkeypatch.setattr(gemm, "MODE", "never")
    elif why == "empty batch":
        x = x[:0]
    context = torch.autocast("cpu", dtype=torch.bfloat16) if why == "autocast" else nullcontext()
    with context:
        assert training.conv_path(x, weight, spec) == "onednn"
        # conv2d still computes the convolution, through F.conv2d.
        got = training.conv2d(x, weight, None, spec)
        want = F.conv2d(x, weight, None, spec.stride, spec.padding, spec.dilation, spec.groups)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_bad_mode_in_the_environment_is_refused():
    proc = subprocess.run(
        [sys.executable, "-c", "import resnet_fast.conv.gemm"],
        env={**os.environ, "RESNET_FAST_CPU_GEMM_CONV": "sometimes"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "RESNET_FAST_CPU_GEMM_CONV must be one of auto, always, never" in proc.stderr
