#!/usr/bin/env python3
"""Compile gate of the CUDA code, for machines with nvcc and no GPU.

1. Every csrc/cuda/kernels/*.cu (pure CUDA: every kernel and every template
   instantiation the launchers use) is compiled for sm_80 and sm_90
   with warnings as errors and the ptxas resource report. Any register spill
   or local-memory use (stack frame, lmem) in a kernel fails the gate.
2. The host files of the CUDA build are compiled (to objects, not linked)
   against the installed torch's headers and the CUDA toolkit's, with
   RESNET_FAST_WITH_CUDA: the CUDA host files (csrc/cuda/*.cpp: the kernel
   table, the stream, the registration) and every other source of the build
   whose code depends on that define (the library's kernel table per device,
   its build information); the list comes from resnet_fast/_native/spec.py.
   A CPU-only torch wheel lacks one generated CUDA header,
   c10/cuda/impl/cuda_cmake_macros.h; the gate then supplies a stand-in with
   the content CUDA builds of torch ship, and says so.

Prints a table (kernel, registers and shared memory per architecture) and
exits non-zero on any failure. nvcc missing is a failure unless
RESNET_FAST_SKIP_NVCC_GATE=1 (for machines without the CUDA toolkit).

    python .ci/nvcc_gate.py [--arch 80,90] [--jobs N] [--kernels-only]
"""

import argparse
import concurrent.futures
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "csrc" / "cuda" / "kernels"

# What torch.utils.cpp_extension passes to nvcc for every .cu file: the
# kernels must build under the same restrictions (no implicit half/bfloat16
# conversions or operators).
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]
WERROR = ["-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror"]


def cuda_host_files() -> list[Path]:
    """The CUDA build's host files: its .cpp sources that the CPU build lacks,
    and those of both whose code depends on RESNET_FAST_WITH_CUDA."""
    path = ROOT / "resnet_fast" / "_native" / "spec.py"
    module_spec = importlib.util.spec_from_file_location("_resnet_fast_extension_spec", path)
    spec = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(spec)
    cuda_only = [ROOT / s for s in spec.cuda_sources(str(ROOT)) if s.endswith(".cpp")]
    switched = [
        ROOT / s
        for s in spec.cpu_sources(str(ROOT))
        if "RESNET_FAST_WITH_CUDA" in (ROOT / s).read_text()
    ]
    return cuda_only + switched


def find_nvcc() -> str | None:
    for candidate in (
        os.environ.get("NVCC"),
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
    ):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def compile_kernels(nvcc: str, source: Path, arch: str, out: Path) -> tuple[str, int, str]:
    cmd = [
        nvcc, "-std=c++17", "-O3", "-c", str(source), "-o", str(out),
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-Xptxas", "-v,-warn-spills,-warn-lmem-usage",
        *TORCH_NVCC_DEFINES, *WERROR,
    ]  # fmt: skip
    proc = run(cmd)
    return arch, proc.returncode, proc.stdout + proc.stderr


# ptxas -v, per kernel:
#   ptxas info    : Compiling entry function '_Z...' for 'sm_90'
#   ptxas info    : Function properties for _Z...
#       8 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
#   ptxas info    : Used 40 registers, used 1 barriers, 264 bytes smem, ...
ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
FRAME_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED_RE = re.compile(r"Used (\d+) registers")
SMEM_RE = re.compile(r"(\d+) bytes smem")
LMEM_RE = re.compile(r"(\d+) bytes lmem")


def _errors(log: str) -> str:
    """The compiler's diagnostics without the ptxas resource report."""
    keep = [
        ln for ln in log.splitlines() if "ptxas info" not in ln and "bytes stack frame" not in ln
    ]
    return "\n".join(keep)[-6000:]


def parse_ptxas(log: str) -> list[dict]:
    kernels, current = [], None
    for line in log.splitlines():
        if m := ENTRY_RE.search(line):
            current = {"mangled": m.group(1), "arch": m.group(2), "frame": 0, "spill": 0}
            current.update(regs=None, smem=0, lmem=0)
            kernels.append(current)
        elif current is None:
            continue
        elif m := FRAME_RE.search(line):
            current["frame"] = int(m.group(1))
            current["spill"] = int(m.group(2)) + int(m.group(3))
        elif m := USED_RE.search(line):
            current["regs"] = int(m.group(1))
            if s := SMEM_RE.search(line):
                current["smem"] = int(s.group(1))
            if s := LMEM_RE.search(line):
                current["lmem"] = int(s.group(1))
    return kernels


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    proc = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    out = proc.stdout.splitlines()
    return dict(zip(names, out, strict=True)) if len(out) == len(names) else {n: n for n in names}


def short_name(demangled: str) -> str:
    """'void ns::(anonymous namespace)::k<float, 4>(args)' -> 'k<float, 4>'."""
    name = demangled.split("(", 1)[0] if "(anonymous" not in demangled else demangled
    name = name.replace("resnet_fast::cuda::", "").replace("(anonymous namespace)::", "")
    name = re.sub(r"^void ", "", name)
    depth, end = 0, len(name)
    for i, ch in enumerate(name):  # cut the argument list after the template arguments
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            end = i
            break
    return name[:end].replace("__nv_bfloat16", "bf16").replace("__half", "half")


