"""Build information, ISA builds of the CPU kernels, and the import error."""

import pytest
import torch
from helpers import run_python

import resnet_fast

# Runs every fused op in one ISA build of the CPU kernels against the fp64
# reference, on shapes whose channel counts leave vector tails.
_ISA_CHECK = """
import torch, resnet_fast, resnet_fast.functional as RF
from resnet_fast import reference
print(resnet_fast.build_info()["cpu_capability"])
g = torch.Generator().manual_seed(0)
worst = 0.0
for shape in [(3, 67, 5, 7), (4, 19, 1, 1), (2, 40, 6, 6)]:
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.bfloat16):
            x = (torch.randn(shape, generator=g) * 2 + 1).to(dtype).contiguous(memory_format=fmt)
            r = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=fmt)
            w, b = torch.rand(shape[1], generator=g) + 0.5, torch.randn(shape[1], generator=g)
            leaves = [t.clone().requires_grad_() for t in (x, r, w, b)]
            out = RF.batch_norm_add_relu(leaves[0], leaves[1], None, None, leaves[2], leaves[3], training=True)
            gy = torch.randn(shape, generator=g).to(dtype)
            out.backward(gy)
            l64 = [t.detach().double().requires_grad_() for t in (x, r, w, b)]
            ref = reference.batch_norm_add_act(l64[0], l64[1], None, None, l64[2], l64[3], training=True)
            ref.backward(gy.double())
            tol = 2e-5 if dtype == torch.float32 else 3e-2
            for mine, exp in [(out, ref)] + [(a.grad, e.grad) for a, e in zip(leaves, l64)]:
                err = ((mine.double() - exp).abs().max() / exp.abs().max().clamp(min=1)).item()
                worst = max(worst, err / tol)
            a = torch.randn(shape, generator=g).to(dtype)
            err = (RF.add_relu(a, r).double() - reference.add_relu(a.double(), r.double())).abs().max().item()
            worst = max(worst, err / tol)
print(worst)
"""


def test_build_info_describes_the_build():
    info = resnet_fast.build_info()
    assert "cpu" in info["backends"]
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["cpu_capability"] in info["cpu_capabilities_compiled"].split(",")
    if "cuda" not in info["backends"]:
        assert info["cuda_archs"] == ""


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_every_isa_build_matches_the_reference(capability):
    """The portable build and each vector build: same results, in a fresh
    process with RESNET_FAST_CPU_CAPABILITY capping the choice."""
    compiled = resnet_fast.build_info()["cpu_capabilities_compiled"].split(",")
    if capability not in compiled:
        pytest.skip(f"{capability} build not compiled here ({compiled})")
    out, _ = run_python(_ISA_CHECK, RESNET_FAST_CPU_CAPABILITY=capability)
    selected, worst = out.split()
    order = ["default", "avx2", "avx512"]
    # The processor may lack the asked-for ISA; then a lower build runs.
    assert order.index(selected) <= order.index(capability)
    if capability == "default":
        assert selected == "default"
    assert float(worst) <= 1.0, f"{selected}: worst error {float(worst):.2f}x the tolerance"


def test_invalid_capability_is_rejected():
    code = "import resnet_fast"
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "RESNET_FAST_CPU_CAPABILITY": "sse9"},
    )
    assert proc.returncode != 0
    assert "RESNET_FAST_CPU_CAPABILITY must be one of default, avx2, avx512" in proc.stderr


def test_missing_native_library_names_the_build_command():
    code = (
        "import sys; sys.modules['resnet_fast._C'] = None\n"
        "try:\n    import resnet_fast\nexcept ImportError as e:\n    print(e)\n"
    )
    out, _ = run_python(code)
    assert "pip install --no-build-isolation -e ." in out
