"""Block level: each distinct residual block of ResNet-18 / ResNet-50 at the
model benchmark's setting (64x64 input, batch 16, channels_last, fp32), the
resnet_fast block vs the same block in eager PyTorch and vs torch.compile of
the eager block, interleaved round by round in one process. Training is
forward + backward of the block (its input requires grad, as inside a
network); inference is a no-grad eval forward.

    python benchmarks/block_step.py [--models resnet18,resnet50] [--batch 16]
        [--resolution 64] [--rounds 15] [--no-compile] [--json FILE]
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import resnet_fast.models as fast_models
from resnet_fast.harness.cli import model_step_parser
from resnet_fast.harness.environment import set_threads, steady_allocator
from resnet_fast.harness.report import write_benchmark_json
from resnet_fast.harness.timing import interleaved_ms, summarize
from resnet_fast.models.plain import plain_model

CPU = torch.device("cpu")


def distinct_blocks(name: str, batch: int, resolution: int) -> list[tuple[str, tuple, nn.Module]]:
    """(label, input shape, eager block) of the first and the second block
    of every stage (a projection block and an identity block)."""
    model = plain_model(name)
    found: dict[str, tuple[tuple, nn.Module]] = {}
    hooks = []

    def record(label):
        def hook(block, args):
            found.setdefault(label, (tuple(args[0].shape), block))

        return hook

    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for index in (0, 1):
            block = getattr(model, stage)[index]
            hooks.append(block.register_forward_pre_hook(record(f"{stage}.{index}")))
    with torch.no_grad():
        model(torch.randn(batch, 3, resolution, resolution))
    for h in hooks:
        h.remove()
    return [(label, shape, block) for label, (shape, block) in found.items()]


def _fast_twin(name: str, label: str, eager_block: nn.Module) -> nn.Module:
    """The resnet_fast block at the same place, with the eager block's weights."""
    stage, index = label.split(".")
    fast = getattr(getattr(fast_models, name)(), stage)[int(index)]
    fast.load_state_dict(eager_block.state_dict())
    return fast


def bench_block(name, label, shape, eager_block, rounds, compile_) -> dict:
    cl = torch.channels_last
    variants = {"fast": _fast_twin(name, label, eager_block), "eager": eager_block}
    if compile_:
        # Every block shares one forward code object: a fresh dynamo state per
        # block keeps its compilations from counting against the others'
        # recompile limit (past it, dynamo would silently run eager).
        torch._dynamo.reset()
        variants["compile"] = torch.compile(copy.deepcopy(eager_block))
    variants = {k: m.to(memory_format=cl) for k, m in variants.items()}
    x = torch.randn(shape).contiguous(memory_format=cl)
    grad = None
    row: dict = {"model": name, "block": label, "input": list(shape)}
    for mode in ("train", "infer"):
        for m in variants.values():
            m.train(mode == "train")

        def make(module, mode=mode):
            if mode == "infer":

                def infer():
                    with torch.no_grad():
                        module(x)

                return infer
            xr = x.detach().clone().requires_grad_()

            def train():
                nonlocal grad
                out = module(xr)
                if grad is None:
                    grad = torch.randn_like(out)
                out.backward(grad)
                xr.grad = None
                for p in module.parameters():
                    p.grad = None

            return train

        times = interleaved_ms({k: make(m) for k, m in variants.items()}, CPU, rounds, 3)
        medians = {k: summarize(v)["median_ms"] for k, v in times.items()}
        row[mode] = {
            "median_ms": medians,
            **{f"fast_vs_{k}": medians[k] / medians["fast"] for k in medians if k != "fast"},
        }
    return row


def main() -> None:
    parser = model_step_parser(__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    print(f"{threads} threads, allocator: {steady_allocator()}, batch {args.batch}, "
          f"{args.resolution}x{args.resolution}, fp32, channels_last")  # fmt: skip
    columns = ["eager"] + ([] if args.no_compile else ["compile"])
    header = f"{'model':9} {'block':9} {'input':>18} | " + " | ".join(
        f"{mode} ms fast " + " ".join(f"{c:>7}" for c in columns) + " vs " + " ".join(columns)
        for mode in ("train", "infer")
    )
    print(header)
    rows = []
    for name in args.models.split(","):
        for label, shape, block in distinct_blocks(name, args.batch, args.resolution):
            row = bench_block(name, label, shape, block, args.rounds, not args.no_compile)
            rows.append(row)
            cells = []
            for mode in ("train", "infer"):
                med = row[mode]["median_ms"]
                cells.append(
                    f"{med['fast']:13.2f} " + " ".join(f"{med[c]:7.2f}" for c in columns) + "    "
                    + " ".join(f"{row[mode]['fast_vs_' + c]:.2f}x" for c in columns)
                )  # fmt: skip
            print(f"{name:9} {label:9} {str(tuple(shape)):>18} | " + " | ".join(cells))
    if args.json:
        command = (
            f"python benchmarks/block_step.py --models {args.models} --batch {args.batch} "
            f"--resolution {args.resolution} --rounds {args.rounds}"
            + (" --no-compile" if args.no_compile else "")
        )
        print(f"wrote {write_benchmark_json(args.json, 'block_step', command, rows, CPU)}")


if __name__ == "__main__":
    main()
