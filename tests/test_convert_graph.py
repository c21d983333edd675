"""convert() on ResNets as users write them (tests/user_models.py): the
converted model computes what the original computes (float64, train and
eval, every gradient and running statistic), keeps its tensors and
state_dict keys, and makes the fusions the graph allows, counted at the
dispatcher."""

import copy
import io

import pytest
import torch
import user_models as U
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import resnet_fast
from resnet_fast.graph_fusion.graph_module import FusedGraph
from resnet_fast.models.plain import BasicBlock as PlainBasicBlock
from resnet_fast.models.plain import plain_model
from resnet_fast.nn import BasicBlock
from resnet_fast.profiling import saved_activations

_ATEN_BN = {"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
            "batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm", "miopen_batch_norm"}  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Counts aten batch-norm calls and torch.ops.resnet_fast calls."""

    def __init__(self):
        super().__init__()
        self.aten_bn = 0
        self.fused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name.startswith("resnet_fast::"):
            self.fused += 1
        elif name.startswith("aten::") and name[len("aten::") :] in _ATEN_BN:
            self.aten_bn += 1
        return func(*args, **(kwargs or {}))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN parameters and running statistics (an identity BN hides bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return model


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


def _counts(model, x):
    counter = OpCounter()
    with counter:
        model(x)
    return counter.aten_bn, counter.fused


# (name, builder, input shape, aten BNs left in a training forward, fused ops at least)
MODELS = [
    ("tutorial_resnet18", lambda: U.tutorial_resnet18(width=4), (2, 3, 32, 32), 0, 17 + 3),
    ("tutorial_resnet50", lambda: U.tutorial_resnet50(width=2), (2, 3, 32, 32), 0, 49 + 4),
    ("embedding_resnet", lambda: U.EmbeddingResNet(width=4), (2, 1, 16, 16), 0, 5),
    ("preact_resnet", lambda: U.PreActResNet(width=4), (2, 3, 16, 16), 0, 5),
    ("preact_probe", lambda: U.PreActResNet(width=4, probe=True), (2, 3, 16, 16), 0, 7),
    ("resnext", lambda: U.ResNeXtNet(width=4), (2, 3, 16, 16), 0, 9),
    ("option_a", lambda: U.ChainedBlocks(width=4), (2, 4, 16, 16), 0, 3),
    ("traps", lambda: U.Traps(), (2, 8, 8, 8), 4, 1),
    ("timm_style", lambda: U.TimmStyleNet(width=4), (2, 3, 32, 32), 0, 6),
]


def _convert(builder, dtype=torch.float64):
    torch.manual_seed(0)
    ref = randomize(builder().to(dtype))
    model = copy.deepcopy(ref)
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    report = []
    fast = resnet_fast.convert(model, report=report)
    return ref, fast, params, buffers, report


@pytest.mark.parametrize(
    "name, builder, shape, bn_left, fused_min", MODELS, ids=[m[0] for m in MODELS]
)
def test_converted_matches_the_original(name, builder, shape, bn_left, fused_min):
    ref, fast, params, buffers, report = _convert(builder)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert all(p is params[n] for n, p in fast.named_parameters())
    assert all(b is buffers[n] for n, b in fast.named_buffers())
    assert len(list(fast.parameters())) == len(params)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs_ref, outs_fast = _flat(ref(xr)), _flat(fast(xf))
    grads = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs_ref]
    torch.autograd.backward(outs_ref, grads)
    torch.autograd.backward(outs_fast, grads)
    for a, b in zip(outs_fast, outs_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-9, atol=1e-10)
    ref_params = dict(ref.named_parameters())
    for n, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[n].grad, rtol=1e-9, atol=1e-10, msg=n)
    for (n, a), b in zip(fast.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=n)

    ref.eval(), fast.eval()
    with torch.no_grad():
        for a, b in zip(_flat(fast(x)), _flat(ref(x)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    fast.train()

    aten_bn, fused = _counts(fast, x)
    ref_bn, ref_fused = _counts(ref, x)
    assert ref_fused == 0 and ref_bn > bn_left
    assert aten_bn == bn_left, report
    assert fused >= fused_min, report


def test_preact_probe_keeps_its_math_and_is_no_fast_block():
    _, fast, _, _, report = _convert(lambda: U.PreActResNet(width=4, probe=True))
    probe = fast.layers[2]
    assert not isinstance(probe, BasicBlock)
    reasons = {n: (a, w) for n, a, w in report}
    assert reasons["layers.2"][0] == "graph route", report
    assert reasons["layers.2.bn1"] == ("converted", "layers.2.bn1 + relu")
    assert reasons["layers.2.bn2"] == ("converted", "layers.2.conv1 + layers.2.bn2 + relu")


def test_report_names_what_it_leaves_and_why():
    _, _, _, _, report = _convert(U.Traps)
    left = {n: w for n, a, w in report if a == "left alone"}
    assert "2 users" in left["reused.bn"]
    assert "after a ReLU" in left["after.bn"]
    assert "not followed by a ReLU" in left["nosum.bn"]
    assert "ScaledBN" in left["sub.bn"]
    fused = [(n, w) for n, a, w in report if a == "converted"]
    assert fused == [("ok_bn", "ok_conv + ok_bn + relu")]


def test_untraceable_top_level_still_fuses_its_children(caplog):
    with caplog.at_level("INFO", logger="resnet_fast"):
        ref, fast, _, _, report = _convert(U.EmbeddingResNet)
    assert not isinstance(fast, FusedGraph)  # its own forward does not trace
    assert isinstance(fast.stem, FusedGraph) and isinstance(fast.body, FusedGraph)
    assert len(fast.stem) == 3 and fast.stem[1] is fast.stem._original[1]
    assert any(n == "<model>" and "not traceable" in w for n, a, w in report)
    lines = [r.getMessage() for r in caplog.records if r.name == "resnet_fast"]
    assert len(lines) == 1 and "fusions made" in lines[0] and "\n" not in lines[0]
    reverted = resnet_fast.revert(fast)
    assert reverted is fast and not any(isinstance(m, FusedGraph) for m in fast.modules())
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    for a, b in zip(reverted(x), ref(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fp32_channels_last_close():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4), torch.float32)
    ref, fast = (
        ref.to(memory_format=torch.channels_last),
        fast.to(memory_format=torch.channels_last),
    )
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)
    ref.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)


def test_sgd_steps_track_the_original():
    torch.manual_seed(0)
    ref = U.tutorial_resnet18(width=4)
    model = copy.deepcopy(ref)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # built before convert
    model = resnet_fast.convert(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    losses = {"ref": [], "fast": []}
    for _ in range(4):
        x, y = torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 10, (4,), generator=gen)
        for key, net, o in (("ref", ref, ref_opt), ("fast", model, opt)):
            o.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            o.step()
            losses[key].append(loss.item())
    torch.testing.assert_close(losses["fast"], losses["ref"], rtol=2e-3, atol=1e-4)
    assert losses["ref"][-1] != losses["ref"][0]


def test_deepcopy_save_load_and_revert():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref.eval(), fast.eval()
    expected = ref(x)
    clone = copy.deepcopy(fast)
    buf = io.BytesIO()
    torch.save(fast, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (clone, loaded):
        assert isinstance(m, FusedGraph) and m.fusions == fast.fusions
        assert m.layer1[0].conv1.weight is not fast.layer1[0].conv1.weight
        torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)
    state = fast.state_dict()
    plain = U.tutorial_resnet18(width=4).double().eval()
    plain.load_state_dict(state)
    fast.load_state_dict(plain.state_dict())
    reverted = resnet_fast.revert(fast)
    assert not any(isinstance(m, FusedGraph) for m in reverted.modules())
    torch.testing.assert_close(reverted(x), expected, rtol=1e-10, atol=1e-10)


def test_autocast_bf16_close():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4), torch.float32)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = fast(x), ref(x)
    assert a.dtype == b.dtype
    torch.testing.assert_close(a.float(), b.float(), rtol=0.1, atol=0.1)


def test_compile_fullgraph():
    torch._dynamo.reset()
    ref, fast, *_ = _convert(lambda: U.OptionABlock(4, 8, 2), torch.float32)
    compiled = torch.compile(fast, fullgraph=True, backend="eager")
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(compiled(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [dict(track_running_stats=False), dict(affine=False), dict(momentum=None)],
    ids=["no_running_stats", "no_affine", "cumulative_momentum"],
)
def test_odd_batchnorm_settings(settings):
    def build():
        block = U.TutorialBasicBlock(4, 8, 2)
        for name in ("bn1", "bn2"):
            setattr(block, name, nn.BatchNorm2d(8, **settings))
        block.shortcut[1] = nn.BatchNorm2d(8, **settings)
        return block

    def build_torchvision_style():
        norm = lambda c: nn.BatchNorm2d(c, **settings)  # noqa: E731
        down = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), norm(8))
        return PlainBasicBlock(4, 8, 2, down, norm_layer=norm)

    for builder, kind in ((build, FusedGraph), (build_torchvision_style, BasicBlock)):
        ref, fast, *_ = _convert(builder)
        assert isinstance(fast, kind)
        x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
        for mode in (True, False, True):
            ref.train(mode), fast.train(mode)
            a, b = fast(x), ref(x)
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
            ga, gb = torch.autograd.grad(a.sum(), x), torch.autograd.grad(b.sum(), x)
            torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-10)
        for (n, a), b in zip(fast.state_dict().items(), ref.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=n)


def test_converted_twice_and_half_converted():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4))
    report = []
    again = resnet_fast.convert(fast, report=report)
    assert again is fast and not [e for e in report if e[1] == "converted"]
    torch.manual_seed(0)
    half = randomize(U.tutorial_resnet18(width=4).double())
    half.layer2 = resnet_fast.convert(half.layer2)
    half = resnet_fast.convert(half)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(half(x), ref(x), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:resnet_fast has no native kernels for meta")
def test_meta_model_converts_and_runs():
    """A model built on meta (shape inference, deferred init) converts and
    runs there, through the ops' meta kernels."""
    with torch.device("meta"):
        model = U.tutorial_resnet18(width=4)
    fast = resnet_fast.convert(model)
    assert isinstance(fast, FusedGraph)
    assert all(p.is_meta for p in fast.parameters())
    out = fast(torch.empty(2, 3, 32, 32, device="meta"))
    assert out.shape == (2, 10) and out.is_meta


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "resnet50d", "seresnet50", "resnext50_32x4d"]
)
def test_timm_resnets_keep_their_math(name):
    timm = pytest.importorskip("timm")
    ref, fast, *_ = _convert(lambda: timm.create_model(name, pretrained=False, num_classes=5))
    # 16 values per channel in layer4's BatchNorms (4 images of 2 x 2). At
    # 2 x 32 x 32 they normalize 2 values each: float64 rounding (1e-15) of
    # the same sum taken in another order comes out as 1e-7 to 1e-6.
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-9, atol=1e-9)
    ref.eval(), fast.eval()
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-9, atol=1e-9)
    aten_bn, fused = _counts(fast.train(), x)
    assert fused > 0


