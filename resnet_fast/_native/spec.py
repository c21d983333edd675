"""What resnet_fast._C is built from: sources, compile flags, whether CUDA is
wanted, and where the CUDA toolkit is.

One list for both builds: setup.py's ahead-of-time build (``pip install
--no-build-isolation .``) and the first-import build of a plain ``pip install
.`` (build.py). It imports nothing from resnet_fast and no torch at
module level, so setup.py can load it by path before torch is known to exist.
"""

import glob
import os
import re
import shutil
import subprocess

# The portable kernel build comes first: see csrc/cpu/kernels/capability_default.cpp.
_ISA_KERNELS = ["capability_default.cpp", "capability_avx2.cpp", "capability_avx512.cpp"]

# ATen's at::parallel_for is header code over OpenMP pragmas (torch's CPU
# builds use AT_PARALLEL_OPENMP): without -fopenmp it silently runs on one
# thread. The libgomp it links resolves, by soname, to the one torch loaded.
# -DNDEBUG and -fwrapv: what setuptools adds from Python's own flags to the
# ahead-of-time build, stated here so the first-import build (which does not
# add them) compiles the same code: without NDEBUG torch's headers keep their
# debug asserts.
CXX_FLAGS = ["-O3", "-DNDEBUG", "-fwrapv", "-fopenmp", "-Wno-psabi", "-Wno-unknown-pragmas"]
LINK_FLAGS = ["-fopenmp"]
# -lineinfo: compute-sanitizer and profilers map back to source lines.
NVCC_FLAGS = ["-O3", "-lineinfo"]
# torch's cpp_extension turns TORCH_CUDA_ARCH_LIST into -gencode flags; the
# default covers A100 (sm_80) and H100 (sm_90) plus PTX for newer GPUs.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _found(root: str, *patterns: str) -> list[str]:
    found = []
    for pattern in patterns:
        found += sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern)))
    return found


def cpu_sources(root: str) -> list[str]:
    """The C++ sources of every build, relative to root (the folder holding
    csrc/): the library's root files, the host code of the op families (one
    file per family, every device), the shared host code, the CPU kernel
    table and registration, and the per-ISA CPU kernels."""
    sources = [os.path.join("csrc", "cpu", "kernels", k) for k in _ISA_KERNELS]
    return sources + _found(root, "csrc/*.cpp", "csrc/ops/*.cpp", "csrc/common/*.cpp",
                            "csrc/cpu/*.cpp")  # fmt: skip


def cuda_sources(root: str) -> list[str]:
    """What CUDA builds add: the CUDA host files (the kernel table, the
    stream, the registration) and the pure-CUDA kernels with their launchers."""
    return _found(root, "csrc/cuda/*.cpp", "csrc/cuda/kernels/*.cu")


def all_source_files(root: str) -> list[str]:
    """Every file under csrc/ (headers included), relative to root: what a
    build depends on, hashed into the first-import build's cache key."""
    files = []
    for dirpath, _, names in os.walk(os.path.join(root, "csrc")):
        files += [os.path.relpath(os.path.join(dirpath, n), root) for n in names]
    return sorted(files)


def cuda_archs() -> str:
    return os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)


def cuda_defines(archs: str) -> list[str]:
    return ["-DRESNET_FAST_WITH_CUDA", f'-DRESNET_FAST_CUDA_ARCHS="{archs}"']


