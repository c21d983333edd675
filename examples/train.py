"""Trains a fast ResNet with DistributedDataParallel and synchronized fused
BatchNorm, next to the same network in plain PyTorch, and prints both
models' test accuracy after every epoch.

    # 2 CPU processes (gloo); on a machine with GPUs, one process per GPU (NCCL)
    torchrun --standalone --nproc-per-node=2 examples/train.py
    torchrun --standalone --nproc-per-node=2 examples/train.py --synthetic --epochs 2

Data: scikit-learn's handwritten digits (1797 8x8 images, 10 classes; they
ship with the package), upsampled to --image-size and split 80/20 into
train and test; or, with --synthetic, random class templates plus noise.
Needs `pip install scikit-learn tqdm` (scikit-learn not with --synthetic).

Models: resnet_fast.models.resnet20 (He et al.'s CIFAR ResNet-20, fused
blocks; its BatchNorms made synchronized by resnet_fast.convert_sync_batchnorm)
and resnet_fast.models.reference's resnet20 (plain PyTorch, the same initial
weights; torch.nn.SyncBatchNorm on GPUs, per-process BatchNorm statistics on
CPUs, where torch.nn.SyncBatchNorm does not run). Both see the same batches.
Run as a plain `python examples/train.py`, it trains in one process.
"""

import argparse
import gc
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import resnet_fast
from resnet_fast.models.reference import reference_model

try:
    from tqdm import tqdm
except ImportError:
    sys.exit("examples/train.py needs tqdm for its progress bar: pip install tqdm")

NUM_CLASSES = 10


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split over processes")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--image-size", type=int, default=16, help="digits are upsampled from 8x8")
    p.add_argument("--synthetic", action="store_true", help="synthetic data (no scikit-learn)")
    p.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: none)")
    p.add_argument("--no-reference", action="store_true", help="train the fast model only")
    p.add_argument(
        "--no-sync-bn", action="store_true", help="per-process BatchNorm statistics in both models"
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# --- processes -----------------------------------------------------------------------


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device): from torchrun's environment, or a single
    process when launched without torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def shutdown() -> None:
    """Leaves the process group in step with the other processes.

    The barrier keeps one process from tearing its connections down while
    another still waits on a collective, and the DDP wrappers (whose
    reducers hold the group) are gone before the group is destroyed: a gloo
    group left to interpreter teardown, or destroyed under a live reducer,
    can abort the process ("terminate called without an active exception").
    """
    if not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


# --- data ------------------------------------------------------------------------------


