"""The fused ops in each ISA build of the CPU kernels, side by side: shows that
the vector build is the one in use and what it buys over the portable build.

    python benchmarks/isa_compare.py [--json benchmarks/results/cpu_isa.json]

Each build runs in its own process (RESNET_FAST_CPU_CAPABILITY caps the
choice, read once per process), on ResNet-50 shapes at batch 16, fp32,
channels_last, training mode, with torch.inference_mode() around the raw ops
so that only kernel time is measured.
"""

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, time, torch, resnet_fast
ops = torch.ops.resnet_fast
def best(fn, n=30):
    for _ in range(5): fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts) * 1e3
rows = []
with torch.inference_mode():
    for c, h in [(64, 56), (512, 28), (2048, 7)]:
        x = torch.randn(16, c, h, h).contiguous(memory_format=torch.channels_last)
        g, r = torch.randn_like(x), torch.randn_like(x)
        w, b, rm, rv = torch.rand(c) + 0.5, torch.randn(c), torch.zeros(c), torch.ones(c)
        _, m, i = ops.bn_act_fwd(x, w, b, rm, rv, True, 0.1, 1e-5, True)
        rows.append({
            "C": c, "H": h,
            "bn_act_fwd_ms": best(lambda: ops.bn_act_fwd(x, w, b, rm, rv, True, 0.1, 1e-5, True)),
            "bn_act_bwd_ms": best(lambda: ops.bn_act_bwd(g, x, w, b, m, i, True, True)),
            "add_relu_fwd_ms": best(lambda: ops.add_relu_fwd(x, r)),
        })
print(json.dumps({"selected": resnet_fast.build_info()["cpu_capability"], "rows": rows}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    for cap in ("default", "avx2", "avx512"):
        env = {**os.environ, "RESNET_FAST_CPU_CAPABILITY": cap}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(out.returncode)
        results[cap] = json.loads(out.stdout)
    print(
        f"{'build asked':12} {'ran':8} {'C':>5} {'H':>3} {'bn fwd ms':>10} {'bn bwd ms':>10} "
        f"{'add_relu ms':>12}"
    )
    for cap, res in results.items():
        for row in res["rows"]:
            print(
                f"{cap:12} {res['selected']:8} {row['C']:5d} {row['H']:3d} "
                f"{row['bn_act_fwd_ms']:10.3f} "
                f"{row['bn_act_bwd_ms']:10.3f} {row['add_relu_fwd_ms']:12.3f}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
