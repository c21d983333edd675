"""Trains a fast ResNet next to the same network in plain PyTorch, like for
like, with the standard ResNet recipe, and prints per epoch both models'
loss, test accuracy and images/s.

    python examples/train.py                                   # one process
    torchrun --standalone --nproc-per-node=2 examples/train.py # 2 CPU processes (gloo)
    python examples/train.py --checkpoint run.pt --resume      # resumable run

On a machine with GPUs, torchrun starts one process per GPU (NCCL).

Like for like: both models start from the same weights (the plain model loads
the fast one's initial state_dict), see the same batches in the same order
with the same augmentation, and run the same BatchNorm semantics: on GPUs
both synchronized across processes (resnet_fast.convert_sync_batchnorm and
torch.nn.SyncBatchNorm), on CPUs both per process (torch.nn.SyncBatchNorm
does not run on CPUs). Their losses then differ only by rounding.

Recipe (each piece an option): SGD with momentum 0.9 (--nesterov), a linear
learning-rate warmup then cosine decay stepped every iteration, label
smoothing 0.1, weight decay 1e-4 on convolution and linear weights only
(--decay-all-params for every parameter), channels_last, and optionally bf16
autocast (--amp; fp16 with a GradScaler on CUDA).

Data: scikit-learn's handwritten digits (1797 8x8 images, 10 classes),
upsampled to --image-size and split 80/20; or, with --synthetic, random class
templates plus noise. Training images get a random crop from a zero-padded
copy (--crop-padding) and, with --hflip, a random horizontal flip.

--checkpoint PATH saves, after every epoch and atomically (a temporary file
renamed over PATH), both models, optimizers, schedulers, gradient scalers,
the epoch, the random generators' states, the data order of the next epoch
and the choices resnet_fast timed on this machine
(resnet_fast.nn.measured_choices); --resume continues from it. A run killed
at any point restarts the interrupted epoch and ends with the same weights
as one never interrupted
(bit for bit on CPUs, where the kernels are deterministic).
"""

import argparse
import gc
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

import resnet_fast
from resnet_fast.models.plain import plain_model

NUM_CLASSES = 10
KINDS = ("fast", "plain")
# Options that change what a run computes: a checkpoint resumes only a run
# with the same ones.
RUN_OPTIONS = (
    "model", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
    "decay_all_params", "warmup_epochs", "warmup_start", "label_smoothing", "image_size",
    "crop_padding", "hflip", "synthetic", "max_steps", "no_sync_bn", "channels_last",
    "amp", "dtype", "seed", "no_plain",
)  # fmt: skip


def model_names() -> list[str]:
    """Every model builder resnet_fast.models exports (plain twins exist for all)."""
    names = []
    for name in resnet_fast.models.__all__:
        obj = getattr(resnet_fast.models, name)
        if callable(obj) and not isinstance(obj, type):
            names.append(name)
    return names


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", choices=model_names())
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split over processes")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate, after the warmup")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--decay-all-params", action="store_true",
        help="weight decay on every parameter, BatchNorm ones and biases included",
    )  # fmt: skip
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup length")
    p.add_argument("--warmup-start", type=float, default=0.01, help="warmup's first lr / --lr")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--image-size", type=int, default=16, help="digits are upsampled from 8x8")
    p.add_argument("--crop-padding", type=int, default=None, help="default: image size / 8")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    p.add_argument("--synthetic", action="store_true", help="synthetic data (no scikit-learn)")
    p.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: none)")
    p.add_argument("--no-plain", action="store_true", help="train the fast model only")
    p.add_argument(
        "--no-sync-bn", action="store_true",
        help="per-process BatchNorm statistics in both models on GPUs too",
    )  # fmt: skip
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument(
        "--amp", nargs="?", const="bf16", choices=["bf16", "fp16"], default=None,
        help="autocast: bf16 (the default of a bare --amp), or fp16 with a GradScaler (CUDA)",
    )  # fmt: skip
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32",
        help="float64 shows the two models agree to its precision",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="file saved after every epoch")
    p.add_argument(
        "--resume", action="store_true",
        help="continue from --checkpoint when the file exists (start afresh when not)",
    )  # fmt: skip
    # The tests' crash: SIGKILL this process after its N-th optimizer step
    # (both models' steps counted, across epochs).
    p.add_argument("--kill-at-step", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.crop_padding is None:
        args.crop_padding = args.image_size // 8
    if args.resume and not args.checkpoint:
        p.error("--resume needs --checkpoint")
    if args.amp and args.dtype == "float64":
        p.error("--amp and --dtype float64 exclude each other")
    if args.epochs < 1 or args.batch_size < 1 or args.image_size < 1 or args.crop_padding < 0:
        p.error("--epochs, --batch-size and --image-size must be positive, --crop-padding >= 0")
    return args


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def load_data(args, dtype: torch.dtype) -> tuple[tuple, tuple]:
    """((x_train, y_train), (x_test, y_test)), normalized with the training
    set's per-channel statistics, the training images zero-padded by
    --crop-padding for the random crops; the same on every process."""
    x, y = synthetic(args.image_size) if args.synthetic else digits(args.image_size)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    train, test = perm[:cut], perm[cut:]
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True)
    x = ((x - mean) / std).to(dtype)
    x_train = F.pad(x[train], [args.crop_padding] * 4)
    return (x_train, y[train]), (x[test], y[test])


