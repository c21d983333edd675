"""Builds resnet_fast._C: the C++ CPU kernels always, the CUDA kernels when the
installed torch has CUDA and nvcc is found (RESNET_FAST_CUDA=0/1 forces).

    pip install --no-build-isolation .        # or -e . for development
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _want_cuda():
    forced = os.environ.get("RESNET_FAST_CUDA")
    cuda_sources = glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu"))
    if forced is not None and forced not in ("0", "1"):
        raise SystemExit(f"RESNET_FAST_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0" or not cuda_sources:
        return False
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "1" and not available:
        raise SystemExit(
            "RESNET_FAST_CUDA=1 but the CUDA build is impossible: "
            f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME}"
        )
    return available


def _extension():
    # The portable kernel build comes first: see csrc/cpu/kernels/capability_default.cpp.
    kernels = ["capability_default.cpp", "capability_avx2.cpp", "capability_avx512.cpp"]
    sources = [os.path.join("csrc", "cpu", "kernels", k) for k in kernels]
    sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))
    sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    # ATen's at::parallel_for is header code over OpenMP pragmas (torch's CPU
    # builds use AT_PARALLEL_OPENMP): without -fopenmp it silently runs on one
    # thread. The libgomp it links resolves, by soname, to the one torch loaded.
    cxx = ["-O3", "-fopenmp", "-Wno-psabi", "-Wno-unknown-pragmas"]
    link = ["-fopenmp"]
    if not _want_cuda():
        return CppExtension(
            "resnet_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    # torch's cpp_extension turns TORCH_CUDA_ARCH_LIST into -gencode flags;
    # without it, the default covers A100 (sm_80) and H100 (sm_90) plus PTX
    # for newer GPUs.
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    # Entry points (torch-facing) and the pure-CUDA kernels with their launchers.
    sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "kernels", "*.cu")))
    defines = ["-DRESNET_FAST_WITH_CUDA", f'-DRESNET_FAST_CUDA_ARCHS="{archs}"']
    # -lineinfo: compute-sanitizer and profilers map back to source lines.
    nvcc = ["-O3", "-lineinfo"] + defines
    return CUDAExtension(
        "resnet_fast._C",
        sources,
        extra_compile_args={"cxx": cxx + defines, "nvcc": nvcc},
        extra_link_args=link,
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