def digits(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as [1797, 3, S, S] float images and [1797] labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit(
            "examples/train.py trains on scikit-learn's digits: pip install scikit-learn "
            "(or run with --synthetic)"
        )
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(data.target)


def synthetic(image_size: int, n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten random smooth class templates plus noise: learnable, not trivial."""
    g = torch.Generator().manual_seed(1234)
    templates = F.interpolate(
        torch.randn(NUM_CLASSES, 3, 4, 4, generator=g), size=(image_size, image_size),
        mode="bilinear", align_corners=False,
    )  # fmt: skip
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = templates[y] + 1.5 * torch.randn(n, 3, image_size, image_size, generator=g)
    return x, y


def load_data(args) -> tuple[tuple, tuple]:
    """((x_train, y_train), (x_test, y_test)), normalized with the training
    set's per-channel statistics; the same on every process."""
    x, y = synthetic(args.image_size) if args.synthetic else digits(args.image_size)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    train, test = perm[:cut], perm[cut:]
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True)
    x = (x - mean) / std
    return (x[train], y[train]), (x[test], y[test])


def batches(n: int, batch: int, rank: int, world: int, epoch: int, seed: int):
    """This process's slice of every global batch of one shuffled epoch; the
    last partial batch is dropped so every process runs the same steps."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    per_rank = batch // world
    for start in range(0, n - batch + 1, batch):
        yield order[start + rank * per_rank : start + (rank + 1) * per_rank]


# --- models ----------------------------------------------------------------------------


def build(kind: str, world: int, device: torch.device, args):
    """(model to train, module that holds the weights) for "fast" or "reference"."""
    torch.manual_seed(args.seed)  # the same initial weights for both kinds
    sync = world > 1 and not args.no_sync_bn
    if kind == "fast":
        model = resnet_fast.models.resnet20(num_classes=NUM_CLASSES)
        if sync:
            model = resnet_fast.convert_sync_batchnorm(model)
    else:
        model = reference_model("resnet20", num_classes=NUM_CLASSES)
        if sync and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids), model
    return model, model


def train_epoch(model, opt, sched, data, args, rank, world, epoch, device, label) -> float:
    x_all, y_all = data
    model.train()
    steps = (len(y_all) // args.batch_size) if not args.max_steps else args.max_steps
    steps = min(steps, len(y_all) // args.batch_size)
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1} {label:>9}", disable=rank != 0, leave=False)
    loss_sum = count = 0.0
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    for step, idx in enumerate(batches(len(y_all), args.batch_size, rank, world, epoch, args.seed)):
        if step == steps:
            break
        x = x_all[idx].to(device).contiguous(memory_format=fmt)
        y = y_all[idx].to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.item() * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update()
    bar.close()
    loss_sum, count = all_sum([loss_sum, count], device)
    return loss_sum / max(count, 1)


@torch.no_grad()
def accuracy(model, data, args, rank, world, device) -> float:
    """Top-1 accuracy (%) on the whole test set, each process scoring a shard."""
    model.eval()
    x_all, y_all = data
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    correct = total = 0
    shard = torch.arange(rank, len(y_all), world)
    for start in range(0, len(shard), 256):
        idx = shard[start : start + 256]
        logits = model(x_all[idx].to(device).contiguous(memory_format=fmt))
        correct += (logits.argmax(1).cpu() == y_all[idx]).sum().item()
        total += len(idx)
    correct, total = all_sum([correct, total], device)
    return 100.0 * correct / max(total, 1)


def main() -> None:
    args = parse_args()
    rank, world, device = init_distributed()
    if args.batch_size % world:
        sys.exit(f"--batch-size {args.batch_size} must be a multiple of the {world} processes")
    train, test = load_data(args)
    kinds = ["fast"] if args.no_reference else ["fast", "reference"]
    runs = {}
    steps_per_epoch = len(train[1]) // args.batch_size
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    for kind in kinds:
        model, module = build(kind, world, device, args)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        total = max(args.epochs * steps_per_epoch, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, total=total: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        runs[kind] = (model, module, opt, sched)
    if rank == 0:
        where = f"{world} process(es), {dist.get_backend() if world > 1 else 'no'} backend"
        data = "synthetic" if args.synthetic else "scikit-learn digits"
        print(
            f"{data}: {len(train[1])} train / {len(test[1])} test images at "
            f"{args.image_size}x{args.image_size}; {where}, {device.type}; global batch "
            f"{args.batch_size}, {steps_per_epoch} steps per epoch"
        )
        if world > 1 and args.no_sync_bn:
            print("BatchNorm statistics: per process in both models (--no-sync-bn)")
        elif world > 1:
            reference = "synchronized" if device.type == "cuda" else (
                "per process (torch.nn.SyncBatchNorm runs on GPUs only)"
            )  # fmt: skip
            print(f"BatchNorm statistics: fast model synchronized, reference model {reference}")
    results = {kind: [] for kind in kinds}
    for epoch in range(args.epochs):
        line = [f"epoch {epoch + 1}/{args.epochs}"]
        for kind in kinds:
            model, module, opt, sched = runs[kind]
            start = time.perf_counter()
            loss = train_epoch(model, opt, sched, train, args, rank, world, epoch, device, kind)
            seconds = time.perf_counter() - start
            # The module itself, not the DDP wrapper: scoring needs no collectives.
            acc = accuracy(module, test, args, rank, world, device)
            results[kind].append(acc)
            line.append(f"{kind}: loss {loss:.3f} test acc {acc:5.1f}% ({seconds:.1f} s)")
        if rank == 0:
            print(" | ".join(line), flush=True)
    if rank == 0:
        print("final test accuracy: " + ", ".join(f"{k} {v[-1]:.1f}%" for k, v in results.items()))
    del runs, model, module, opt, sched
    shutdown()


if __name__ == "__main__":
    main()
