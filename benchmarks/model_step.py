"""Model-level CPU benchmark: a training step (forward, backward, SGD) and
inference of resnet_fast models vs the same architecture in eager PyTorch and
vs torch.compile of the eager model, side by side in one process.

    python benchmarks/model_step.py [--models resnet50] [--batch 16] [--resolution 64]
        [--no-compile] [--json FILE]

channels_last, fp32. Every model starts from the same weights; the fast
model's logits are checked against eager's before timing.
"""

import argparse
import json

import torch
from timing import time_ms
from torch import nn

import resnet_fast
import resnet_fast.models as M
from resnet_fast.models.reference import reference_model


def _train_step(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _infer(model, x):
    def run():
        with torch.no_grad():
            model(x)

    return run


def bench_model(name, args):
    cl = torch.channels_last
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, generator=g).contiguous(
        memory_format=cl
    )
    y = torch.randint(0, 1000, (args.batch,), generator=g)
    torch.manual_seed(0)
    variants = {"fast": getattr(M, name)().to(memory_format=cl)}
    torch.manual_seed(0)
    variants["eager"] = reference_model(name).to(memory_format=cl)
    with torch.no_grad():
        variants["fast"].eval(), variants["eager"].eval()
        err = (variants["fast"](x) - variants["eager"](x)).abs().max().item()
    if args.compile:
        torch.manual_seed(0)
        variants["compile"] = torch.compile(reference_model(name).to(memory_format=cl))
    row = {"model": name, "max_abs_logit_diff_eval": err}
    for label, model in variants.items():
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        row[f"train_{label}_ms"] = time_ms(_train_step(model, opt, x, y), args.rounds, args.warmup)
        model.eval()
        row[f"infer_{label}_ms"] = time_ms(_infer(model, x), args.rounds, args.warmup)
    for kind in ("train", "infer"):
        for other in [v for v in variants if v != "fast"]:
            row[f"{kind}_speedup_vs_{other}"] = (
                row[f"{kind}_{other}_ms"][0] / row[f"{kind}_fast_ms"][0]
            )
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__} | CPU kernels {resnet_fast.build_info()['cpu_capability']} | "
        f"threads {torch.get_num_threads()} | batch {args.batch} | "
        f"{args.resolution}x{args.resolution} | channels_last fp32 | min (median) ms"
    )
    rows = []
    for name in args.models.split(","):
        row = bench_model(name, args)
        rows.append(row)
        print(f"{name}: eval logits max |fast - eager| = {row['max_abs_logit_diff_eval']:.2e}")
        for kind in ("train", "infer"):
            cells = [
                f"{label} {row[f'{kind}_{label}_ms'][0]:.1f} ({row[f'{kind}_{label}_ms'][1]:.1f})"
                for label in ("fast", "eager", "compile")
                if f"{kind}_{label}_ms" in row
            ]
            ratios = [
                f"x{row[k]:.2f} vs {k.split('_vs_')[1]}"
                for k in row
                if k.startswith(f"{kind}_speedup")
            ]
            print(f"  {kind:5}: " + " | ".join(cells) + "   fast " + ", ".join(ratios))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"torch": torch.__version__, "settings": vars(args), "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
