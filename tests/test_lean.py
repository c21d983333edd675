"""Memory-lean blocks (resnet_fast.lean): the same numerics as the
reference blocks, and fewer saved activation bytes, counted exactly."""

import copy

import pytest
import torch
from emulation_support import LARGE, emulated
from torch import nn
from triton_support import TRITON_DEVICE, TRITON_SKIP_REASON

import resnet_fast
from resnet_fast.conv import gemm
from resnet_fast.models import plain
from resnet_fast.models.cifar import PadShortcut
from resnet_fast.models.plain import plain_model
from resnet_fast.nn import BasicBlock, Bottleneck, set_memory
from resnet_fast.nn.blocks import conv1x1
from resnet_fast.profiling import saved_activations

# (block, inplanes, planes, stride, shortcut, groups, base_width, dilation)
BLOCKS = {
    "basic-identity": (BasicBlock, 8, 8, 1, None, 1, 64, 1),
    "basic-projection-s2": (BasicBlock, 8, 12, 2, "projection", 1, 64, 1),
    "basic-pad-s2": (BasicBlock, 8, 16, 2, "pad", 1, 64, 1),
    "bottleneck-identity": (Bottleneck, 24, 6, 1, None, 1, 64, 1),
    "bottleneck-projection-s2": (Bottleneck, 8, 6, 2, "projection", 1, 64, 1),
    "resnext-groups": (Bottleneck, 16, 8, 1, "projection", 2, 16, 1),
    "bottleneck-dilated": (Bottleneck, 24, 6, 1, None, 1, 64, 2),
}


