"""What only the cuda_emulated backend needs (the CUDA host code and kernels
on CPU tensors through the test-only emulation; the shared op tests run it
like every backend, on a small and an H100-sized fake device): that the
large device really splits the reductions over many blocks, whose partials
the finalize kernels merge; the CUDA-specific cases of test_cuda_kernels.py
(misaligned operands on the element-by-element path, 16-byte paths with
vector tails, many partials, strided and bf16 [C] vectors, agreement with
the CPU kernels); and that the backend refuses what it cannot run, saying
why."""

import contextlib

import pytest
import test_cuda_kernels as cuda_cases
import torch
from emulation_support import LARGE, SMALL, emulated
from helpers import assert_close, make_activation

import resnet_fast
import resnet_fast.functional as RF
import resnet_fast.models as M
from resnet_fast import reference
from resnet_fast._native import emulation
from resnet_fast._ops import backends
from resnet_fast.models.plain import plain_model

pytestmark = pytest.mark.cuda_emulated
DEVICES = [pytest.param(SMALL, id="small"), pytest.param(LARGE, id="large")]


@pytest.fixture(params=DEVICES)
def emulated_device(request):
    with emulated(request.param):
        yield request.param


def _launches(kernel: str) -> list[dict]:
    """The recent launches of the kernels whose name starts with `kernel`."""
    return [launch for launch in emulation.recent_launches() if launch["kernel"].startswith(kernel)]


def _splits(launch: dict) -> int:
    """Blocks per channel of a reduction: the rows kernels' grid x, the
    planar kernels' grid y."""
    return launch["grid"][0] if "_rows_" in launch["kernel"] else launch["grid"][1]


# --- reductions split over blocks ---------------------------------------------

# (shape, layout): reductions over enough rows or lines that an H100 takes
# many blocks per channel (a planar walk over cropped lines; a channels_last
# walk over 8192 rows).
SPLIT_CASES = [
    pytest.param((8, 16, 32, 32), "spatial_crop", id="planar"),
    pytest.param((8, 16, 32, 32), "channels_last", id="rows"),
]


@pytest.mark.parametrize("shape,layout", SPLIT_CASES)
def test_a_large_device_splits_the_reductions_and_merges_them_exactly(shape, layout, gen):
    x = make_activation(shape, layout, torch.float64, gen, scale=3.0, shift=50.0)
    g = make_activation(shape, layout, torch.float64, gen)
    var_e, mean_e = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    invstd = torch.rsqrt(var_e + 1e-5)
    centered = x - mean_e.view(1, -1, 1, 1)
    splits = {}
    for name, size in (("small", SMALL), ("large", LARGE)):
        with emulated(size) as ops:
            mean, var = ops.bn_stats(x)
            (stats,) = _launches("bn_stats_")[-1:]
            sum_g, sum_gx = ops.bn_act_bwd_reduce(g, x, None, None, mean, invstd, False)
            (reduce,) = _launches("bn_backward_reduce_")[-1:]
        splits[name] = (_splits(stats), _splits(reduce))
        torch.testing.assert_close(mean, mean_e, rtol=0, atol=1e-12)
        torch.testing.assert_close(var, var_e, rtol=1e-12, atol=0)
        torch.testing.assert_close(sum_g, g.sum((0, 2, 3)), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sum_gx, (g * centered).sum((0, 2, 3)), rtol=1e-10, atol=1e-10)
    assert min(splits["large"]) >= 8, splits
    assert max(splits["small"]) <= 4, splits


@pytest.mark.parametrize("layout,dtype", cuda_cases.MANY_PARTIALS)
def test_many_partials_per_channel(layout, dtype, gen):
    with emulated(LARGE):
        cuda_cases.many_partials_per_channel(layout, dtype, gen, "cpu")
    (stats,), (reduce,) = _launches("bn_stats_")[-1:], _launches("bn_backward_reduce_")[-1:]
    assert _splits(stats) > 1 and _splits(reduce) > 1, (stats, reduce)


# --- 16-byte paths, their tails, and the element-by-element path -------------


def _vector_width(launch: dict) -> int:
    """The V of the launching function (its template arguments)."""
    caller = launch["caller"]
    return int(caller.split("int V = ", 1)[1].split(";", 1)[0].split("]", 1)[0])