def torch_include_flags(workdir: Path) -> tuple[list[str], str, list[str]]:
    """(-isystem flags, -std flag, notes) for compiling against the installed torch."""
    import torch.utils.cpp_extension as ext

    notes = []
    includes = list(ext.include_paths())
    macros = Path(includes[0]) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not macros.exists():
        shim = workdir / "shim" / "c10" / "cuda" / "impl"
        shim.mkdir(parents=True)
        (shim / "cuda_cmake_macros.h").write_text(
            "#pragma once\n// Stand-in written by .ci/nvcc_gate.py: this torch is a CPU build.\n"
            "#define C10_CUDA_BUILD_SHARED_LIBS\n"
        )
        includes.insert(0, str(workdir / "shim"))
        notes.append(
            "torch is a CPU build: c10/cuda/impl/cuda_cmake_macros.h supplied by the gate; "
            "the host files are compiled, not linked (no libc10_cuda to link against)"
        )
    import sysconfig

    includes.append(sysconfig.get_paths()["include"])
    source = Path(ext.__file__).read_text()
    std = "-std=c++20" if "-std=c++20" in source else "-std=c++17"
    flags = []
    for inc in includes:
        flags += ["-isystem", inc]
    return flags, std, notes


def compile_host_file(nvcc, source: Path, arch: str, flags, std, out: Path):
    cmd = [
        nvcc, std, "-O0", "-c", str(source), "-o", str(out),
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-Xcompiler", "-fPIC", "-DRESNET_FAST_WITH_CUDA", "-I", str(ROOT / "csrc"),
        *flags, *TORCH_NVCC_DEFINES, *WERROR,
    ]  # fmt: skip
    proc = run(cmd)
    return proc.returncode, proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="80,90", help="comma-separated SM versions")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--kernels-only", action="store_true", help="skip the host files")
    args = parser.parse_args()

    nvcc = find_nvcc()
    if nvcc is None:
        if os.environ.get("RESNET_FAST_SKIP_NVCC_GATE") == "1":
            print("nvcc gate: SKIPPED (nvcc not found, RESNET_FAST_SKIP_NVCC_GATE=1)")
            return 0
        print(
            "nvcc gate: FAILED: nvcc not found (PATH, $NVCC, $CUDA_HOME/bin). Install the CUDA "
            "toolkit or set RESNET_FAST_SKIP_NVCC_GATE=1 to skip this check.",
            file=sys.stderr,
        )
        return 1
    version = run([nvcc, "--version"]).stdout.strip().splitlines()[-1]
    print(f"nvcc gate: {nvcc} ({version})")

    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    sources = sorted(KERNELS.glob("*.cu"))
    host_files = [] if args.kernels_only else cuda_host_files()
    if not sources:
        print("nvcc gate: FAILED: no kernels in csrc/cuda/kernels", file=sys.stderr)
        return 1

    failures: list[str] = []
    start = time.time()
    with (
        tempfile.TemporaryDirectory() as tmp,
        concurrent.futures.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool,
    ):
        work = Path(tmp)
        futures = {}
        if host_files:
            flags, std, notes = torch_include_flags(work)
            for note in notes:
                print(f"nvcc gate: note: {note}")
            for i, src in enumerate(host_files):
                out = work / f"{i}.{src.stem}.host.o"
                fut = pool.submit(compile_host_file, nvcc, src, archs[-1], flags, std, out)
                futures[fut] = ("host", src, archs[-1])
        for src in sources:
            for arch in archs:
                out = work / f"{src.stem}.sm_{arch}.o"
                futures[pool.submit(compile_kernels, nvcc, src, arch, out)] = ("kernel", src, arch)

        kernels = []
        for fut in concurrent.futures.as_completed(futures):
            kind, src, arch = futures[fut]
            rel = src.relative_to(ROOT)
            if kind == "host":
                rc, log = fut.result()
                status = "ok" if rc == 0 else "FAILED"
                print(f"nvcc gate: host file {rel}: {status}")
                if rc != 0:
                    failures.append(f"{rel}: compile error")
                    print(_errors(log), file=sys.stderr)
                continue
            _, rc, log = fut.result()
            if rc != 0:
                failures.append(f"{rel} sm_{arch}: compile error")
                print(_errors(log), file=sys.stderr)
                continue
            found = parse_ptxas(log)
            if not found:
                failures.append(f"{rel} sm_{arch}: no ptxas report")
            for k in found:
                k["file"] = src.name
            kernels += found

    names = demangle(sorted({k["mangled"] for k in kernels}))
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for k in kernels:
        name = short_name(names[k["mangled"]])
        rows.setdefault((k["file"], name), {})[k["arch"]] = k
        if k["spill"] or k["frame"] or k["lmem"]:
            failures.append(
                f"{name} sm_{k['arch']}: {k['spill']} bytes spilled, {k['frame']} bytes stack "
                f"frame, {k['lmem']} bytes lmem"
            )

    header = ["file", "kernel"] + [f"regs sm_{a}" for a in archs] + ["smem B"]
    table = [header]
    for (file, name), per_arch in sorted(rows.items()):
        regs = [str(per_arch[a]["regs"]) if a in per_arch else "-" for a in archs]
        smem = max(v["smem"] for v in per_arch.values())
        table.append([file, name, *regs, str(smem)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))

    elapsed = time.time() - start
    if failures:
        print(f"nvcc gate: FAILED ({len(failures)} problems, {elapsed:.0f} s):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(
        f"nvcc gate: OK: {len(rows)} kernels x {len(archs)} architectures, no spills, no local "
        f"memory; {len(host_files)} host files compiled ({elapsed:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