def draw_plan(gen: torch.Generator, n: int, args) -> dict[str, torch.Tensor]:
    """One epoch's data order and augmentation, drawn for the global batch:
    every process, and both models, read their share of the same plan."""
    order = torch.randperm(n, generator=gen)
    offsets = torch.randint(0, 2 * args.crop_padding + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    if not args.hflip:
        flips.zero_()
    return {"order": order, "offsets": offsets, "flips": flips}


def epoch_batches(plan, data, args, rank: int, world: int, steps: int, fmt, device) -> list:
    """This process's (images, labels) of the first `steps` global batches of
    the plan, cropped and flipped; the partial last batch is dropped so every
    process runs the same steps."""
    x_pad, y_all = data
    size, per_rank = args.image_size, args.batch_size // world
    batches = []
    for step in range(steps):
        start = step * args.batch_size + rank * per_rank
        images = []
        for pos in range(start, start + per_rank):
            i = plan["order"][pos].item()
            dy, dx = plan["offsets"][pos].tolist()
            image = x_pad[i, :, dy : dy + size, dx : dx + size]
            images.append(image.flip(-1) if plan["flips"][pos] else image)
        x = torch.stack(images).to(device).contiguous(memory_format=fmt)
        batches.append((x, y_all[plan["order"][start : start + per_rank]].to(device)))
    return batches


# --- models and recipe -----------------------------------------------------------------


@dataclass
class Trainee:
    """One of the two models and everything that trains it."""

    kind: str
    module: nn.Module  # holds the weights
    model: nn.Module  # what runs the batches: module, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    history: list = field(default_factory=list)  # per epoch: (loss, test acc, images/s)


def build_models(args, device, dtype, sync: bool) -> dict[str, nn.Module]:
    """{"fast": ..., "plain": ...} with the same initial weights (kaiming, as
    torchvision), BatchNorms synchronized when `sync`."""
    torch.manual_seed(args.seed)
    fast = getattr(resnet_fast.models, args.model)(num_classes=NUM_CLASSES)
    models = {"fast": fast}
    if not args.no_plain:
        plain = plain_model(args.model, num_classes=NUM_CLASSES)
        plain.load_state_dict(fast.state_dict(), strict=True)
        models["plain"] = plain
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    for kind, model in models.items():
        if sync:
            model = (
                resnet_fast.convert_sync_batchnorm(model)
                if kind == "fast"
                else nn.SyncBatchNorm.convert_sync_batchnorm(model)
            )
        models[kind] = model.to(device=device, dtype=dtype, memory_format=fmt)
    return models


def param_groups(module: nn.Module, args) -> list[dict]:
    """Weight decay on convolution and linear weights only, chosen by module
    type (BatchNorm weights and every bias decay to nothing), unless
    --decay-all-params."""
    if args.decay_all_params:
        return [{"params": list(module.parameters()), "weight_decay": args.weight_decay}]
    decay, no_decay = [], []
    for sub in module.modules():
        for name, p in sub.named_parameters(recurse=False):
            weighs = isinstance(sub, (nn.Conv2d, nn.Linear)) and name == "weight"
            (decay if weighs else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_scheduler(optimizer, args, steps_per_epoch: int):
    """Linear warmup over --warmup-epochs, then cosine decay to 0 at the last
    step; stepped after every optimizer step."""
    total = args.epochs * steps_per_epoch
    warmup = min(round(args.warmup_epochs * steps_per_epoch), total - 1)
    if warmup <= 0:
        return CosineAnnealingLR(optimizer, T_max=max(total, 1))
    ramp = LinearLR(optimizer, start_factor=args.warmup_start, total_iters=warmup)
    cosine = CosineAnnealingLR(optimizer, T_max=total - warmup)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def make_trainee(kind, module, args, world, device, steps_per_epoch) -> Trainee:
    model = module
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(module, device_ids=ids)
    optimizer = torch.optim.SGD(
        param_groups(module, args), lr=args.lr, momentum=args.momentum, nesterov=args.nesterov
    )
    scheduler = make_scheduler(optimizer, args, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    return Trainee(kind, module, model, optimizer, scheduler, scaler)


# --- checkpoints -----------------------------------------------------------------------


def save_checkpoint(path: str, trainees, args, world, epoch, step, gen, plan) -> None:
    """Everything the run needs to continue exactly, written to a temporary
    file in the same directory and renamed over `path`: a crash mid-write
    leaves the previous checkpoint whole."""
    state = {
        "run": {k: getattr(args, k) for k in RUN_OPTIONS} | {"world_size": world},
        "epoch": epoch,  # epochs completed
        "step": step,  # optimizer steps this process has taken, both models counted
        "models": {t.kind: t.module.state_dict() for t in trainees},
        "optimizers": {t.kind: t.optimizer.state_dict() for t in trainees},
        "schedulers": {t.kind: t.scheduler.state_dict() for t in trainees},
        "scalers": {t.kind: t.scaler.state_dict() for t in trainees},
        "history": {t.kind: t.history for t in trainees},
        "rng": {
            "data": gen.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        },
        "plan": plan,  # the data order and augmentation of the next epoch
        # Which implementation each block and convolution shape took (timed on
        # this machine): the resumed run takes the same, so its bits match.
        "measured_choices": resnet_fast.nn.measured_choices(),
    }
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, trainees, args, world, gen) -> tuple[int, int, dict]:
    """Restores a checkpoint into the trainees and generators; returns
    (epochs completed, step, the next epoch's plan)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    run = {k: getattr(args, k) for k in RUN_OPTIONS} | {"world_size": world}
    changed = [f"{k}: {state['run'].get(k)!r} -> {v!r}" for k, v in run.items()
               if state["run"].get(k) != v]  # fmt: skip
    if changed:
        sys.exit(f"{path} is another run's checkpoint ({'; '.join(changed)})")
    for t in trainees:
        t.module.load_state_dict(state["models"][t.kind], strict=True)
        t.optimizer.load_state_dict(state["optimizers"][t.kind])
        t.scheduler.load_state_dict(state["schedulers"][t.kind])
        t.scaler.load_state_dict(state["scalers"][t.kind])
        t.history = list(state["history"][t.kind])
    gen.set_state(state["rng"]["data"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate(state["rng"]["python"])
    resnet_fast.nn.load_measured_choices(state.get("measured_choices", {}))
    return state["epoch"], state["step"], state["plan"]


# --- training --------------------------------------------------------------------------


def autocast(args, device):
    dtype = torch.float16 if args.amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=args.amp is not None)


def train_epoch(t: Trainee, batches, criterion, args, device, step: int) -> tuple:
    """One epoch of `t` over `batches`; returns (this process's loss sum,
    seconds, step after it)."""
    t.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        with autocast(args, device):
            logits = t.model(x)
        loss = criterion(logits.float() if args.amp else logits, y)
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
        t.scheduler.step()
        loss_sum += loss.detach().double() * len(y)  # no .item(): no sync per step on a GPU
        step += 1
        if step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
    synchronize(device)
    return loss_sum.item(), time.perf_counter() - start, step


@torch.no_grad()
def accuracy(t: Trainee, data, args, rank: int, world: int, device, fmt) -> float:
    """Top-1 accuracy (%) on the whole test set, each process scoring a shard
    with rank 0's running statistics."""
    module = t.module
    if world > 1:  # per-process BatchNorm leaves each process its own running stats
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)
    module.eval()
    x_all, y_all = data
    correct = total = 0
    shard = torch.arange(rank, len(y_all), world)
    for start in range(0, len(shard), 256):
        idx = shard[start : start + 256]
        with autocast(args, device):
            logits = module(x_all[idx].to(device).contiguous(memory_format=fmt))
        correct += (logits.argmax(1).cpu() == y_all[idx]).sum().item()
        total += len(idx)
    correct, total = all_sum([correct, total], device)
    return 100.0 * correct / max(total, 1)


def describe(args, rank, world, device, sync, train, test, steps) -> None:
    if rank != 0:
        return
    where = f"{world} process(es), {dist.get_backend() if world > 1 else 'no'} backend"
    data = "synthetic" if args.synthetic else "scikit-learn digits"
    print(
        f"{data}: {len(train[1])} train / {len(test[1])} test images at "
        f"{args.image_size}x{args.image_size}; {args.model}; {where}, {device.type}; "
        f"global batch {args.batch_size}, {steps} steps per epoch; {args.dtype}"
        + (f", {args.amp} autocast" if args.amp else "")
        + (", channels_last" if args.channels_last else "")
    )
    if world > 1:
        how = "synchronized" if sync else (
            "per process (--no-sync-bn)" if args.no_sync_bn
            else "per process (torch.nn.SyncBatchNorm runs on GPUs only)"
        )  # fmt: skip
        print(f"BatchNorm statistics in both models: {how}")
    print(
        f"SGD momentum {args.momentum}{' nesterov' if args.nesterov else ''}, lr {args.lr} "
        f"(linear warmup {args.warmup_epochs:g} epoch(s), then cosine), label smoothing "
        f"{args.label_smoothing}, weight decay {args.weight_decay} on "
        + ("every parameter" if args.decay_all_params else "conv and linear weights"),
        flush=True,
    )


def report(trainees, epoch: int, args) -> None:
    line = [f"epoch {epoch + 1}/{args.epochs}"]
    for t in trainees:
        loss, acc, rate = t.history[epoch]
        line.append(f"{t.kind}: loss {loss:.6f} test acc {acc:5.1f}% {rate:7.0f} img/s")
    if len(trainees) == 2:
        (f_loss, _, f_rate), (p_loss, _, p_rate) = (t.history[epoch] for t in trainees)
        line.append(f"loss diff {abs(f_loss - p_loss):.1e}, fast/plain {f_rate / p_rate:.2f}x")
    print(" | ".join(line), flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    rank, world, device = init_distributed()
    if args.batch_size % world:
        sys.exit(f"--batch-size {args.batch_size} must be a multiple of the {world} processes")
    if args.amp == "fp16" and device.type != "cuda":
        sys.exit("--amp fp16 needs CUDA (its GradScaler); use --amp bf16 on CPUs")
    dtype = getattr(torch, args.dtype)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    train, test = load_data(args, dtype)
    steps = len(train[1]) // args.batch_size
    if args.max_steps:
        steps = min(steps, args.max_steps)
    if steps < 1:
        sys.exit(f"{len(train[1])} training images make no batch of {args.batch_size}")
    sync = world > 1 and device.type == "cuda" and not args.no_sync_bn
    models = build_models(args, device, dtype, sync)
    trainees = [make_trainee(k, m, args, world, device, steps) for k, m in models.items()]
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    describe(args, rank, world, device, sync, train, test, steps)

    gen = torch.Generator().manual_seed(args.seed)
    first_epoch, step, plan = 0, 0, None
    if args.resume and os.path.exists(args.checkpoint):
        first_epoch, step, plan = load_checkpoint(args.checkpoint, trainees, args, world, gen)
        if rank == 0:
            print(f"resumed from {args.checkpoint} after epoch {first_epoch}", flush=True)
            for epoch in range(first_epoch):
                report(trainees, epoch, args)
    elif args.resume and rank == 0:
        print(f"no checkpoint at {args.checkpoint} yet: starting afresh", flush=True)
    if plan is None:
        plan = draw_plan(gen, len(train[1]), args)

    for epoch in range(first_epoch, args.epochs):
        batches = epoch_batches(plan, train, args, rank, world, steps, fmt, device)
        for t in trainees:
            loss_sum, seconds, step = train_epoch(t, batches, criterion, args, device, step)
            loss_sum, seconds = all_sum([loss_sum, seconds], device)
            images = steps * args.batch_size
            acc = accuracy(t, test, args, rank, world, device, fmt)
            t.history.append((loss_sum / images, acc, images / (seconds / world)))
        plan = draw_plan(gen, len(train[1]), args)
        if args.checkpoint and rank == 0:
            save_checkpoint(args.checkpoint, trainees, args, world, epoch + 1, step, gen, plan)
        if world > 1:  # no process runs ahead of the checkpoint
            dist.barrier()
        if rank == 0:
            report(trainees, epoch, args)

    if rank == 0:
        final = [
            f"{t.kind} loss {t.history[-1][0]:.6f} acc {t.history[-1][1]:.1f}%" for t in trainees
        ]
        print("final: " + ", ".join(final))
        if len(trainees) == 2:
            diffs = [abs(a[0] - b[0]) for a, b in zip(*(t.history for t in trainees), strict=True)]
            print(f"largest per-epoch loss difference, fast vs plain: {max(diffs):.1e}")
    del trainees, models
    shutdown()


if __name__ == "__main__":
    main()
