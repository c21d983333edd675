#!/usr/bin/env python3
"""Compile gate of the Triton kernels for sm_90 (H100), on a machine with no GPU.

1. Records every kernel launch the Triton backend makes for ResNet-50 in
   bf16, fp16 and fp32 (batch 1, 224x224): every convolution geometry with
   its training (statistics) and inference (bias, residual, ReLU) epilogues,
   BatchNorm (+ add) (+ ReLU) forward and backward at every BN shape, the
   add + ReLU; fp32 under both of PyTorch's precision policies (TF32, the
   default, and IEEE fp32 with torch.backends.cudnn.allow_tf32 off).
   Kernels are not run: the autotuner's run() is replaced by a recorder
   that asks the autotuner which configs it may choose for that launch (its
   own pruning, on the launch's real arguments).
2. Compiles each distinct binary once, ahead of time, with Triton's compiler
   for GPUTarget("cuda", 90, 64). A binary depends on the kernel, its
   constexprs (the config's tiles included), warps, stages and argument
   dtypes, not on the shape: the integer arguments are compiled unspecialized
   (no divisibility hints) and the pointers 16-byte aligned (as torch
   allocates them), so every shape shares it.
3. Reads each binary's resources: registers and spill stores/loads from
   ptxas's own report (Triton runs ptxas -v; TRITON_DUMP_PTXAS_LOG prints
   it), the stack frame from the cubin (cuobjdump, Triton's own; a frame
   holds spills and call frames alike, so it is shown, not judged), shared
   memory from Triton's metadata (what the launch asks for).

Prints a table (kernel, config, dtype, regs, smem, spills, stack) and exits
non-zero on a compile error, on any spill store, or on shared memory over the
227 KB an H100 block may use, in any config the autotuner may choose.

    python .ci/triton_gate.py [--jobs 2] [--dtypes bf16,fp16,fp32]
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


def record_launches(dtype_names: list[str]) -> dict:
    """{binary key: binary description} for every launch of ResNet-50's ops."""
    import torch
    from triton.runtime.autotuner import Autotuner

    import resnet_fast.triton as RT

    binaries: dict = {}

    def recorder(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args, strict=False))
        for config in self.prune_configs(kwargs):
            describe(self.fn, args, {**kwargs, **config.all_kwargs()}, binaries)

    Autotuner.run = recorder
    for name in dtype_names:
        dtype = getattr(torch, DTYPES[name])
        torch.backends.cudnn.allow_tf32 = name != "fp32-ieee"
        with torch.no_grad():
            _drive_convs(RT, torch, dtype)
        _drive_bn(RT, torch, dtype)
    torch.backends.cudnn.allow_tf32 = True
    return binaries


