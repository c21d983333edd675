"""Bad input: a clear error that names the argument, the value and what was
expected, raised before any running statistic is touched. Checked through the
public API (every backend) and through torch.ops directly (the C++ checks)."""

import pytest
import torch

import resnet_fast.functional as RF
import resnet_fast.models as M
from resnet_fast._ops import backends
from resnet_fast.nn import BasicBlock, Bottleneck

ops = torch.ops.resnet_fast
NATIVE = ("cpu", "cuda", "cuda_emulated")  # the backends whose ops are the C++ host code


def _stats(c=8):
    return torch.randn(c), torch.rand(c) + 0.5


BAD_BN_CALLS = {
    # name: (kwargs overrides, exception, message fragment)
    "rank": (dict(input=torch.randn(2, 8, 4)), ValueError, r"input must be 4-D .* got 3-D"),
    "int_dtype": (dict(input=torch.ones(2, 8, 3, 3, dtype=torch.int32)), TypeError, r"input must be float32.*got torch.int32"),
    "weight_channels": (dict(weight=torch.randn(7)), ValueError, r"weight must be a 1-D tensor of 8 elements .* got shape \(7,\)"),
    "bias_2d": (dict(bias=torch.randn(8, 1)), ValueError, r"bias must be a 1-D tensor of 8 elements"),
    "running_mean_channels": (dict(running_mean=torch.randn(9)), ValueError, r"running_mean must be a 1-D tensor of 8"),
    "running_var_dtype": (dict(running_var=torch.ones(8, dtype=torch.int64)), TypeError, r"running_var must be float32.*got torch.int64"),
    "weight_device": (dict(weight=torch.randn(8, device="meta")), ValueError, r"weight must be on the device cpu .* got meta"),
    "residual_shape": (dict(residual=torch.randn(2, 8, 3, 4)), ValueError, r"residual must have the shape of input \(2, 8, 3, 3\), got \(2, 8, 3, 4\)"),
    "residual_dtype": (dict(residual=torch.randn(2, 8, 3, 3, dtype=torch.float64)), TypeError, r"residual must have the dtype of input \(torch.float32\), got torch.float64"),
    "residual_device": (dict(residual=torch.randn(2, 8, 3, 3, device="meta")), ValueError, r"residual must be on the device of input \(cpu\), got meta"),
    "one_value_per_channel": (dict(input=torch.randn(1, 8, 1, 1), residual=torch.randn(1, 8, 1, 1)), ValueError, r"Expected more than 1 value per channel when training, got input size torch.Size\(\[1, 8, 1, 1\]\)"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_BN_CALLS))
def test_bad_input_raises_before_touching_running_stats(backend, name):
    overrides, error, message = BAD_BN_CALLS[name]
    rm, rv = _stats()
    args = dict(
        input=torch.randn(2, 8, 3, 3),
        residual=torch.randn(2, 8, 3, 3),
        running_mean=rm,
        running_var=rv,
        weight=torch.randn(8),
        bias=torch.randn(8),
        training=True,
    )
    args.update(overrides)
    rm0, rv0 = args["running_mean"].clone(), args["running_var"].clone()
    with pytest.raises(error, match=message):
        RF.batch_norm_add_relu(**args)
    assert torch.equal(args["running_mean"], rm0) and torch.equal(args["running_var"], rv0)
    if "residual" not in name:
        del args["residual"]
        with pytest.raises(error, match=message):
            RF.batch_norm_relu(**args)
        assert torch.equal(args["running_mean"], rm0) and torch.equal(args["running_var"], rv0)


def test_eval_needs_running_stats(backend):
    with pytest.raises(ValueError, match="running_mean must be defined in evaluation mode"):
        RF.batch_norm_relu(torch.randn(2, 8, 3, 3), None, None, training=False)


def test_running_stats_come_in_pairs(backend):
    with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
        RF.batch_norm_relu(torch.randn(2, 8, 3, 3), torch.zeros(8), None, training=True)


def test_add_relu_bad_input(backend):
    with pytest.raises(
        ValueError, match=r"other must have the shape of input \(2, 3\), got \(3, 2\)"
    ):
        RF.add_relu(torch.randn(2, 3), torch.randn(3, 2))
    with pytest.raises(TypeError, match=r"other must have the dtype of input"):
        RF.add_relu(torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"input must be float32.*torch.int64"):
        RF.add_relu(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.int64))


