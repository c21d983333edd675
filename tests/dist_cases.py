"""The scenarios of the distributed tests, shared by the worker processes
(dist_worker.py) and the single-process oracle (test_distributed.py): the
same seeded full batch is built on both sides, each rank takes its slice."""

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from resnet_fast.models.cifar import CifarResNet
from resnet_fast.models.plain import BasicBlock as PlainBasicBlock
from resnet_fast.nn.blocks import BasicBlock

WORLD_SIZE = 2
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class SyncCase:
    """One synchronized-BN scenario over WORLD_SIZE ranks.

    sizes: the batch size of each rank (uneven, or zero, allowed).
    kind: "relu", "add_relu" or "identity".
    api: "functional" (sync_batch_norm) or "module" (the Sync*2d modules,
        run for `steps` forward/backward passes on the same batch).
    backend: None (native ops) or "reference" (the pure-PyTorch stages).
    group: "default" (process_group=None) or "explicit" (a new_group of all ranks).
    """

    name: str
    sizes: tuple[int, ...]
    channels: int
    hw: tuple[int, int]
    kind: str
    dtype: str = "float64"
    layout: str = "contiguous"
    affine: bool = True
    running: bool = True
    shift: float = 0.0
    momentum: float | None = 0.1
    api: str = "functional"
    steps: int = 1
    backend: str | None = None
    group: str = "default"

    @property
    def relu(self) -> bool:
        return self.kind != "identity"

    def full_batch(self) -> dict:
        """Tensors of the whole batch (the oracle's input), seeded by name."""
        g = torch.Generator().manual_seed(zlib.crc32(self.name.encode()))
        n, c, (h, w) = sum(self.sizes), self.channels, self.hw
        dtype = DTYPES[self.dtype]

        def act(scale=1.0, shift=0.0):
            t = (torch.randn((n, c, h, w), generator=g, dtype=torch.float64) * scale + shift).to(
                dtype
            )
            fmt = torch.channels_last if self.layout == "channels_last" else torch.contiguous_format
            return t.contiguous(memory_format=fmt)

        def vec(scale, shift=0.0):
            return torch.randn(c, generator=g, dtype=torch.float64) * scale + shift

        # Parameters and running statistics in fp32 for half activations, as
        # under autocast.
        pdtype = torch.float32 if dtype == torch.bfloat16 else dtype
        return {
            "x": act(2.0, self.shift + 0.3),
            "residual": act() if self.kind == "add_relu" else None,
            "grad_out": act(),
            "weight": vec(0.5, 1.0).to(pdtype) if self.affine else None,
            "bias": vec(0.5).to(pdtype) if self.affine else None,
            "running_mean": vec(0.3).to(pdtype) if self.running else None,
            "running_var": (vec(1.0).abs() + 0.5).to(pdtype) if self.running else None,
        }

    def share(self, t, rank: int):
        """Rank `rank`'s slice of a full-batch activation."""
        start = sum(self.sizes[:rank])
        return None if t is None else t[start : start + self.sizes[rank]]


SYNC_CASES = [
    SyncCase("even-relu-fp64", (3, 3), 5, (4, 3), "relu"),
    SyncCase("uneven-add_relu-fp64", (5, 2), 7, (3, 5), "add_relu"),
    SyncCase(
        "uneven-identity-channels_last", (1, 4), 6, (4, 4), "identity", layout="channels_last"
    ),
    # Rank 1 holds a single value per channel: legal, the statistics are global.
    SyncCase("one-value-per-channel-on-a-rank", (3, 1), 4, (1, 1), "relu"),
    SyncCase("empty-rank", (4, 0), 3, (2, 2), "add_relu"),
    SyncCase("no-affine-no-running-stats", (2, 3), 5, (3, 3), "relu", affine=False, running=False),
    SyncCase("explicit-group", (2, 5), 4, (3, 2), "add_relu", group="explicit"),
    SyncCase(
        "fp32-mean-1e4-channels_last",
        (6, 2),
        8,
        (5, 5),
        "add_relu",
        dtype="float32",
        layout="channels_last",
        shift=1e4,
    ),  # fmt: skip
    SyncCase("bf16-uneven", (3, 5), 12, (4, 4), "add_relu", dtype="bfloat16"),
    SyncCase("reference-backend-uneven", (4, 1), 5, (3, 3), "add_relu", backend="reference"),
    SyncCase(
        "reference-backend-fp32", (2, 2), 6, (3, 3), "relu", dtype="float32", backend="reference"
    ),
    SyncCase(
        "module-relu-momentum-none", (3, 2), 6, (3, 3), "relu", api="module", steps=2, momentum=None
    ),
    SyncCase("module-add_relu-uneven", (1, 4), 5, (4, 2), "add_relu", api="module", steps=2),
    SyncCase("module-identity", (2, 2), 4, (3, 3), "identity", api="module", steps=1),
]


# --- DDP ------------------------------------------------------------------------

DDP_STEPS, DDP_BATCH, DDP_CLASSES = 3, 8, 5
DDP_RUNS = {
    # name: (fast blocks?, dtype, channels_last)
    "fast-fp64": (True, "float64", False),
    "fast-fp32-channels_last": (True, "float32", True),
    "plain-fp64": (False, "float64", False),
}


def tiny_resnet(fast: bool, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    """A two-stage CIFAR-style ResNet with a projection shortcut (so a
    downsample BN too), fused (fast) or plain; the same weights either way."""
    torch.manual_seed(0)
    block = BasicBlock if fast else PlainBasicBlock
    model = CifarResNet(block, [1, 1], [8, 16], "projection", num_classes=DDP_CLASSES,
                        fused_stem=fast)  # fmt: skip
    model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def ddp_data(dtype: torch.dtype, channels_last: bool) -> list:
    """DDP_STEPS full batches (x [DDP_BATCH, 3, 8, 8], labels [DDP_BATCH])."""
    g = torch.Generator().manual_seed(7)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [
        (
            torch.randn(DDP_BATCH, 3, 8, 8, generator=g, dtype=torch.float64)
            .to(dtype)
            .contiguous(memory_format=fmt),
            torch.randint(0, DDP_CLASSES, (DDP_BATCH,), generator=g),
        )
        for _ in range(DDP_STEPS)
    ]


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def train_then_eval(trained: nn.Module, model: nn.Module, data: list, share=slice(None)):
    """DDP_STEPS SGD steps of ``trained`` (``model`` or its DDP wrapper) on
    ``share`` of each of ddp_data's batches, then ``model`` in eval mode on
    the whole first batch: (the step losses, the eval logits [DDP_BATCH,
    DDP_CLASSES])."""
    opt = make_optimizer(trained)
    losses = []
    for step in range(DDP_STEPS):
        x, y = data[step]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(trained(x[share]), y[share])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        eval_out = model(data[0][0])
    return losses, eval_out
