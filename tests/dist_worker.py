"""One rank of the distributed tests (launched by dist_harness.run_ranks):
runs every scenario of dist_cases.py on its share of the batch and saves
what the single-process oracle in test_distributed.py checks.

    python tests/dist_worker.py RANK WORLD_SIZE WORKDIR
"""

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from dist_cases import (
    DDP_RUNS,
    DTYPES,
    SYNC_CASES,
    SyncCase,
    ddp_data,
    tiny_resnet,
    train_then_eval,
)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import resnet_fast
from resnet_fast.distributed import sync_batch_norm
from resnet_fast.nn import SyncBatchNorm2d, SyncBatchNormAddReLU2d, SyncBatchNormReLU2d

MODULES = {"relu": SyncBatchNormReLU2d, "add_relu": SyncBatchNormAddReLU2d,
           "identity": SyncBatchNorm2d}  # fmt: skip


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_()


def run_sync_case(case: SyncCase, rank: int, group) -> dict:
    full = case.full_batch()
    x = _leaf(case.share(full["x"], rank))
    residual = _leaf(case.share(full["residual"], rank))
    grad_out = case.share(full["grad_out"], rank)
    backend = resnet_fast.use_backend(case.backend) if case.backend else contextlib.nullcontext()
    with backend:
        if case.api == "functional":
            weight, bias = _leaf(full["weight"]), _leaf(full["bias"])
            running = [None if t is None else t.clone() for t in
                       (full["running_mean"], full["running_var"])]  # fmt: skip
            out = sync_batch_norm(
                x, *running, weight, bias, case.momentum, 1e-5, residual=residual,
                relu=case.relu, process_group=group,
            )  # fmt: skip
            out.backward(grad_out)
        else:
            bn = MODULES[case.kind](
                case.channels, momentum=case.momentum, affine=case.affine,
                track_running_stats=case.running, process_group=group, dtype=DTYPES[case.dtype],
            )  # fmt: skip
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    if full[name] is not None:
                        getattr(bn, name).copy_(full[name])
            for _ in range(case.steps):
                out = bn(x) if residual is None else bn(x, residual)
                out.backward(grad_out)
            weight, bias = bn.weight, bn.bias
            running = [bn.running_mean, bn.running_var]

    def grad(t):
        return None if t is None else t.grad

    return {
        "out": out.detach(),
        "grad_x": grad(x),
        "grad_residual": grad(residual),
        "grad_weight": grad(weight),
        "grad_bias": grad(bias),
        "running_mean": running[0],
        "running_var": running[1],
    }


def run_gradcheck(group) -> dict:
    """fp64 gradcheck of sync_batch_norm over a one-process group: the
    autograd Function with real collectives, differentiated numerically."""
    g = torch.Generator().manual_seed(3)
    results = {}
    for backend in ("cpu", "reference"):
        for kind in ("relu", "add_relu", "identity"):
            x, r = (torch.randn(3, 4, 3, 2, generator=g, dtype=torch.float64) for _ in range(2))
            w = torch.randn(4, generator=g, dtype=torch.float64) * 0.5 + 1
            b = torch.randn(4, generator=g, dtype=torch.float64) * 0.5
            leaves = [t.requires_grad_() for t in (x, r, w, b)]

            def fn(x, r, w, b, kind=kind):
                residual = r if kind == "add_relu" else None
                return sync_batch_norm(x, None, None, w, b, residual=residual,
                                       relu=kind != "identity", process_group=group)  # fmt: skip

            with resnet_fast.use_backend(backend):
                results[f"{backend}-{kind}"] = torch.autograd.gradcheck(fn, leaves)
    return results


def run_ddp(name: str, rank: int, world: int) -> dict:
    fast, dtype_name, channels_last = DDP_RUNS[name]
    dtype = DTYPES[dtype_name]
    model = resnet_fast.convert_sync_batchnorm(tiny_resnet(fast, dtype, channels_last))
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.BatchNorm2d)})
    # broadcast_buffers=False: every rank's running statistics must come out
    # right by themselves, not by copies of rank 0's.
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    data = ddp_data(dtype, channels_last)
    per_rank = data[0][0].shape[0] // world
    share = slice(rank * per_rank, (rank + 1) * per_rank)
    losses, eval_out = train_then_eval(ddp, model, data, share)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"losses": losses, "state": state, "eval_out": eval_out, "norms": norms}


def main() -> None:
    rank, world, workdir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group(
        "gloo", init_method=f"file://{workdir / 'store'}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    everyone = dist.new_group(list(range(world)))
    solo = dist.new_group([0])  # every rank must take part in creating it
    results = {"sync": {}, "ddp": {}}
    for case in SYNC_CASES:
        group = everyone if case.group == "explicit" else None
        results["sync"][case.name] = run_sync_case(case, rank, group)
    if rank == 0:
        results["gradcheck"] = run_gradcheck(solo)
    for name in DDP_RUNS:
        results["ddp"][name] = run_ddp(name, rank, world)
    dist.barrier()
    torch.save(results, workdir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