def test_conv_bn_relu_checks_channels_against_conv_weight():
    with pytest.raises(
        ValueError,
        match=r"running_mean must be a 1-D tensor of 16 elements \(the output channels of conv_weight",
    ):
        RF.conv_bn_relu(
            torch.randn(1, 4, 5, 5), torch.randn(16, 4, 3, 3), torch.zeros(8), torch.ones(8)
        )


# The C++ entry points check too, for callers of torch.ops.resnet_fast.
def test_op_level_checks_name_the_argument_and_leave_stats_alone():
    rm, rv = _stats()
    rm0, rv0 = rm.clone(), rv.clone()
    x = torch.randn(2, 8, 3, 3)
    cases = [
        ((torch.randn(2, 8, 3), None, None, rm, rv), "input must be 4-D"),
        ((x, torch.randn(5), None, rm, rv), "weight must be a 1-D tensor of 8 elements"),
        ((x, None, None, torch.zeros(3), rv), "running_mean must be a 1-D tensor of 8"),
        ((torch.randn(1, 8, 1, 1), None, None, rm, rv), "Expected more than 1 value per channel"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            ops.bn_act_fwd(*args, True, 0.1, 1e-5, True)
    with pytest.raises(RuntimeError, match="residual must have the shape of input"):
        ops.bn_add_act_fwd(x, torch.randn(2, 8, 3, 1), None, None, rm, rv, True, 0.1, 1e-5, True)
    with pytest.raises(RuntimeError, match="other must have the shape of input"):
        ops.add_relu_fwd(x, torch.randn(2, 8, 3, 1))
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)


def test_unknown_backend_is_rejected():
    import resnet_fast

    with pytest.raises(ValueError, match="backend must be one of"):
        with resnet_fast.use_backend("tpu"):
            pass


# Constructors, model functions and load_state_dict: a wrong value fails at
# once, naming the argument and the value.

BAD_BLOCKS = {
    # name: (block, args, kwargs, exception, message)
    "inplanes_zero": (BasicBlock, (0, 8), {}, ValueError, r"BasicBlock: inplanes must be at least 1, got 0"),
    "planes_float": (BasicBlock, (8, 2.5), {}, TypeError, r"BasicBlock: planes must be an int, got 2.5"),
    "planes_bool": (Bottleneck, (8, True), {}, TypeError, r"Bottleneck: planes must be an int, got True"),
    "stride_zero": (BasicBlock, (8, 8, 0), {}, ValueError, r"BasicBlock: stride must be at least 1, got 0"),
    "stride_triple": (Bottleneck, (8, 8, (1, 2, 2)), {}, ValueError, r"Bottleneck: stride must be an int or a pair, got \(1, 2, 2\)"),
    "dilation_negative": (Bottleneck, (8, 8), dict(dilation=-2), ValueError, r"Bottleneck: dilation must be at least 1, got -2"),
    "groups_zero": (Bottleneck, (8, 8), dict(groups=0), ValueError, r"Bottleneck: groups must be at least 1, got 0"),
    "width_zero": (Bottleneck, (8, 8), dict(base_width=1), ValueError, r"inner width .* must be at least 1, got 0 \(planes=8, base_width=1, groups=1\)"),
    "downsample_int": (BasicBlock, (8, 8), dict(downsample=3), TypeError, r"BasicBlock: downsample must be None or callable, got int 3"),
    "norm_layer_int": (BasicBlock, (8, 8), dict(norm_layer=3), TypeError, r"norm_layer must be None or callable, got int 3"),
    "norm_layer_not_module": (Bottleneck, (8, 8), dict(norm_layer=lambda c: c), TypeError, r"Bottleneck: norm_layer must build an nn.Module .* norm_layer\(8\) gave int"),
    "memory": (BasicBlock, (8, 8), dict(memory="fast"), ValueError, r"memory must be one of auto, lean, standard; got 'fast'"),
    # torchvision's own errors, kept.
    "basic_groups": (BasicBlock, (8, 8), dict(groups=2), ValueError, r"BasicBlock only supports groups=1 and base_width=64"),
    "basic_dilation": (BasicBlock, (8, 8), dict(dilation=2), NotImplementedError, r"Dilation > 1 not supported"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_BLOCKS))
def test_block_constructor_arguments(name):
    block, args, kwargs, error, message = BAD_BLOCKS[name]
    with pytest.raises(error, match=message):
        block(*args, **kwargs)


BAD_MODEL_KWARGS = {
    "num_classes_zero": ("resnet18", dict(num_classes=0), ValueError, r"ResNet: num_classes must be at least 1, got 0"),
    "num_classes_float": ("resnet20", dict(num_classes=10.0), TypeError, r"CifarResNet: num_classes must be an int, got 10.0"),
    "unknown": ("resnet18", dict(num_class=10), TypeError, r"resnet18\(\) got unexpected keyword argument\(s\) 'num_class'; accepted: num_classes"),
    "builder_fixed": ("resnet50", dict(fused_stem=False), TypeError, r"resnet50\(\) got unexpected keyword argument\(s\) 'fused_stem'"),
    "cifar_groups": ("resnet20", dict(groups=2), TypeError, r"resnet20\(\) got unexpected keyword argument\(s\) 'groups'; accepted: num_classes, norm_layer, memory"),
    "weights": ("resnet18", dict(weights="DEFAULT"), ValueError, r"resnet18: weights='DEFAULT': resnet_fast ships no pretrained weights"),
    "memory": ("resnet18", dict(memory="LEAN"), ValueError, r"memory must be one of auto, lean, standard; got 'LEAN'"),
    "zero_init_residual": ("resnet18", dict(zero_init_residual="yes"), TypeError, r"ResNet: zero_init_residual must be True or False, got 'yes'"),
    "width_per_group": ("resnet50", dict(width_per_group=0), ValueError, r"ResNet: width_per_group must be at least 1, got 0"),
    "resnext_groups": ("resnext50_32x4d", dict(groups=8), ValueError, r"resnext50_32x4d fixes groups=32, got 8"),
    "dilation_length": ("resnet50", dict(replace_stride_with_dilation=[True]), ValueError, r"replace_stride_with_dilation should be None or a 3-element tuple, got \[True\]"),
    "dilation_entry": ("resnet50", dict(replace_stride_with_dilation=[False, "yes", False]), ValueError, r"every entry of replace_stride_with_dilation must be one of False, True, got 'yes'"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_MODEL_KWARGS))
def test_model_keyword_arguments(name):
    model, kwargs, error, message = BAD_MODEL_KWARGS[name]
    with pytest.raises(error, match=message):
        getattr(M, model)(**kwargs)


def test_resnet_class_arguments():
    with pytest.raises(ValueError, match=r"ResNet: layers must have 4 entries, got \[2, 2, 2\]"):
        M.ResNet(BasicBlock, [2, 2, 2])
    # torchvision would build one block for a 0 here, silently.
    with pytest.raises(ValueError, match=r"every entry of layers must be at least 1, got 0"):
        M.ResNet(BasicBlock, [0, 2, 2, 2])
    with pytest.raises(TypeError, match=r"ResNet: block must be a block class"):
        M.ResNet(torch.nn.Conv2d, [2, 2, 2, 2])


def test_torchvision_defaults_are_accepted():
    model = M.resnet20(weights=None, progress=False, num_classes=3)
    assert model.fc.out_features == 3


def test_load_state_dict_that_does_not_fit_loads_nothing():
    torch.manual_seed(0)
    model = M.resnet20(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)  # fills the fold cache
    donor = M.resnet20(num_classes=10)
    state = donor.state_dict()
    cases = {
        "size mismatch for fc.weight: copying a param with shape \\[5, 64\\]": {
            **state,
            "fc.weight": torch.zeros(5, 64),
        },
        "unexpected key\\(s\\) in state_dict: extra.weight": {
            **state,
            "extra.weight": torch.ones(1),
        },
        "missing key\\(s\\) in state_dict: conv1.weight": {
            k: v for k, v in state.items() if k != "conv1.weight"
        },
    }
    for message, bad in cases.items():
        with pytest.raises(RuntimeError, match=f"nothing was loaded:\n\t{message}"):
            model.load_state_dict(bad)
        with torch.no_grad():
            assert torch.equal(model(x), before)
    for assign in (False, True):
        model.load_state_dict(state, assign=assign)
        with torch.no_grad():
            torch.testing.assert_close(model(x), donor.eval()(x))


# --- the op surface: every argument checked at the entry ------------------------
# Regressions of what tests/test_fuzz_ops.py found; each call below was a read
# out of bounds, a wrong result or a crash before the checks.


def test_backward_op_refuses_short_weight_and_bias():
    # bn_act_bwd read 64 weights and biases from 1-element tensors.
    x, g = torch.randn(2, 64, 3, 3), torch.randn(2, 64, 3, 3)
    mean, invstd = torch.zeros(64, dtype=torch.float64), torch.ones(64)
    with pytest.raises(
        RuntimeError, match=r"weight must be a 1-D tensor of 64 elements .*got shape \[1\]"
    ):
        ops.bn_act_bwd(g, x, torch.ones(1), torch.zeros(1), mean, invstd, True, True)
    with pytest.raises(RuntimeError, match=r"bias must be a 1-D tensor of 64 elements"):
        ops.bn_add_act_bwd(
            g, x, x.clone(), torch.ones(64), torch.zeros(3), mean, invstd, True, True
        )
    with pytest.raises(RuntimeError, match=r"weight must be float32.*got Long"):
        ops.bn_act_bwd(g, x, torch.ones(64, dtype=torch.int64), None, mean, invstd, True, True)
    with pytest.raises(RuntimeError, match=r"weight must be a 1-D tensor of 64"):
        ops.bn_act_bwd_reduce(g, x, torch.ones(1), None, mean, invstd, True)
    with pytest.raises(RuntimeError, match=r"bias must be a 1-D tensor of 64"):
        ops.bn_bwd_apply(g, x, None, torch.ones(2), mean, invstd, invstd, invstd, True)


def _aliasing_cases():
    c = 4
    x = torch.randn(2, c, 3, 3)
    w, rm = torch.randn(c), torch.zeros(c)
    buf = torch.zeros(c + 1)
    return {
        # name: (input, weight, running_mean, running_var, message)
        "same_tensor": (x, None, rm, rm, "running_mean and running_var must not share memory"),
        "overlapping_views": (x, None, buf[:c], buf[1:], "running_mean and running_var must not share memory"),
        "expanded": (x, None, rm, torch.ones(1).expand(c), "running_var is written in training and must not have overlapping"),
        "is_weight": (x, w, w, torch.ones(c), "running_mean must not share memory with weight"),
        "views_input": (x, None, x.view(-1)[:c], torch.ones(c), "running_mean must not share memory with input"),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_aliasing_cases()))
