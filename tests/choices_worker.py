"""One rank of tests/test_reproducible.py::test_ranks_take_rank_zeros_choices
(launched by dist_harness.run_ranks): trains a small fast ResNet one step
with measuring on, a store of its own per rank, and timings injected (after
running every candidate once) so that rank 0 prefers lean blocks and matrix
products and rank 1 eager blocks and oneDNN; saves the choices it took and
how many measurements it ran.

    python tests/choices_worker.py RANK WORLD_SIZE WORKDIR
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import resnet_fast
from resnet_fast.conv import measured


def main() -> None:
    rank, world, workdir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    os.environ["RESNET_FAST_CHOICES_DIR"] = str(workdir / f"choices{rank}")
    measured.ENABLED = True
    measured._store = None
    timed = []
    # Rank 0 prefers lean blocks, which run their convolutions through choices
    # of their own, met (and decided) while the block's candidates run.
    preferred = {"lean", "gemm"} if rank == 0 else {"eager", "onednn"}

    def injected(candidates):
        timed.append(sorted(candidates))
        for run in candidates.values():
            run()
        return {name: (1.0 if name in preferred else 2.0) for name in candidates}

    measured._interleaved_medians = injected
    dist.init_process_group(
        "gloo", init_method=f"file://{workdir / 'rendezvous'}", rank=rank, world_size=world
    )
    torch.manual_seed(0)
    # channels_last: the lean blocks' convolutions are then choices of their own.
    model = resnet_fast.models.resnet20(num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    nn.functional.cross_entropy(model(x), torch.arange(4)).backward()
    torch.save(
        {"choices": resnet_fast.nn.measured_choices(), "timed": len(timed)},
        workdir / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
