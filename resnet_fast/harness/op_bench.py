"""``resnet-fast ops``: each fused op against the eager PyTorch sequence it
replaces, forward and forward+backward, training mode, at the ResNet-50
BatchNorm shapes, with effective bandwidth (minimal bytes / median time)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from .backends import fast_backend_for
from .op_cases import OPS, RESNET50_BN_SHAPES, make_inputs, minimal_bytes, step_fn
from .timing import interleaved_ms, summarize

QUICK_SHAPES = [(64, 56), (512, 7)]


@dataclass
class OpsSettings:
    """What ``resnet-fast ops`` measures (validated by the CLI)."""

    ops: list[str]
    shapes: list[tuple[int, int]]
    device: str
    dtype: str  # the activations' dtype; BN parameters stay float32
    batch_size: int
    channels_last: bool
    rounds: int
    warmup: int
    passes: tuple[str, ...] = ("fwd", "fwd+bwd")


def units(settings: OpsSettings) -> int:
    """Progress units: per op, pass and shape, the warm-up and each round."""
    return len(settings.ops) * len(settings.passes) * len(settings.shapes) * (settings.rounds + 1)


def measure(
    op: str, channels: int, size: int, backward: bool, settings: OpsSettings, progress: tqdm
) -> dict:
    """Fused vs eager at one shape: the JSON row."""
    device = torch.device(settings.device)
    t = make_inputs(
        op,
        settings.batch_size,
        channels,
        size,
        getattr(torch, settings.dtype),
        settings.channels_last,
        device,
    )
    steps = {impl: step_fn(op, impl, t, backward) for impl in ("fused", "eager")}
    times = interleaved_ms(steps, device, settings.rounds, settings.warmup, progress.update)
    row: dict = {"op": op, "pass": "fwd+bwd" if backward else "fwd", "C": channels, "H": size}
    nbytes = minimal_bytes(op, t, backward)
    for impl, samples in times.items():
        row[impl] = summarize(samples)
        row[impl]["samples_ms"] = samples
        row[f"{impl}_GBps"] = nbytes / (row[impl]["median_ms"] * 1e-3) / 1e9
    row["speedup"] = row["eager"]["median_ms"] / row["fused"]["median_ms"]
    row["min_bytes"] = nbytes
    return row


def run_ops(settings: OpsSettings, progress: tqdm) -> tuple[list[dict], list[dict]]:
    """Every op, pass and shape of the settings.

    Returns:
        (rows, summary): one row per measurement; per op and pass the
        geometric mean of the speed-ups and the total-time speed-up.
    """
    rows = []
    for op in settings.ops:
        for name in settings.passes:
            progress.set_description_str(f"{op} {name}")
            for channels, size in settings.shapes:
                rows.append(measure(op, channels, size, name == "fwd+bwd", settings, progress))
    summary = []
    for op in settings.ops:
        for name in settings.passes:
            sel = [r for r in rows if r["op"] == op and r["pass"] == name]
            summary.append(
                {
                    "op": op,
                    "pass": name,
                    "geomean_speedup": statistics.geometric_mean(r["speedup"] for r in sel),
                    "total_time_speedup": sum(r["eager"]["median_ms"] for r in sel)
                    / sum(r["fused"]["median_ms"] for r in sel),
                }
            )
    return rows, summary


def settings_dict(settings: OpsSettings) -> dict:
    """The settings as recorded in the JSON file, with the backend that ran."""
    out = asdict(settings)
    out["backend"] = fast_backend_for(torch.device(settings.device))
    return out


__all__ = ["OPS", "RESNET50_BN_SHAPES", "QUICK_SHAPES", "OpsSettings", "run_ops", "units"]
