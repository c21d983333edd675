"""Memory-lean vs standard blocks: saved activation bytes per image and the
training-step time, next to eager PyTorch, in one process.

    python benchmarks/memory_modes.py [--models resnet18,resnet50] [--batch 16]
        [--resolution 64] [--rounds 15] [--json FILE]

Saved bytes are counted at 224x224 with batch 1 (exact, deterministic:
resnet_fast.profiling.saved_activations, one count per storage, parameters
excluded). Step times (forward, backward, SGD step; channels_last fp32) are
interleaved: every round times each variant once, so a noisy machine moves
all of them alike; the table gives the median over rounds.
"""

import contextlib
import statistics
import time

import torch
from torch import nn

import resnet_fast
import resnet_fast.models as M
from resnet_fast.conv import gemm
from resnet_fast.harness.cli import model_step_parser
from resnet_fast.harness.report import dump_json_if_asked
from resnet_fast.models.plain import plain_model
from resnet_fast.profiling import saved_activations

VARIANTS = ("lean", "lean-onednn", "standard", "eager")
"""lean-onednn: the lean blocks with every convolution on oneDNN (no GEMM
path, resnet_fast/conv/gemm.py), which isolates the cost of the recomputation."""


def _model(name: str, variant: str) -> nn.Module:
    torch.manual_seed(0)
    if variant == "eager":
        return plain_model(name)
    return getattr(M, name)(memory=variant.split("-")[0])


@contextlib.contextmanager
def _gemm_mode(variant: str):
    previous = gemm.MODE
    gemm.MODE = "never" if variant == "lean-onednn" else previous
    try:
        yield
    finally:
        gemm.MODE = previous


def saved_bytes_per_image(name: str, variant: str, resolution: int = 224) -> int:
    model = _model(name, variant).train()
    x = torch.randn(1, 3, resolution, resolution)
    out, saved = saved_activations(model, x, exclude=model.parameters())
    del out
    return saved.bytes


def step_times_ms(name: str, args) -> dict[str, float]:
    cl = torch.channels_last
    x = torch.randn(args.batch, 3, args.resolution, args.resolution).contiguous(memory_format=cl)
    y = torch.randint(0, 1000, (args.batch,))
    steps = {}
    for variant in VARIANTS:
        model = _model(name, variant).to(memory_format=cl).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step(model=model, opt=opt, variant=variant):
            opt.zero_grad(set_to_none=True)
            with _gemm_mode(variant):
                nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        steps[variant] = step
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for round_ in range(args.warmup + args.rounds):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= args.warmup:
                times[variant].append((time.perf_counter() - start) * 1e3)
    return {v: statistics.median(t) for v, t in times.items()}


def main() -> None:
    parser = model_step_parser(__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__} | CPU kernels {resnet_fast.build_info()['cpu_capability']} | "
        f"threads {torch.get_num_threads()} | step: batch {args.batch}, "
        f"{args.resolution}x{args.resolution}, channels_last fp32 | saved: 224x224"
    )
    rows = []
    for name in args.models.split(","):
        saved = {v: saved_bytes_per_image(name, v) for v in VARIANTS if v != "lean-onednn"}
        saved["lean-onednn"] = saved["lean"]  # the same node saves the same tensors
        ms = step_times_ms(name, args)
        row = {"model": name, "saved_bytes_per_image": saved, "step_ms_median": ms}
        rows.append(row)
        print(f"{name}:")
        for v in VARIANTS:
            print(
                f"  {v:11} saved {saved[v] / 2**20:7.2f} MiB/image "
                f"({saved[v] / saved['eager']:.3f} x eager)   step {ms[v]:7.1f} ms "
                f"({ms[v] / ms['standard']:.3f} x standard)"
            )
    meta = {"torch": torch.__version__, "build": resnet_fast.build_info()}
    dump_json_if_asked(args.json, {**meta, "settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