def _saved_bytes(model, x):
    model.train()
    _, saved = saved_activations(model, x, exclude=model.parameters())
    return saved.bytes


def test_converted_models_are_as_lean_as_the_zoo():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    eager = _saved_bytes(plain_model("resnet18"), x)
    converted = _saved_bytes(resnet_fast.convert(plain_model("resnet18")), x)
    zoo = _saved_bytes(resnet_fast.models.resnet18(), x)
    assert converted == zoo < 0.7 * eager
    x = torch.randn(1, 3, 32, 32)
    eager = _saved_bytes(U.tutorial_resnet18(width=8), x)
    converted = _saved_bytes(resnet_fast.convert(U.tutorial_resnet18(width=8)), x)
    assert converted < 0.82 * eager
    standard = _saved_bytes(resnet_fast.convert(U.tutorial_resnet18(width=8), memory="standard"), x)
    assert converted < standard
    switched = resnet_fast.nn.set_memory(
        resnet_fast.convert(U.tutorial_resnet18(width=8)), "standard"
    )
    assert _saved_bytes(switched, x) == standard


def test_eval_folding_is_never_stale():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ref, fast)]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for _ in range(2):
        for model, opt in zip((ref, fast), opts, strict=True):
            model.eval()
            with torch.no_grad():
                model(x)
            model.eval()  # a second eval() keeps the folded weights
            with torch.no_grad():
                out = model(x)
            model.train()
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                model.get_submodule("layer1.0.bn1").running_mean.add_(0.5)  # seen next call
                outs = out, model(x)
            if model is ref:
                expected = outs
            else:
                for a, b in zip(outs, expected, strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_inference_mode_serving():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4))
    ref.eval(), fast.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for _ in range(3):
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:resnet_fast.convert. a module of a fused chain")
def test_modules_changed_after_convert_run_their_own_forward():
    ref, fast, *_ = _convert(lambda: U.tutorial_resnet18(width=4))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    calls = []

    def hook(module, args, out):
        calls.append(module)
        return out * 2

    for model in (ref, fast):
        model.get_submodule("layer1.0.bn2").register_forward_hook(hook)
        model.get_submodule("bn1").register_forward_hook(hook)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)
    assert len(calls) == 4
    fast = resnet_fast.convert_sync_batchnorm(fast)  # re-classes the BNs in place
    ref = resnet_fast.convert_sync_batchnorm(ref)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_jit_script_refuses_with_a_clear_message():
    _, fast, *_ = _convert(lambda: U.OptionABlock(4, 8, 2))
    with pytest.raises(RuntimeError, match="torch.compile or torch.export"):
        torch.jit.script(fast)


def test_string_padding_is_left_alone_and_keeps_its_math():
    """padding="same" has no explicit pads for the fused convolution: the
    conv stays the user's own, its BN + ReLU may still fuse."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding="same", bias=False), nn.BatchNorm2d(8), nn.ReLU()
    )
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        model = randomize(copy.deepcopy(model).to(dtype))
        ref = copy.deepcopy(model)
        fast = resnet_fast.convert(model)
        x = torch.randn(2, 3, 8, 8, dtype=dtype)
        for mode in (True, False):
            fast.train(mode), ref.train(mode)
            torch.testing.assert_close(fast(x), ref(x), rtol=tol, atol=tol)
        with torch.no_grad():  # eval under no_grad takes the folded path
            torch.testing.assert_close(fast(x), ref(x), rtol=tol, atol=tol)


def test_backward_hooks_survive_conversion():
    seen = []
    model = U.tutorial_resnet18(width=4)
    model.register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
    fast = resnet_fast.convert(model)
    fast(torch.randn(2, 3, 32, 32)).sum().backward()
    assert seen == [torch.Size([2, 10])]
