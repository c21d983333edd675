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


# --- installs that ship sources, the CUDA toolkit's root, the 1-pixel eval path ---

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from resnet_fast._native import build as native_build  # noqa: E402
from resnet_fast._native import spec  # noqa: E402
from resnet_fast.conv import folded  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked files (what a fresh clone has) under dest."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, dest / rel)
    return dest


def _fake_toolkit(tmp_path: Path, dryrun_top: bool) -> tuple[Path, Path]:
    """A CUDA toolkit folder and a folder whose nvcc is a wrapper script exec'ing it."""
    toolkit = tmp_path / "cuda-99.0"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "lib64").mkdir()
    (toolkit / "lib64" / "libcudart.so").write_text("")
    top = f'echo "#$ TOP={toolkit}/bin/.."' if dryrun_top else "true"
    (toolkit / "bin" / "nvcc").write_text(f"#!/bin/sh\n{top}\n")
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "nvcc").write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    for f in (toolkit / "bin" / "nvcc", wrapper / "nvcc"):
        f.chmod(0o755)
    return toolkit, wrapper


@pytest.mark.parametrize("dryrun_top", [True, False])
def test_cuda_home_found_through_a_wrapper_nvcc(tmp_path, monkeypatch, dryrun_top):
    """torch guesses dirname(dirname(which nvcc)), the wrapper's folder, which
    has no libcudart: the toolkit is found from nvcc --dryrun's TOP line."""
    toolkit, wrapper = _fake_toolkit(tmp_path, dryrun_top)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrapper}:/usr/bin:/bin")
    found = spec.resolve_cuda_home()
    if dryrun_top:
        assert found == str(toolkit.resolve())
        assert spec.want_cuda(str(REPO), "13.0") == (True, found, "")
    else:  # a script, not a symlink: nothing names the toolkit
        assert found is None or found != str(wrapper.parent)
    # CUDA_HOME wins, and a wrong one is an error that says what to set.
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert spec.resolve_cuda_home() == str(toolkit)
    monkeypatch.setenv("CUDA_HOME", str(wrapper))
    with pytest.raises(RuntimeError, match="Set CUDA_HOME to the toolkit's root"):
        spec.want_cuda(str(REPO), "13.0")
    monkeypatch.setenv("RESNET_FAST_CUDA", "0")
    assert spec.want_cuda(str(REPO), "13.0")[0] is False


def test_forced_cuda_without_cuda_torch_is_an_error(monkeypatch):
    monkeypatch.setenv("RESNET_FAST_CUDA", "1")
    with pytest.raises(RuntimeError, match="install a CUDA build of torch"):
        spec.want_cuda(str(REPO), None)
    monkeypatch.setenv("RESNET_FAST_CUDA", "yes")
    with pytest.raises(RuntimeError, match="must be 0 or 1"):
        spec.want_cuda(str(REPO), None)


def test_isolated_build_makes_a_pure_wheel_with_the_sources(tmp_path):
    """pip's isolated build environment has no torch: setup.py then makes a
    pure-Python wheel that carries csrc/ for the first-import build."""
    src = _tracked_copy(tmp_path / "src")
    hide_torch = (
        "import sys; sys.modules['torch'] = None; "
        "sys.argv = ['setup.py', '-q', 'bdist_wheel', '-d', sys.argv[1]]; "
        "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), "
        "{'__file__': 'setup.py', '__name__': '__main__'})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide_torch, str(tmp_path / "dist")],
        cwd=src, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for rel in spec.all_source_files(str(REPO)):
        assert f"resnet_fast/{rel}" in names
    assert "resnet_fast/_native/build.py" in names
    assert not [n for n in names if n.endswith(".so")]


def test_shipped_sources_load_from_the_cache(tmp_path):
    """An install without _C (pure wheel) computes the cache key from the
    shipped sources and loads the library cached there, without building."""
    site = tmp_path / "site"
    shutil.copytree(
        REPO / "resnet_fast",
        site / "resnet_fast",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    shutil.copytree(REPO / "csrc", site / "resnet_fast" / "csrc")
    key = native_build.build_plan(str(REPO))["key"]
    assert native_build.build_plan(str(site / "resnet_fast"))["key"] == key
    cached = tmp_path / "cache" / key
    cached.mkdir(parents=True)
    shutil.copyfile(resnet_fast._C.__file__, cached / "_C.so")
    (cached / "built").touch()
    # An editable install of resnet_fast elsewhere must not supply the _C.
    code = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'ditable' not in repr(f)]\n"
    code += "import resnet_fast; print(resnet_fast._C.__file__); print(resnet_fast.build_info()['backends'])"
    env = {**os.environ, "PYTHONPATH": str(site), "RESNET_FAST_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == str(cached / "_C.so")
    assert "building" not in proc.stderr
    # A changed source is another build: another key.
    header = site / "resnet_fast" / "csrc" / "common" / "checks.h"
    header.write_text(header.read_text() + "\n")
    assert native_build.build_plan(str(site / "resnet_fast"))["key"] != key


def test_one_pixel_residual_conv_runs_unfused_where_onednn_cannot(monkeypatch):
    """torch < 2.13: oneDNN's conv + sum post-op fails on 1x1 inputs; those
    calls run unfused, with one warning, and give the same result."""
    monkeypatch.setattr(folded, "_BINARY_NEEDS_2PX", True)
    monkeypatch.setattr(folded, "_warned_1px", False)
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 6, 1, 1, generator=g), torch.randn(8, generator=g)

    def run(hw):
        x = torch.randn(2, 6, hw, hw, generator=g)
        r = torch.randn(2, 8, hw, hw, generator=g)
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = folded.conv_folded_act(x, w, b, 1, 0, 1, 1, r, True, lambda a, c: torch.relu(a + c))
        expected = torch.relu(F.conv2d(x.double(), w.double(), b.double()) + r.double())
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
        return [str(c.message) for c in caught]

    assert run(2) == []
    (message,) = run(1)
    assert "run unfused" in message
    assert run(1) == []  # once