def test_running_stats_that_alias_are_refused(backend, name):
    x, w, rm, rv, message = _aliasing_cases()[name]
    x, w, rm, rv = (t.to(backend[1]) if t is not None else None for t in (x, w, rm, rv))
    x0, rm0, rv0 = x.clone(), rm.clone(), rv.clone()
    with pytest.raises(ValueError, match=message):
        RF.batch_norm_relu(x, rm, rv, w, None, training=True)
    if backend[0] in NATIVE:  # the C++ checks, called directly
        with pytest.raises(RuntimeError, match=message):
            backends.get(backend[0]).ops.bn_act_fwd(x, w, None, rm, rv, True, 0.1, 1e-5, True)
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0) and torch.equal(x, x0)


def test_running_stats_in_strided_views_of_other_buffers_are_accepted():
    # Views of distinct storages that are not dense must not count as aliases.
    c = 3
    x = torch.randn(2, c + 2, 4, 4)[:, 1 : c + 1]
    rm, rv = torch.zeros(2 * c)[::2], torch.ones(2 * c)[::2]
    out, mean, _ = ops.bn_add_act_fwd(x, x.clone(), None, None, rm, rv, True, 0.1, 1e-5, True)
    assert out.shape == x.shape and torch.allclose(rm, 0.1 * mean.float())


