"""Bad input: a clear error that names the argument, the value and what was
expected, raised before any running statistic is touched. Checked through the
public API (every backend) and through torch.ops directly (the C++ checks)."""

import pytest
import torch

import resnet_fast.functional as RF

ops = torch.ops.resnet_fast


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
