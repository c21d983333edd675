"""saved_activations counts what autograd saves, once per storage, parameters excluded."""

import torch

from resnet_fast.profiling import saved_activations


def test_counts_each_saved_storage_once_and_excludes_parameters():
    weight = torch.nn.Parameter(torch.randn(64))
    x = torch.randn(8, 64, requires_grad=True)

    def forward(a):
        b = a * weight  # saves a and weight
        c = b * b  # saves b (twice: one storage)
        return c.sin()  # saves c

    out, saved = saved_activations(forward, x, exclude=[weight])
    assert saved.storages == 3
    assert saved.bytes == 3 * x.numel() * 4
    assert saved.packed == 5
    out.sum().backward()  # the graph is intact
    assert x.grad is not None and weight.grad is not None


def test_views_of_one_storage_count_the_storage():
    x = torch.randn(4, 16, requires_grad=True)
    base = x * 2
    out, saved = saved_activations(lambda t: t[:2].sin() * t[2:].sin(), base)
    # sin() saves its input: two views of base, counted once at base's full size;
    # the product saves both sin() outputs
    assert saved.storages == 3
    assert saved.bytes == (4 * 16 + 2 * 2 * 16) * 4


def test_autocast_copies_of_excluded_parameters_are_left_out():
    # Under autocast a bfloat16 copy of the weight is saved for backward: a
    # per-step cost, not an activation, so it is not counted.
    linear = torch.nn.Linear(32, 64)
    x = torch.randn(8, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, saved = saved_activations(linear, x, exclude=linear.parameters())
    assert out.dtype == torch.bfloat16
    assert saved.bytes == x.numel() * 2  # only the input's bfloat16 copy
    out.float().sum().backward()
    assert linear.weight.grad is not None
