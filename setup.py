"""Builds resnet_fast.

    pip install .                             # torch already installed
    pip install --no-build-isolation .        # or -e . for development

With torch importable (``--no-build-isolation``), resnet_fast._C is compiled
here, ahead of time: the C++ CPU kernels always, the CUDA kernels when the
installed torch has CUDA and a CUDA toolkit is found (RESNET_FAST_CUDA=0/1
forces). In pip's isolated build environment torch is not there (pip would
otherwise download some torch to build against, not the one the user runs),
so the wheel is pure Python and carries csrc/; the extension is then built
against the installed torch at first import (resnet_fast/_native/build.py).
The sources and flags of both builds come from resnet_fast/_native/spec.py.

The build with torch importable also makes the test-only library
resnet_fast._cuda_emulated (the CUDA kernels on the CPU, for the tests'
"cuda_emulated" backend) where HIP-CPU's libco is found
(RESNET_FAST_HIP_CPU, or ../shared/hip-cpu next to this folder);
RESNET_FAST_CUDA_EMULATION=0 turns it off.
"""

import glob
import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_spec():
    # By path: importing the resnet_fast package would import torch.
    path = os.path.join(ROOT, "resnet_fast", "_native", "spec.py")
    module_spec = importlib.util.spec_from_file_location("_resnet_fast_extension_spec", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


spec = _load_spec()


class BuildPyWithSources(build_py):
    """Copies csrc/ into the package (resnet_fast/csrc): the first-import
    build compiles from there."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "resnet_fast", "csrc")
        shutil.rmtree(target, ignore_errors=True)
        for rel in spec.all_source_files(ROOT):
            out = os.path.join(self.build_lib, "resnet_fast", rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(os.path.join(ROOT, rel), out)


def _extension():
    import torch  # noqa: F401  (cpp_extension expects it loaded)
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    try:
        cuda, home, why = spec.want_cuda(ROOT, torch.version.cuda)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    sources = spec.cpu_sources(ROOT)
    cxx, link = list(spec.CXX_FLAGS), list(spec.LINK_FLAGS)
    if not cuda:
        if torch.version.cuda is not None:
            print(f"resnet_fast: building the CPU kernels only: {why}")
        return CppExtension(
            "resnet_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    spec.use_cuda_home(home)
    archs = spec.cuda_archs()
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    defines = spec.cuda_defines(archs)
    return CUDAExtension(
        "resnet_fast._C",
        sources + spec.cuda_sources(ROOT),
        extra_compile_args={"cxx": cxx + defines, "nvcc": spec.NVCC_FLAGS + defines},
        extra_link_args=link,
    )


def _emulated_extension():
    """The test-only CUDA emulation library, or None where it is not built
    (then a library left by an earlier build is removed: the tests would load
    stale kernels)."""
    from torch.utils.cpp_extension import CppExtension

    try:
        libco, why = spec.emulation_libco(ROOT)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    if libco is None:
        print(f"resnet_fast: the test-only CUDA emulation library is not built: {why}")
        for stale in glob.glob(os.path.join(ROOT, "resnet_fast", "_cuda_emulated*.so")):
            os.remove(stale)
        return None
    units = spec.emulation_kernel_units(ROOT, os.path.join(ROOT, "build", "cuda_emulated_units"))
    return CppExtension(
        spec.EMULATION_MODULE,
        spec.emulation_sources(ROOT) + units,
        include_dirs=spec.emulation_include_dirs(ROOT, libco),
        extra_compile_args={"cxx": list(spec.EMULATION_FLAGS)},
    )


def _extensions():
    emulated = _emulated_extension()
    return [_extension()] + ([emulated] if emulated is not None else [])


if importlib.util.find_spec("torch") is None:
    setup(cmdclass={"build_py": BuildPyWithSources})
else:
    from torch.utils.cpp_extension import BuildExtension

    setup(
        ext_modules=_extensions(),
        cmdclass={
            "build_py": BuildPyWithSources,
            "build_ext": BuildExtension.with_options(use_ninja=True),
        },
    )