def _blocks(spec, memory="lean", dtype=torch.float64):
    """(resnet_fast block, plain reference block) with the same weights."""
    kind, inplanes, planes, stride, shortcut, groups, width, dilation = spec
    out = planes * kind.expansion
    downsample = None
    if shortcut == "projection":
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    elif shortcut == "pad":
        downsample = PadShortcut(inplanes, out, stride)
    fast = kind(inplanes, planes, stride, downsample, groups, width, dilation, memory=memory).to(
        dtype
    )
    plain_kind = plain.Bottleneck if kind is Bottleneck else plain.BasicBlock
    ref = plain_kind(inplanes, planes, stride, copy.deepcopy(downsample), groups, width, dilation)
    ref = ref.to(dtype)
    with torch.no_grad():  # non-trivial affine parameters
        for p in fast.parameters():
            p.uniform_(0.5, 1.5) if p.dim() == 1 else None
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def _assert_steps_match(fast, ref, channels, gen, fmt=torch.contiguous_format):
    """Two training steps of fast and ref (float64 blocks) on the same inputs
    [3, channels, 9, 9] in memory format fmt: after each, the outputs, the
    input and parameter gradients and the state (running statistics,
    num_batches_tracked) must match. Returns the last input."""
    for step in range(2):  # two steps: running stats and num_batches_tracked evolve
        x = torch.randn(3, channels, 9, 9, dtype=torch.float64, generator=gen) + step
        x = x.contiguous(memory_format=fmt)
        x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_fast, out_ref = fast(x_fast), ref(x_ref)
        grad = torch.randn(out_ref.shape, dtype=torch.float64, generator=gen)
        out_fast.backward(grad)
        out_ref.backward(grad)
        torch.testing.assert_close(out_fast, out_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
        for key, g in _grads(ref).items():
            torch.testing.assert_close(_grads(fast)[key], g, rtol=1e-10, atol=1e-10, msg=key)
        for key, value in ref.state_dict().items():
            torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    return x


# How the lean node's convolutions run on the CPU: oneDNN on NCHW, oneDNN on
# channels_last, and every eligible convolution as a matrix product (resnet_fast/conv/gemm.py).
CONV_PATHS = {
    "nchw": (torch.contiguous_format, "auto"),
    "channels_last-onednn": (torch.channels_last, "never"),
    "channels_last-gemm": (torch.channels_last, "always"),
}


@pytest.mark.parametrize("path", list(CONV_PATHS))
@pytest.mark.parametrize("name", list(BLOCKS))
def test_lean_block_matches_the_reference_in_float64(name, path, monkeypatch):
    fmt, gemm_mode = CONV_PATHS[path]
    monkeypatch.setattr(gemm, "MODE", gemm_mode)
    fast, ref = _blocks(BLOCKS[name])
    _assert_steps_match(fast, ref, BLOCKS[name][1], torch.Generator().manual_seed(1), fmt)


@pytest.mark.parametrize("name", ["basic-projection-s2", "bottleneck-identity", "basic-pad-s2"])
def test_lean_block_gradcheck(name):
    """gradcheck through the lean node: the input and every BN's affine
    parameters (the convolution weights' gradients are compared with the
    reference above; perturbing each of them would take minutes)."""
    fast, _ = _blocks(BLOCKS[name])
    for m in fast.modules():  # gradcheck runs forward many times: no running stats
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    for p in fast.parameters():
        p.requires_grad_(p.dim() == 1)
    affine = [p for p in fast.parameters() if p.dim() == 1]
    x = torch.randn(2, BLOCKS[name][1], 5, 5, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(fast, (x,), eps=1e-6, atol=1e-6)
    # the affine parameters are the module's own leaves: central differences
    out = fast(x)
    grads = torch.autograd.grad(out.sum(), affine)
    for p, g in zip(affine, grads, strict=True):
        numerical = torch.zeros_like(p)
        with torch.no_grad():
            for i in range(p.numel()):
                p.view(-1)[i] += 1e-6
                up = fast(x).sum()
                p.view(-1)[i] -= 2e-6
                down = fast(x).sum()
                p.view(-1)[i] += 1e-6
                numerical.view(-1)[i] = (up - down) / 2e-6
        torch.testing.assert_close(g, numerical, rtol=1e-5, atol=1e-6)


def _storages(module, x):
    out, saved = saved_activations(module, x, exclude=module.parameters())
    return out, saved


def test_lean_block_saves_the_convolution_outputs_only():
    """BasicBlock without downsample: eager keeps x, conv1 out, bn1-relu out,
    conv2 out and the block output; lean keeps x and the two conv outputs."""
    fast, ref = _blocks(BLOCKS["basic-identity"], dtype=torch.float32)
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    act = x.numel() * 4  # bytes of one activation of this block
    _, eager = _storages(ref, x)
    _, lean = _storages(fast, x)
    stats = 2 * 8 * (8 + 4)  # two BNs: float64 mean + float32 invstd, 8 channels each
    # x, c1, r1, c2, out (+ BN statistics, a few hundred bytes)
    assert 5 * act <= eager.bytes < 5 * act + 1024
    assert lean.bytes == 3 * act + stats  # x, c1, c2 + statistics
    # no tensor saved twice: every pack is a distinct storage or a parameter
    assert lean.packed == lean.storages + len(list(fast.parameters()))


def test_standard_and_lean_agree_under_autocast_and_channels_last():
    spec = BLOCKS["bottleneck-projection-s2"]
    lean, _ = _blocks(spec, dtype=torch.float32)
    standard = copy.deepcopy(lean)
    set_memory(standard, "standard")
    x = torch.randn(4, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for block in (lean, standard):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(xi)
        assert out.dtype == torch.bfloat16
        assert out.is_contiguous(memory_format=torch.channels_last)
        out.float().square().sum().backward()
        outs.append(out.float())
        grads.append([xi.grad] + [p.grad for p in block.parameters()])
    # the same ops in the same dtypes (oneDNN's bf16 convolutions may pick
    # other kernels from call to call, so not bit-identical)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-2, atol=1e-2)
    for a, b in zip(grads[0], grads[1], strict=True):
        assert a.dtype == b.dtype
        # bf16 sums in another order: within a few bf16 ulps of the largest
        # element (an elementwise rtol fails on small entries of a sum)
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=0, atol=3e-2 * scale)


@pytest.mark.parametrize("path", ["nchw", "channels_last-gemm"])
def test_lean_block_compiles_fullgraph(path, monkeypatch):
    fmt, gemm_mode = CONV_PATHS[path]
    monkeypatch.setattr(gemm, "MODE", gemm_mode)
    fast, ref = _blocks(BLOCKS["basic-projection-s2"], dtype=torch.float32)
    compiled = torch.compile(fast, fullgraph=True)
    x = torch.randn(2, 8, 8, 8).contiguous(memory_format=fmt)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled(x_fast).sum().backward()
    ref(x_ref).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.bn1.running_var, ref.bn1.running_var)


@pytest.mark.parametrize(("name", "bound"), [("resnet18", 0.75), ("resnet50", 0.82)])
def test_lean_models_save_at_most_a_bound_of_eager(name, bound):
    """Saved activation bytes per image at 224x224, lean vs eager (the
    reference model: torchvision's architecture in plain PyTorch)."""
    x = torch.randn(1, 3, 224, 224)
    eager = plain_model(name).train()
    lean = getattr(resnet_fast.models, name)(memory="lean").train()
    standard = getattr(resnet_fast.models, name)(memory="standard").train()
    _, saved_eager = _storages(eager, x)
    _, saved_lean = _storages(lean, x)
    _, saved_standard = _storages(standard, x)
    assert saved_lean.bytes <= bound * saved_eager.bytes
    assert saved_lean.bytes < saved_standard.bytes


def test_memory_argument_is_validated():
    with pytest.raises(ValueError, match="memory must be one of"):
        BasicBlock(8, 8, memory="tiny")
    with pytest.raises(ValueError, match="memory must be one of"):
        resnet_fast.models.resnet18(memory="tiny")


@pytest.mark.triton
@pytest.mark.skipif(TRITON_SKIP_REASON is not None, reason=TRITON_SKIP_REASON or "")
def test_lean_block_on_the_triton_backend():
    """The lean node runs the Triton BN ops (the interpreter on the CPU)."""
    fast, ref = _blocks(BLOCKS["basic-projection-s2"], dtype=torch.float32)
    fast, ref = fast.to(TRITON_DEVICE), ref.to(TRITON_DEVICE)
    x = torch.randn(2, 8, 6, 6, device=TRITON_DEVICE)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    with resnet_fast.use_backend("triton"):
        out = fast(x_fast)
        assert "LeanBlock" in type(out.grad_fn).__name__
        out.sum().backward()
    ref(x_ref).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for key, g in _grads(ref).items():
        torch.testing.assert_close(_grads(fast)[key], g, rtol=1e-4, atol=1e-4, msg=key)
    torch.testing.assert_close(fast.bn1.running_var, ref.bn1.running_var)


def test_lean_is_skipped_where_it_cannot_apply():
    """No gradient needed, or eval mode: the standard path."""
    fast, _ = _blocks(BLOCKS["basic-identity"], dtype=torch.float32)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    assert "LeanBlock" in type(fast(x).grad_fn).__name__
    with torch.no_grad():
        assert fast(x).grad_fn is None
    fast.eval()
    assert "LeanBlock" not in type(fast(x).grad_fn).__name__


@pytest.mark.parametrize(
    "name", ["reference", pytest.param("cuda_emulated", marks=pytest.mark.cuda_emulated)]
)
def test_lean_block_on_other_backends(name, gen):
    """Every backend is an op namespace: the lean node runs on the reference
    backend's pure-PyTorch ops, and on the CUDA kernels through the test-only
    emulation (where built), and matches the plain block."""
    fast, ref = _blocks(BLOCKS["basic-projection-s2"])
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64, generator=gen)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    forced = emulated(LARGE) if name == "cuda_emulated" else resnet_fast.use_backend(name)
    with forced:
        out = fast(x_fast)
        assert "LeanBlock" in type(out.grad_fn).__name__
        out.sum().backward()
    ref(x_ref).sum().backward()
    torch.testing.assert_close(out, ref(x_ref.detach()), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    for key, g in _grads(ref).items():
        torch.testing.assert_close(_grads(fast)[key], g, rtol=1e-10, atol=1e-10, msg=key)
