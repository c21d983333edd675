"""The GPU check of the CUDA and Triton backends, on a machine with a GPU, in
two commands of under 8 minutes each (a lent machine: 15 minutes in all, its
start included, at most 10 per command):

    python .ci/gpu_check.py --command 1 --out $OUT/part1   # build, tests
    python .ci/gpu_check.py --command 2 --out $OUT/part2   # sanitize, benchmarks
    python .ci/gpu_check.py --out DIR \\
        --merge $OUT/part1/gpu_check.json $OUT/part2/gpu_check.json

Steps, and their budget (estimated from CPU equivalents measured on the
2-core CI machine, scaled to the GPU machine's 16 cores; each step has a
hard timeout, so a command cannot outrun its 8 minutes):

command 1
1. build (timeout 270 s; estimate 2-4 min): the extension with its CUDA
   kernels, in place (RESNET_FAST_CUDA=1, TORCH_CUDA_ARCH_LIST = this GPU's
   architecture unless set, MAX_JOBS = the cores). CPU equivalent: the
   sm_90 build of CI stage 2 (.ci/cuda_stage), 20 translation units at
   MAX_JOBS=2 in 303 s (measured 2026-12-03); on 16 cores the slowest unit
   (about a minute) bounds it.
2. tests (timeout 180 s; estimate 1-3 min): the tests marked cuda or triton
   only (the CPU suite runs in CI), pytest-xdist with 8 workers. Their cost
   on a GPU is Triton's compilation: CI's Triton gate compiles the 1065
   distinct binaries ResNet-50 launches in 386 s on two cores (about 0.7 s
   each per core, measured 2026-12-03); the tests launch
   far fewer (small shapes, one config per launch after autotuning on a
   GPU), spread over 8 workers, plus CUDA tests that take seconds.
command 2
3. sanitize (timeout 150 s; estimate 1-2 min): compute-sanitizer memcheck
   over a slice of the CUDA op tests (small shapes; memcheck slows kernels
   10-100x; on the CPU these tests take seconds).
4. bench (timeout 90 s): benchmarks/cuda_bandwidth.py (bandwidth, speed-ups).
5. triton (timeout 120 s): benchmarks/triton_gpu.py (Triton conv epilogues
   vs cuDNN and torch.compile max-autotune, Triton BN bandwidth).
6. models (timeout 90 s): resnet-fast bench --device cuda --compile --quick
   (fast vs eager vs torch.compile, training step and inference, peak
   memory; about 2 min on the 2-core CPU at its CPU sizes).

Writes a JSON summary (GPU, versions, commit, pass counts, sanitizer verdict,
benchmark rows) to OUT/gpu_check.json, OUT from --out or $OUT. Exit status:
non-zero when a step fails or runs out of time.

    python .ci/gpu_check.py [--steps build,tests,...] [--out DIR]
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The op tests under memcheck: small shapes, every op and layout class, both
# dtypes families; memcheck slows kernels down 10-100x.
SANITIZE_TESTS = [
    "tests/test_cuda_kernels.py",
    "tests/test_batch_norm.py::test_forward_backward_running_stats",
    "tests/test_batch_norm.py::test_optional_parameters",
    "tests/test_add_relu.py::test_forward_backward",
]
SANITIZE_FILTER = "cuda and not 2x64x56x56 and not 2x512 and not 2x1024 and not 2x2048"


def sh(cmd: list[str], log: Path, env: dict | None = None, timeout: float | None = None) -> int:
    print(f"+ {' '.join(cmd)}", flush=True)
    start = time.time()
    with open(log, "w") as f:
        # Its own process group: on a timeout the whole tree goes (xdist
        # workers, ninja/nvcc, the program under compute-sanitizer), so
        # nothing of one step runs on into the next.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
    print(f"  rc={rc} in {time.time() - start:.0f} s (log: {log.name})", flush=True)
    return rc


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def versions() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "capability": ".".join(map(str, torch.cuda.get_device_capability()))
        if torch.cuda.is_available()
        else None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    driver = ["--query-gpu=driver_version", "--format=csv,noheader"]
    for tool, args in (("nvcc", ["--version"]), ("nvidia-smi", driver)):
        path = shutil.which(tool)
        out = (
            subprocess.run([path, *args], capture_output=True, text=True, timeout=60).stdout
            if path
            else ""
        )
        info[tool] = out.strip().splitlines()[-1] if out.strip() else None
    return info


def commit() -> str | None:
    if os.environ.get("RESNET_FAST_COMMIT"):
        return os.environ["RESNET_FAST_COMMIT"]
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


# (steps, seconds each may take) of the two commands; each adds up to < 8 min.
COMMANDS = {
    "1": [("build", 270), ("tests", 180)],
    "2": [("sanitize", 150), ("bench", 90), ("triton", 120), ("models", 90)],
}
TIMEOUTS = dict(COMMANDS["1"] + COMMANDS["2"])
# The GPU's tests: the CPU suite runs in CI, not here.
GPU_TESTS = "cuda or triton"


def step_build(out: Path) -> dict:
    import torch

    env = dict(os.environ, RESNET_FAST_CUDA="1")
    if "TORCH_CUDA_ARCH_LIST" not in env and torch.cuda.is_available():
        env["TORCH_CUDA_ARCH_LIST"] = ".".join(map(str, torch.cuda.get_device_capability()))
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    log = out / "build.log"
    rc = sh([sys.executable, "setup.py", "build_ext", "--inplace"], log, env, TIMEOUTS["build"])
    info = subprocess.run(
        [sys.executable, "-c", "import resnet_fast; print(resnet_fast.build_info())"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    built = rc == 0 and "'cuda'" in info.stdout
    return {"ok": built, "rc": rc, "build_info": info.stdout.strip() or info.stderr[-2000:],
            "arch_list": env.get("TORCH_CUDA_ARCH_LIST"),
            "log_tail": "" if built else tail(log)}  # fmt: skip


def junit_counts(path: Path) -> dict:
    """passed / failed / errors / skipped over all tests, and over the CUDA
    cases alone (those with "cuda" in their id or file name)."""
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    counts["cuda"] = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    counts["failures"] = []
    if not path.exists():
        return counts
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None:
            status = "failed"
        elif case.find("error") is not None:
            status = "errors"
        elif case.find("skipped") is not None:
            status = "skipped"
        else:
            status = "passed"
        name = f"{case.get('classname')}::{case.get('name')}"
        counts[status] += 1
        if "cuda" in name:
            counts["cuda"][status] += 1
        if status in ("failed", "errors") and len(counts["failures"]) < 30:
            counts["failures"].append(name)
    return counts


def step_tests(out: Path, workers: int) -> dict:
    junit = out / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"]
    cmd += ["-m", GPU_TESTS, f"--junitxml={junit}"]
    if workers > 1:
        cmd += ["-n", str(workers)]  # pytest-xdist
    rc = sh(cmd, out / "tests.log", timeout=TIMEOUTS["tests"])
    return {"ok": rc == 0, "rc": rc, **junit_counts(junit), "log_tail": tail(out / "tests.log", 30)}


def step_sanitize(out: Path) -> dict:
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        return {"ok": False, "rc": None, "error": "compute-sanitizer not found"}
    log = out / "sanitize.log"
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "99", "--target-processes", "all"]
    cmd += [sys.executable, "-m", "pytest", *SANITIZE_TESTS, "-q", "-p", "no:cacheprovider"]
    cmd += ["-k", SANITIZE_FILTER]
    rc = sh(cmd, log, timeout=TIMEOUTS["sanitize"])
    text = log.read_text(errors="replace")
    summary = [ln for ln in text.splitlines() if "ERROR SUMMARY" in ln]
    return {"ok": rc == 0, "rc": rc, "error_summary": summary[-3:], "log_tail": tail(log, 25)}


def step_json(out: Path, name: str, cmd: list[str], result: Path) -> dict:
    """Runs a benchmark command that writes the JSON file ``result``."""
    rc = sh(cmd, out / f"{name}.log", timeout=TIMEOUTS[name])
    data = json.loads(result.read_text()) if result.exists() else None
    return {"ok": rc == 0 and data is not None, "rc": rc, "results": data,
            "log_tail": "" if rc == 0 else tail(out / f"{name}.log")}  # fmt: skip


def step_bench(out: Path, extra: list[str]) -> dict:
    result = out / "bench.json"
    cmd = [sys.executable, "benchmarks/cuda_bandwidth.py", "--json", str(result), *extra]
    return step_json(out, "bench", cmd, result)


def step_triton(out: Path) -> dict:
    result = out / "triton.json"
    cmd = [sys.executable, "benchmarks/triton_gpu.py", "--json", str(result)]
    return step_json(out, "triton", cmd, result)


def step_models(out: Path) -> dict:
    folder = out / "models"
    cmd = [sys.executable, "-m", "resnet_fast", "bench", "--device", "cuda", "--compile", "--quick"]
    cmd += ["--no-progress", "--out", str(folder)]
    return step_json(out, "models", cmd, folder / "bench-cuda.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", choices=sorted(COMMANDS), help="one of the two commands")
    parser.add_argument("--steps", default="build,tests,sanitize,bench,triton,models")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks/results"))
    parser.add_argument("--workers", type=int, default=8, help="pytest-xdist workers (1: none)")
    parser.add_argument("--bench-args", default="", help="extra arguments of cuda_bandwidth.py")
    parser.add_argument("--merge", nargs="*", help="gpu_check.json files to combine")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.merge:
        summary: dict = {"steps": {}}
        for part in args.merge:
            data = json.loads(Path(part).read_text())
            summary.update({k: v for k, v in data.items() if k != "steps"})
            summary["steps"].update(data["steps"])
    else:
        summary = {"versions": versions(), "commit": commit(), "steps": {}}
        summary["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        steps = [n for n, _ in COMMANDS[args.command]] if args.command else args.steps.split(",")
        for step in steps:
            if step == "build":
                summary["steps"]["build"] = step_build(out)
            elif step == "tests":
                summary["steps"]["tests"] = step_tests(out, args.workers)
            elif step == "sanitize":
                summary["steps"]["sanitize"] = step_sanitize(out)
            elif step == "bench":
                summary["steps"]["bench"] = step_bench(out, args.bench_args.split())
            elif step == "triton":
                summary["steps"]["triton"] = step_triton(out)
            elif step == "models":
                summary["steps"]["models"] = step_models(out)
            else:
                parser.error(f"unknown step {step!r}")
            (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    summary["ok"] = all(s.get("ok") for s in summary["steps"].values())
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    for name, s in summary["steps"].items():
        counts = {k: s[k] for k in ("passed", "failed", "errors", "skipped") if k in s}
        print(f"{name:9} {'ok' if s.get('ok') else 'FAILED'} {counts or ''}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