def _act(torch, c, h, dtype, grad=False):
    x = torch.empty(1, c, h, h, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(grad)


def _drive_convs(RT, torch, dtype):
    for c_in, c_out, k, stride, h, epilogue in RESNET50_CONVS:
        x = _act(torch, c_in, h, dtype)
        w = torch.empty(c_out, c_in, k, k, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        h_out = (h + 2 * (k // 2) - k) // stride + 1
        res = _act(torch, c_out, h_out, dtype) if epilogue == "res_relu" else None
        stats = [torch.zeros(c_out), torch.ones(c_out), torch.ones(c_out), torch.zeros(c_out)]
        geometry = ([stride] * 2, [k // 2] * 2, [1, 1], 1)
        for training in (True, False):
            RT.conv_bn_act(
                x, w, None, *geometry, res, *stats, training, 0.1, 1e-5, epilogue != "none"
            )


def _drive_bn(RT, torch, dtype):
    for c, h in RESNET50_BN:
        for training in (True, False):
            # BN + ReLU, BN + add + ReLU (a block's last), BN alone (downsample).
            for residual, relu in ((False, True), (True, True), (False, False)):
                x, r = _act(torch, c, h, dtype, True), _act(torch, c, h, dtype, True)
                w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
                stats = [torch.zeros(c), torch.ones(c), w, b]
                res = r if residual else None
                y = RT.batch_norm_act(x, res, *stats, training, 0.1, 1e-5, relu)
                y.backward(torch.empty_like(y))
        x, r = _act(torch, c, h, dtype, True), _act(torch, c, h, dtype, True)
        y = RT.add_relu(x, r)
        y.backward(torch.empty_like(y))


def _sig_type(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + {
            torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
            torch.float64: "fp64", torch.int64: "i64", torch.int32: "i32", torch.bool: "i1",
        }[value.dtype]  # fmt: skip
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unexpected kernel argument {value!r}")


def describe(fn, args, constexpr_and_config: dict, binaries: dict) -> None:
    names = fn.arg_names
    values = dict(zip(names, args, strict=False))
    values.update(constexpr_and_config)
    warps = values.pop("num_warps", 4)
    stages = values.pop("num_stages", 3)
    for extra in ("num_ctas", "maxnreg", "num_buffers_warp_spec", "num_consumer_groups",
                  "reg_dec_producer", "reg_inc_consumer", "ir_override"):  # fmt: skip
        values.pop(extra, None)
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        name = names[i]
        if param.is_constexpr:
            signature[name] = "constexpr"
            constexprs[name] = values[name]
        else:
            signature[name] = _sig_type(values[name])
            if signature[name].startswith("*"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    key = (fn.__name__, tuple(signature.items()), repr(sorted(constexprs.items())), warps, stages)
    if key not in binaries:
        dtype = next(t[1:] for t in signature.values() if t.startswith("*fp") or t == "*bf16")
        if dtype == "fp32" and constexprs.get("DOT_PRECISION") == "ieee":
            dtype = "fp32-ieee"
        tiles = {k: v for k, v in constexprs.items() if k.startswith("BLOCK")}
        flags = {k: v for k, v in constexprs.items() if not k.startswith("BLOCK")}
        binaries[key] = dict(
            fn=fn, signature=signature, constexprs=constexprs, attrs=attrs, warps=warps,
            stages=stages, kernel=fn.__name__, dtype=dtype,
            config=" ".join(f"{k[6:] or k}={v}" for k, v in tiles.items()) + f" w{warps} s{stages}",
            flags=flags,
        )  # fmt: skip


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

    out = {k: item[k] for k in ("kernel", "dtype", "config", "flags")}
    start = time.time()
    try:
        src = ASTSource(item["fn"], item["signature"], item["constexprs"], item["attrs"])
        ptxas_log = io.StringIO()
        with contextlib.redirect_stdout(ptxas_log):
            compiled = triton.compile(
                src,
                target=GPUTarget("cuda", 90, 64),
                options={"num_warps": item["warps"], "num_stages": item["stages"]},
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
    args = parser.parse_args()
    start = time.time()
    binaries = record_launches([d.strip() for d in args.dtypes.split(",")])
    print(f"triton gate: {len(binaries)} distinct binaries recorded ({time.time() - start:.0f} s)")
    _ITEMS[:] = binaries.values()
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
    header = ["kernel", "config", "dtype", "flags", "regs", "smem B", "spill B", "stack B"]
    table = [header]
    for r in sorted(results, key=lambda r: (r["kernel"], r["dtype"], r["config"], str(r["flags"]))):
        flags = ",".join(f"{k}={_short(v)}" for k, v in r["flags"].items())
        what = f"{r['kernel']} {r['config']} {r['dtype']} {flags}"
        if "error" in r:
            failures.append(f"{what}: compile error: {r['error']}")
            table.append([r["kernel"], r["config"], r["dtype"], flags, "ERR", "-", "-", "-"])
            continue
        table.append([r["kernel"], r["config"], r["dtype"], flags,
                      *(str(r[k]) for k in ("regs", "smem", "spill", "stack"))])  # fmt: skip
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
    print(
        f"triton gate: OK: {len(results)} binaries for sm_90, no spills, shared memory "
        f"within {SMEM_LIMIT // 1024} KB ({elapsed:.0f} s)"
    )
    return 0


def _short(value) -> str:
    text = str(value)
    return text.replace("triton.language.", "").replace("fp32", "f32")


if __name__ == "__main__":
    sys.exit(main())
