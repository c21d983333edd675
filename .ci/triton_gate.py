#!/usr/bin/env python3
"""Compile gate of the Triton kernels for sm_90 (H100), on a machine with no GPU.

1. Records every kernel launch the Triton backend makes for ResNet-50 in
   bf16, fp16 and fp32 (224x224, batch 1 and a training batch of 32; the
   batch decides which sizes divide by 16): every convolution geometry with
   its training (statistics) and inference (bias, residual, ReLU) epilogues,
   BatchNorm (+ add) (+ ReLU) forward and backward at every BN shape, the
   add + ReLU; fp32 under both of PyTorch's precision policies (TF32, the
   default, and IEEE fp32 with torch.backends.cudnn.allow_tf32 off).
   Kernels are not run: the autotuner's run() is replaced by a recorder
   that asks the autotuner which configs it may choose for that launch (its
   own pruning, on the launch's real arguments).
2. Compiles each distinct binary once, ahead of time, with Triton's compiler
   for GPUTarget("cuda", 90, 64). A binary depends on the kernel, its
   constexprs (the config's tiles included), warps, stages, argument dtypes
   and how the launch specializes its arguments: Triton's launcher turns an
   integer equal to 1 into a constant and marks integers and pointers
   divisible by 16 (a channels_last tensor's channel stride is 1; with C a
   multiple of 16 its other strides divide by 16, and its loads vectorize).
   The gate specializes each recorded launch with the launcher's own binder,
   so the binary compiled here is the one the GPU runs for that launch;
   shapes whose integers agree on both share it.
3. Reads each binary's resources: registers and spill stores/loads from
   ptxas's own report (Triton runs ptxas -v; TRITON_DUMP_PTXAS_LOG prints
   it), the stack frame from the cubin (cuobjdump, Triton's own; a frame
   holds spills and call frames alike, so it is shown, not judged), shared
   memory from Triton's metadata (what the launch asks for).

Prints a table (kernel, config, dtype, constexpr flags, the integers
specialized to 1 and those without the divisibility hint, regs, smem, spills,
stack) and exits non-zero on a compile error, on any spill store, or on
shared memory over the 227 KB an H100 block may use, in any config the
autotuner may choose.

    python .ci/triton_gate.py [--jobs 2] [--dtypes bf16,fp16,fp32,fp32-ieee]
                              [--batches 1,32] [--kernels _conv2d,_bn_act_fwd]
"""

import argparse
import concurrent.futures
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["TRITON_INTERPRET"] = "0"  # the GPU configs, not the interpreter's
# A fresh cache: every binary is compiled here, and the time printed is a
# fresh machine's.
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton_gate_")
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v: the spill counts

SMEM_LIMIT = 227 * 1024  # H100: the most dynamic shared memory one block may have
# fp32 twice: PyTorch's default TF32 policy and IEEE fp32 (allow_tf32 off).
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp32-ieee": "float32"}
# ResNet-50's convolutions: (C_in, C_out, kernel, stride, H_in, epilogue);
# padding k // 2. The epilogue of conv_bn_relu in eval (BN folded: a bias
# always): "relu" (stem, a bottleneck's conv1 / conv2), "res_relu" (conv3:
# + the shortcut, ReLU), "none" (the downsample). In training every one is
# conv + statistics, then the BN apply pass.
RESNET50_CONVS = [
    (3, 64, 7, 2, 224, "relu"),
    (64, 64, 1, 1, 56, "relu"), (64, 64, 3, 1, 56, "relu"), (64, 256, 1, 1, 56, "res_relu"),
    (64, 256, 1, 1, 56, "none"), (256, 64, 1, 1, 56, "relu"),
    (256, 128, 1, 1, 56, "relu"), (128, 128, 3, 2, 56, "relu"), (128, 512, 1, 1, 28, "res_relu"),
    (256, 512, 1, 2, 56, "none"), (512, 128, 1, 1, 28, "relu"), (128, 128, 3, 1, 28, "relu"),
    (512, 256, 1, 1, 28, "relu"), (256, 256, 3, 2, 28, "relu"), (256, 1024, 1, 1, 14, "res_relu"),
    (512, 1024, 1, 2, 28, "none"), (1024, 256, 1, 1, 14, "relu"), (256, 256, 3, 1, 14, "relu"),
    (1024, 512, 1, 1, 14, "relu"), (512, 512, 3, 2, 14, "relu"), (512, 2048, 1, 1, 7, "res_relu"),
    (1024, 2048, 1, 2, 14, "none"), (2048, 512, 1, 1, 7, "relu"), (512, 512, 3, 1, 7, "relu"),
]  # fmt: skip
# BatchNorm inputs: (C, H) after the stem and in each stage.
RESNET50_BN = [(64, 112), (64, 56), (256, 56), (128, 56), (128, 28), (512, 28), (256, 28),
               (256, 14), (1024, 14), (512, 14), (512, 7), (2048, 7)]  # fmt: skip