@pytest.mark.parametrize("op,layout", cuda_cases.MISALIGNED)
def test_misaligned_operands_take_the_scalar_path(emulated_device, op, layout, gen):
    cuda_cases.misaligned_operands(op, layout, gen, "cpu")
    (apply,) = [launch for launch in _launches("kernel") if "ApplyParams" in launch["caller"]][-1:]
    assert _vector_width(apply) == 1


@pytest.mark.parametrize("numel", [4096, 4096 + 3, 13])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str
)
def test_add_relu_takes_the_16_byte_path_with_its_tail(emulated_device, numel, dtype, gen):
    a = torch.randn(numel, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(numel, generator=gen, dtype=torch.float64).to(dtype)
    out = RF.add_relu(a, b)
    (launch,) = _launches("add_relu_kernel")[-1:]
    assert launch["kernel"] == "add_relu_kernel<T, V>", launch
    expected = reference.add_relu(a.double(), b.double()).to(dtype)
    assert torch.equal(out, expected)  # one rounding of the same sum
    grad = torch.ops.resnet_fast_cuda_emulated.add_relu_bwd(b, out)
    assert torch.equal(grad, torch.where(out > 0, b, torch.zeros_like(b)))


def test_strided_and_low_precision_channel_vectors(emulated_device, gen):
    cuda_cases.strided_and_low_precision_channel_vectors(gen, "cpu")


def test_matches_the_cpu_backend(emulated_device, gen):
    cuda_cases.matches_the_cpu_backend(gen, "cpu")


# --- a model ----------------------------------------------------------------


def test_a_converted_model_trains_like_its_plain_twin(gen):
    """Two SGD steps of a small ResNet in float64: the fused blocks (lean
    autograd nodes, the BN ops, the stage ops) on the emulated CUDA kernels
    match plain PyTorch."""
    torch.manual_seed(0)
    plain = plain_model("resnet20", num_classes=10).double()
    torch.manual_seed(0)
    fast = M.resnet20(num_classes=10).double()
    data = [(torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64),
             torch.randint(0, 10, (4,), generator=gen)) for _ in range(2)]  # fmt: skip
    losses = {}
    for name, model in (("plain", plain), ("fast", fast)):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses[name] = []
        with emulated(LARGE) if name == "fast" else contextlib.nullcontext():
            for x, y in data:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                losses[name].append(loss.item())
    assert any("bn_" in launch["kernel"] for launch in emulation.recent_launches())
    torch.testing.assert_close(losses["fast"], losses["plain"], rtol=1e-9, atol=1e-9)
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    for key, value in plain_state.items():
        torch.testing.assert_close(fast_state[key], value, rtol=1e-8, atol=1e-9, msg=key)


# --- refusals -------------------------------------------------------------------


def test_the_backend_refuses_tensors_off_the_cpu():
    with emulated(SMALL):
        with pytest.raises(ValueError, match="'cuda_emulated' .* needs CPU tensors, got .*meta"):
            RF.add_relu(torch.ones(3, device="meta"), torch.ones(3, device="meta"))


def test_an_absent_library_is_named_with_the_way_to_build_it(monkeypatch):
    monkeypatch.setattr(emulation, "_MODULE", "resnet_fast._no_such_library")
    library, why = emulation._load()
    assert library is None and "pip install --no-build-isolation -e ." in why
    monkeypatch.setattr(emulation, "_library", None)
    monkeypatch.setattr(emulation, "_why_absent", why)
    with pytest.raises(
        RuntimeError, match=r"backend 'cuda_emulated': resnet_fast\._cuda_emulated is not built"
    ):
        with resnet_fast.use_backend("cuda_emulated"):
            RF.add_relu(torch.ones(3), torch.ones(3))
    with pytest.raises(RuntimeError, match="is not built"):
        emulation.set_device(2, 2)
    assert backends.get("cuda_emulated").home() is None


@pytest.mark.parametrize("sizes", [(0, 2), (2, 0), (True, 2), (2.0, 2)])
def test_set_device_checks_its_arguments(sizes):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        emulation.set_device(*sizes)


def test_the_emulated_ops_check_their_arguments_like_the_cpu_ops():
    with emulated(SMALL) as ops:
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
        with pytest.raises(RuntimeError, match=r"mean must be a \[3\] Double tensor"):
            ops.bn_apply(x, None, None, None, torch.zeros(3), torch.ones(3), True)
        with pytest.raises(RuntimeError, match="input must be 4-D"):
            ops.bn_stats(x[0])
        assert_close(ops.bn_stats(x)[0], x.double().mean((0, 2, 3)), torch.float64, "mean")