def resolve_cuda_home() -> str | None:
    """The CUDA toolkit's root: a folder with bin/nvcc and lib64/libcudart.

    CUDA_HOME or CUDA_PATH when set; else found from the nvcc on PATH, which
    may be a wrapper script (then its parent folder is not the toolkit and
    torch's own guess, dirname(dirname(which nvcc)), links against no
    libcudart): nvcc --dryrun names the toolkit on its "#$ TOP=" line, and a
    symlinked nvcc is followed to its real folder.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc is not None:
        try:
            proc = subprocess.run(
                [nvcc, "--dryrun", "--version"], capture_output=True, text=True, timeout=60
            )
            match = re.search(r"^#\$ TOP=(.+)$", proc.stdout + proc.stderr, re.MULTILINE)
            if match:
                candidates.append(os.path.realpath(match.group(1).strip()))
        except (OSError, subprocess.SubprocessError):
            pass
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        candidates.append(os.path.dirname(os.path.dirname(nvcc)))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if _is_toolkit(home):
            return home
    return None


def _is_toolkit(home: str) -> bool:
    has_nvcc = os.path.isfile(os.path.join(home, "bin", "nvcc"))
    cudart = glob.glob(os.path.join(home, "lib64", "libcudart.so*")) + glob.glob(
        os.path.join(home, "targets", "*", "lib", "libcudart.so*")
    )
    return has_nvcc and bool(cudart)


def use_cuda_home(home: str) -> None:
    """Points torch.utils.cpp_extension at home; it guessed its CUDA_HOME when
    it was imported, and reads the module global whenever it builds."""
    import torch.utils.cpp_extension as cpp_extension

    os.environ["CUDA_HOME"] = home
    cpp_extension.CUDA_HOME = home


def want_cuda(root: str, torch_cuda_version: str | None) -> tuple[bool, str | None, str]:
    """(build the CUDA kernels?, the toolkit's root, why not when not).

    CUDA is built when the installed torch has CUDA and a toolkit is found;
    RESNET_FAST_CUDA=0 or 1 forces the choice.

    Raises:
        RuntimeError: RESNET_FAST_CUDA is not 0 or 1; or the build is
            impossible (torch without CUDA, no toolkit) and RESNET_FAST_CUDA=1
            or CUDA_HOME / CUDA_PATH names a folder that is no toolkit.
    """
    forced = os.environ.get("RESNET_FAST_CUDA")
    if forced is not None and forced not in ("0", "1"):
        raise RuntimeError(f"RESNET_FAST_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False, None, "RESNET_FAST_CUDA=0"
    if torch_cuda_version is None or not cuda_sources(root):
        if forced == "1":
            raise RuntimeError(
                "RESNET_FAST_CUDA=1 but the installed torch has no CUDA "
                "(torch.version.cuda is None): install a CUDA build of torch"
            )
        return False, None, "the installed torch has no CUDA"
    home = resolve_cuda_home()
    if home is not None and _is_toolkit(home):
        return True, home, ""
    why = (
        f"CUDA_HOME={home} has no bin/nvcc and lib64/libcudart.so"
        if home
        else "no CUDA toolkit found (no nvcc on PATH, no /usr/local/cuda)"
    )
    if forced == "1" or home is not None:
        raise RuntimeError(
            f"the CUDA build is impossible: {why}. Set CUDA_HOME to the toolkit's root "
            "(the folder with bin/nvcc and lib64/libcudart.so), or RESNET_FAST_CUDA=0 "
            "for a CPU-only build"
        )
    return False, None, why


# --- resnet_fast._cuda_emulated: the test-only CUDA-on-CPU library ---------
# The CUDA build's host code and kernels compiled by the host compiler against
# the project's CUDA emulation (csrc/cuda/emulation/, README.md there), for the
# tests' "cuda_emulated" backend. Built by the development install (setup.py
# with torch importable) where HIP-CPU's libco is found; never by a user's
# `pip install .` (pure wheel) nor by the first-import build (build.py).

EMULATION_MODULE = "resnet_fast._cuda_emulated"
# -O1 -g0: fast enough for the tests, quick to compile. -fvisibility=hidden:
# its copies of the host code must never bind to resnet_fast._C's (see
# csrc/cuda_emulated/library.cpp). torch's nvcc defines: the kernels build
# under the restrictions they have in the CUDA build. -Wno-unknown-pragmas:
# nvcc's `#pragma unroll`.
EMULATION_FLAGS = [
    "-O1", "-g0", "-fvisibility=hidden", "-Wno-unknown-pragmas",
    "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
]  # fmt: skip


def emulation_libco(root: str) -> tuple[str | None, str]:
    """(HIP-CPU's libco folder, or None; why not, when None).

    Looked up in $RESNET_FAST_HIP_CPU, else ../shared/hip-cpu next to root;
    RESNET_FAST_CUDA_EMULATION=0 turns the library off, =1 requires it.

    Raises:
        RuntimeError: RESNET_FAST_CUDA_EMULATION is not 0 or 1; or
            RESNET_FAST_HIP_CPU (or RESNET_FAST_CUDA_EMULATION=1) asks for a
            libco that is not there.
    """
    switch = os.environ.get("RESNET_FAST_CUDA_EMULATION")
    if switch is not None and switch not in ("0", "1"):
        raise RuntimeError(f"RESNET_FAST_CUDA_EMULATION must be 0 or 1, got {switch!r}")
    if switch == "0":
        return None, "RESNET_FAST_CUDA_EMULATION=0"
    given = os.environ.get("RESNET_FAST_HIP_CPU")
    hip_cpu = given or os.path.join(os.path.dirname(os.path.abspath(root)), "shared", "hip-cpu")
    libco = os.path.join(hip_cpu, "external", "libco")
    if os.path.isfile(os.path.join(libco, "libco.h")):
        return libco, ""
    why = f"no HIP-CPU libco at {libco}"
    if given or switch == "1":
        raise RuntimeError(
            f"the CUDA emulation library cannot be built: {why} (RESNET_FAST_HIP_CPU names "
            "HIP-CPU's root, the folder with external/libco/libco.h)"
        )
    return None, why + " (set RESNET_FAST_HIP_CPU to HIP-CPU's root)"


def emulation_sources(root: str) -> list[str]:
    """Its C++ sources, relative to root: the host code of every build
    (csrc/ops, csrc/common), the CUDA kernel table, the emulation's runtime
    and the library's own files; the kernels come from emulation_kernel_units."""
    return _found(
        root, "csrc/ops/*.cpp", "csrc/common/*.cpp", "csrc/cuda/bn_kernels_cuda.cpp",
        "csrc/cuda/emulation/*.cpp", "csrc/cuda_emulated/*.cpp",
    )  # fmt: skip


def emulation_include_dirs(root: str, libco: str) -> list[str]:
    """The emulation's CUDA headers (cuda_runtime.h & co.) and libco."""
    return [os.path.join(root, "csrc", "cuda", "emulation"), libco]


def emulation_kernel_units(root: str, folder: str) -> list[str]:
    """One C++ file in `folder` per csrc/cuda/kernels/*.cu, which includes it:
    the host compiler builds the kernel files unchanged (as `g++ -x c++`
    would; build tools send a .cu source to nvcc). Returns their paths."""
    os.makedirs(folder, exist_ok=True)
    units = []
    for kernel in _found(root, "csrc/cuda/kernels/*.cu"):
        unit = os.path.join(folder, os.path.basename(kernel) + ".cpp")
        text = f'#include "{os.path.abspath(os.path.join(root, kernel))}"\n'
        if not os.path.isfile(unit) or open(unit).read() != text:
            with open(unit, "w") as f:
                f.write(text)
        units.append(unit)
    return units