def record_launches(dtype_names: list[str], batches: list[int]) -> dict:
    """{binary key: binary description} for every launch of ResNet-50's ops."""
    import torch
    from triton.runtime.autotuner import Autotuner

    import resnet_fast.triton.backend as RT

    binaries: dict = {}

    def recorder(self, *args, grid, warmup, **kwargs):
        self.nargs = dict(zip(self.arg_names, args, strict=False))
        for config in self.prune_configs(kwargs):
            describe(self.fn, args, {**kwargs, **config.all_kwargs()}, binaries)

    Autotuner.run = recorder
    for name in dtype_names:
        dtype = getattr(torch, DTYPES[name])
        torch.backends.cudnn.allow_tf32 = name != "fp32-ieee"
        for n in batches:
            with torch.no_grad():
                _drive_convs(RT, torch, n, dtype)
            _drive_bn(RT, torch, n, dtype)
    torch.backends.cudnn.allow_tf32 = True
    return binaries


def _act(torch, n, c, h, dtype, grad=False):
    # Never written nor read: the kernels do not run.
    x = torch.empty(n, c, h, h, dtype=dtype, memory_format=torch.channels_last)
    return x.requires_grad_(grad)


def _drive_convs(RT, torch, n, dtype):
    for c_in, c_out, k, stride, h, epilogue in RESNET50_CONVS:
        x = _act(torch, n, c_in, h, dtype)
        w = _act(torch, c_out, c_in, k, dtype)
        h_out = (h + 2 * (k // 2) - k) // stride + 1
        res = _act(torch, n, c_out, h_out, dtype) if epilogue == "res_relu" else None
        stats = [torch.zeros(c_out), torch.ones(c_out), torch.ones(c_out), torch.zeros(c_out)]
        geometry = ([stride] * 2, [k // 2] * 2, [1, 1], 1)
        for training in (True, False):
            RT.conv_bn_act(
                x, w, None, *geometry, res, *stats, training, 0.1, 1e-5, epilogue != "none"
            )


def _drive_bn(RT, torch, n, dtype):
    ops = torch.ops.resnet_fast_triton
    for c, h in RESNET50_BN:
        for training in (True, False):
            # BN + ReLU, BN + add + ReLU (a block's last), BN alone (downsample).
            for residual, relu in ((False, True), (True, True), (False, False)):
                x, r = _act(torch, n, c, h, dtype, True), _act(torch, n, c, h, dtype, True)
                w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
                args = (w, b, torch.zeros(c), torch.ones(c), training, 0.1, 1e-5, relu)
                if residual:
                    y = ops.bn_add_act_fwd(x, r, *args)[0]
                else:
                    y = ops.bn_act_fwd(x, *args)[0]
                y.backward(torch.empty_like(y))
        x, r = _act(torch, n, c, h, dtype, True), _act(torch, n, c, h, dtype, True)
        y = ops.add_relu_fwd(x, r)
        y.backward(torch.empty_like(y))


def describe(fn, args, kwargs: dict, binaries: dict) -> None:
    """Records the binary Triton's launcher would compile for this launch.

    The arguments are specialized exactly as JITFunction.run specializes
    them (its binder and _pack_args): integers equal to 1 become constexprs,
    integers and pointers divisible by 16 get a divisibility hint. Those
    specializations decide vectorization and address arithmetic, so the
    binary compiled here is the one the GPU would run for this launch.
    """
    from triton.runtime.jit import create_function_from_signature

    binder = _BINDERS.get(fn)
    if binder is None:
        binder = _BINDERS[fn] = create_function_from_signature(fn.signature, fn.params, _backend())
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        _backend(), kwargs, bound, specialization, options
    )
    named = {fn.arg_names[path[0]]: value for path, value in constexprs.items()}
    key = (
        fn.__name__, tuple(signature.items()), repr(sorted(named.items())),
        repr(sorted(attrs.items())), options.num_warps, options.num_stages,
    )  # fmt: skip
    if key in binaries:
        return
    declared = {p.name for p in fn.params if p.is_constexpr}
    dtype = next(t[1:] for t in signature.values() if t.startswith(("*fp", "*bf")))
    if dtype == "fp32" and named.get("DOT_PRECISION") == "ieee":
        dtype = "fp32-ieee"
    tiles = {k: v for k, v in named.items() if k.startswith("BLOCK")}
    flags = {k: v for k, v in named.items() if k in declared and not k.startswith("BLOCK")}
    # How the launch specialized the integers: those equal to 1 and those
    # not divisible by 16 (the rest carry the divisibility hint).
    ints = [(i, k) for i, (k, t) in enumerate(signature.items()) if t in ("i32", "i64")]
    spec = ",".join(k for k in named if k not in declared)
    spec += " !16:" + ",".join(k for i, k in ints if not attrs.get((i,)))
    warps, stages = options.num_warps, options.num_stages
    binaries[key] = dict(
        src=(fn, signature, constexprs, attrs), options=options.__dict__, kernel=fn.__name__,
        dtype=dtype, flags=flags, spec=spec,
        config=" ".join(f"{k[6:] or k}={v}" for k, v in tiles.items()) + f" w{warps} s{stages}",
    )  # fmt: skip


_BINDERS: dict = {}


def _backend():
    """Triton's CUDA backend for sm_90 (built without a GPU)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    global _BACKEND
    if _BACKEND is None:
        _BACKEND = make_backend(GPUTarget("cuda", 90, 64))
    return _BACKEND


_BACKEND = None


# cuobjdump --dump-resource-usage, per function:
#   Function _conv2d_fwd_kernel:
#   REG:128 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:... TEXTURE:0 SURFACE:0 SAMPLER:0
USAGE_RE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
# ptxas -v: "ptxas info    : Function properties for k
#            ptxas .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
SPILL_RE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


_ITEMS: list[dict] = []  # the recorded binaries; forked workers inherit them


def compile_index(i: int) -> dict:
    return compile_one(_ITEMS[i])


def compile_one(item: dict) -> dict:
    """Compiles one binary; returns the item with regs, smem, spills or error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = {k: item[k] for k in ("kernel", "dtype", "config", "flags", "spec")}
    start = time.time()
    try:
        src = ASTSource(*item["src"])
        ptxas_log = io.StringIO()
        with contextlib.redirect_stdout(ptxas_log):
            compiled = triton.compile(
                src, target=GPUTarget("cuda", 90, 64), options=item["options"]
            )
        spills = SPILL_RE.search(ptxas_log.getvalue())
        if spills is None:
            raise RuntimeError(
                "no spill count in ptxas's report (this Triton does not print it under "
                f"TRITON_DUMP_PTXAS_LOG): {ptxas_log.getvalue()[-500:]!r}"
            )
        out["smem"] = compiled.metadata.shared
        tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            proc = subprocess.run(
                [str(tool), "--dump-resource-usage", str(cubin)], capture_output=True, text=True
            )
        usage = USAGE_RE.search(proc.stdout)
        if proc.returncode != 0 or usage is None:
            raise RuntimeError(f"cuobjdump: {proc.stdout[-1000:]}{proc.stderr[-1000:]}")
        out["regs"], out["stack"] = int(usage.group(1)), int(usage.group(2))
        out["spill"] = int(spills.group(1))
    except Exception as error:  # noqa: BLE001  (reported per binary, the gate fails)
        out["error"] = f"{type(error).__name__}: {str(error)[-1500:]}"
    out["seconds"] = time.time() - start
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--batches", default="1,32", help="batch sizes of the recorded launches")
    parser.add_argument(
        "--kernels", default="", help="compile only kernels whose name contains one of these"
    )
    args = parser.parse_args()
    start = time.time()
    binaries = record_launches(
        [d.strip() for d in args.dtypes.split(",")], [int(n) for n in args.batches.split(",")]
    )
    wanted = [k.strip() for k in args.kernels.split(",") if k.strip()]
    items = [b for b in binaries.values() if not wanted or any(k in b["kernel"] for k in wanted)]
    print(
        f"triton gate: {len(binaries)} distinct binaries recorded, {len(items)} to compile "
        f"({time.time() - start:.0f} s)"
    )
    _ITEMS[:] = items
    # fork: the workers inherit the recorded kernels (JITFunction objects).
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(
        max_workers=max(args.jobs, 1), mp_context=multiprocessing.get_context("fork")
    ) as pool:
        futures = [pool.submit(compile_index, i) for i in range(len(_ITEMS))]
        results = []
        for done in concurrent.futures.as_completed(futures):
            results.append(done.result())
            if len(results) % 50 == 0:
                print(f"triton gate: {len(results)} / {len(futures)} compiled", flush=True)
    failures = []
    header = ["kernel", "config", "dtype", "flags", "specialized", "regs", "smem B", "spill B",
              "stack B"]  # fmt: skip
    table = [header]
    order = lambda r: (r["kernel"], r["dtype"], r["config"], str(r["flags"]), r["spec"])  # noqa: E731
    for r in sorted(results, key=order):
        flags = ",".join(f"{k}={_short(v)}" for k, v in r["flags"].items())
        what = f"{r['kernel']} {r['config']} {r['dtype']} {flags} {r['spec']}"
        row = [r["kernel"], r["config"], r["dtype"], flags, r["spec"]]
        if "error" in r:
            failures.append(f"{what}: compile error: {r['error']}")
            table.append(row + ["ERR", "-", "-", "-"])
            continue
        table.append(row + [str(r[k]) for k in ("regs", "smem", "spill", "stack")])
        if r["spill"]:
            failures.append(f"{what}: {r['spill']} B spill stores ({r['stack']} B stack frame)")
        if r["smem"] > SMEM_LIMIT:
            failures.append(f"{what}: {r['smem']} B shared memory > {SMEM_LIMIT}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    elapsed = time.time() - start
    if failures:
        print(f"triton gate: FAILED ({len(failures)} problems, {elapsed:.0f} s):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    regs = max((r["regs"] for r in results), default=0)
    print(
        f"triton gate: OK: {len(results)} binaries for sm_90, no spills, at most {regs} "
        f"registers, shared memory within {SMEM_LIMIT // 1024} KB ({elapsed:.0f} s)"
    )
    return 0


def _short(value) -> str:
    text = str(value)
    return text.replace("triton.language.", "").replace("fp32", "f32")


if __name__ == "__main__":
    sys.exit(main())