BAD_SCALARS = [("eps", float("nan")), ("eps", -1e-5), ("eps", float("inf")),
               ("momentum", float("nan")), ("momentum", -0.1), ("momentum", float("inf"))]  # fmt: skip


@pytest.mark.parametrize("name,value", BAD_SCALARS)
def test_eps_and_momentum_must_be_finite_and_non_negative(backend, name, value):
    device = backend[1]
    x, rm, rv = (
        torch.randn(2, 3, 4, 4, device=device),
        torch.zeros(3, device=device),
        torch.ones(3, device=device),
    )
    kwargs = {"eps": 1e-5, "momentum": 0.1, name: value}
    message = rf"{name} must be a finite number >= 0, got {value}"
    with pytest.raises(ValueError, match=message):
        RF.batch_norm_relu(x, rm, rv, training=True, **kwargs)
    if backend[0] in NATIVE:  # the C++ checks, called directly
        with pytest.raises(RuntimeError, match=message):
            native = backends.get(backend[0]).ops
            native.bn_act_fwd(x, None, None, rm, rv, True, kwargs["momentum"], kwargs["eps"], True)
    assert torch.equal(rm, torch.zeros_like(rm)) and torch.equal(rv, torch.ones_like(rv))


def test_add_relu_backward_checks_the_output_dtype():
    out = torch.ones(2, 3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="output must be float32.*got Int"):
        ops.add_relu_bwd(out, out)


def test_fake_kernels_check_like_the_kernels():
    # torch.compile traces with the fake kernels: the same contract, at trace time.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, g = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
        mean, invstd = torch.zeros(8, dtype=torch.float64), torch.ones(8)
        with pytest.raises(ValueError, match="weight must be a 1-D tensor of 8 elements"):
            ops.bn_act_bwd(g, x, torch.ones(1), None, mean, invstd, True, True)
        with pytest.raises(TypeError, match=r"save_mean must be a \[8\] torch.float64 tensor"):
            ops.bn_act_bwd(g, x, None, None, mean.float(), invstd, True, True)
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            ops.bn_act_fwd(x, None, None, None, None, True, 0.1, -1.0, True)
        with pytest.raises(TypeError, match=r"invstd must be a \[8\] torch.float32 tensor"):
            ops.bn_apply(x, None, None, None, mean, invstd.double(), True)


def test_reference_training_on_zero_channels():
    # The oracle divided by C to count the values per channel.
    from resnet_fast import reference

    x = torch.randn(2, 0, 3, 3)
    out = reference.batch_norm_act(x, torch.zeros(0), torch.ones(0), training=True)
    assert out.shape == x.shape


# --- the Triton ops (TRITON_INTERPRET=1 without a GPU) ---------------------------

triton_op = pytest.mark.triton


@triton_op
def test_triton_ops_check_their_arguments():
    from triton_support import TRITON_DEVICE as dev

    import resnet_fast.triton.backend  # noqa: F401  (registers the ops)

    t = torch.ops.resnet_fast_triton
    x, g = torch.randn(2, 8, 3, 3, device=dev), torch.randn(2, 8, 3, 3, device=dev)
    mean, invstd = torch.zeros(8, dtype=torch.float64, device=dev), torch.ones(8, device=dev)
    rm, rv = torch.zeros(8, device=dev), torch.ones(8, device=dev)
    with pytest.raises(ValueError, match="weight must be a 1-D tensor of 8 elements"):
        t.bn_act_bwd(g, x, torch.ones(1, device=dev), None, mean, invstd, True, True)
    with pytest.raises(TypeError, match=r"mean must be a \[8\] torch.float64 tensor"):
        t.bn_apply(x, None, None, None, mean.float(), invstd, True)
    with pytest.raises(ValueError, match="residual must have the shape of input"):
        t.bn_add_act_fwd(x, x[:1], None, None, rm, rv, True, 0.1, 1e-5, True)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        t.bn_act_fwd(x, None, None, rm, rv, True, 0.1, -1.0, True)
    assert torch.equal(rm, torch.zeros_like(rm)) and torch.equal(rv, torch.ones_like(rv))
    with pytest.raises(ValueError, match="input must be 4-D"):
        t.bn_stats(x[0])
    with pytest.raises(ValueError, match="grad_out must have the shape of output"):
        t.add_relu_bwd(x[:1], x)
    w = torch.randn(4, 8, 3, 3, device=dev)
    with pytest.raises(ValueError, match="groups=3 does not fit input"):
        torch.ops.resnet_fast_triton.conv2d(x, w, None, None, [1], [1], [1], 3, False)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        torch.ops.resnet_fast_triton.conv2d_stats(x, w, None, [0], [1], [1], 1)
    with pytest.raises(ValueError, match="smaller than the"):
        torch.ops.resnet_fast_triton.conv2d(x, w, None, None, [1], [0], [2], 1, False)
    with pytest.raises(ValueError, match="residual must have the shape of the output"):
        torch.ops.resnet_fast_triton.conv2d(x, w, None, x, [1], [1], [1], 1, False)


@triton_op
def test_triton_bn_stats_of_empty_batches():
    from triton_support import TRITON_DEVICE as dev

    import resnet_fast.triton.backend  # noqa: F401

    for shape in [(0, 0, 0, 0), (0, 3, 2, 2), (2, 0, 3, 3), (2, 3, 0, 4)]:
        mean, var = torch.ops.resnet_fast_triton.bn_stats(torch.empty(shape, device=dev))
        assert mean.dtype == var.dtype == torch.float64 and mean.shape == (shape[1],)
        assert not mean.any() and not var.any()


@triton_op
def test_triton_conv2d_stats_of_float64_are_float64_accurate():
    # The partial statistics were float32 whatever the input.
    from triton_support import TRITON_DEVICE as dev

    import resnet_fast.triton.backend  # noqa: F401

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64).to(dev) + 0.3
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64).to(dev)
    out, mean, var = torch.ops.resnet_fast_triton.conv2d_stats(x, w, None, [1], [1], [1], 1)
    var_e, mean_e = torch.var_mean(out, dim=(0, 2, 3), correction=0)
    assert (mean - mean_e).abs().max() < 1e-12 and (var - var_e).abs().max() < 1e-10
