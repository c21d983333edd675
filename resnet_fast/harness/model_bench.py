"""``resnet-fast bench``: resnet_fast models against what a user would run
instead, end to end: eager PyTorch, torch.compile at its strongest
documented setting, ONNX Runtime and OpenVINO (variants.py).

For each model (workloads.py: the zoo, and user-style models passed
through resnet_fast.convert): the eager model's BatchNorm statistics are
calibrated on a few random batches (a trained model's statistics have its
activations' scale; the initial ones make a deep network's eval-mode
activations grow without bound, which no deployment sees), and every variant
starts from those weights. The fast model is checked against a float64 copy
of the eager one (the eager model in the benchmark's precision is checked the
same way, as the yardstick); the BatchNorms it runs fused are counted (a fast
model that fused none is warned about and shown as such); the choices it
measures on this machine are made (and stored) before any timing.

Then a training step (forward, backward, SGD with momentum) and inference
are timed. Each variant runs in a process of its own (peer_worker.py), so
that no thread pool spins while another variant is timed; the processes take
turns round by round (the order alternating), each turn one untimed and one
timed call after an idle gap, so that a slow phase of the machine hits every
variant alike. The activations saved for backward are counted per image, and
on a GPU the peak memory of a step; each inference variant's logits are
checked against the float64 oracle too.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ..conv import measured
from ..conv.settle import tune
from ..profiling import saved_activations
from .backends import fast_backend_for
from .fusion import count_fusion, fusion_dict, warn_if_unfused
from .timing import summarize
from .variants import COMPILED, PEERS, VARIANTS, Job, available
from .workers import Worker, WorkerError, take_turns
from .workloads import bench_model_spec

# Worst relative error (vs float64) the fast model may add over eager's own in
# the same precision: max(2 x eager's, this floor).
ERROR_FLOOR = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}
CHECK_BATCH = 8  # the accuracy check runs at most this many images (float64 is slow)


@dataclass
class BenchSettings:
    """What ``resnet-fast bench`` measures (validated by the CLI)."""

    models: list[str]
    device: str
    dtype: str  # "float32", or the autocast dtype: "bfloat16" / "float16"
    batch_size: int  # of every model not in ``sizes``
    resolution: int
    channels_last: bool
    compile: bool
    rounds: int
    warmup: int
    peers: bool = False
    threads: int = 0  # of every variant's process; 0: this process's torch count
    extra: dict = field(default_factory=dict)
    # model name -> [batch size, resolution], for models run at their own size
    sizes: dict = field(default_factory=dict)

    def size(self, name: str) -> tuple[int, int]:
        """(batch size, resolution) of model ``name``."""
        batch, resolution = self.sizes.get(name, (self.batch_size, self.resolution))
        return batch, resolution

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def precision(self) -> str:
        return "fp32" if self.dtype == "float32" else f"{self.dtype} autocast"


def autocast(settings: BenchSettings) -> contextlib.AbstractContextManager:
    """Mixed precision as a training script would use it: parameters stay
    float32, autocast picks the op dtypes."""
    if settings.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(settings.torch_device.type, dtype=settings.torch_dtype)


def build_models(name: str, settings: BenchSettings) -> dict[str, nn.Module]:
    """The eager model (BatchNorm statistics calibrated) and the fast model
    with the same weights, in this process: checked, counted and measured
    here; timed in processes of their own."""
    spec = bench_model_spec(name)
    torch.manual_seed(0)
    eager = spec.build_eager()
    calibrate_batchnorm(eager, settings, name)
    fast = spec.build_fast(eager)
    variants = {"fast": fast, "eager": eager}
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    return {k: m.to(settings.torch_device, memory_format=fmt) for k, m in variants.items()}


CALIBRATION_BATCHES = 4


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, settings: BenchSettings, name: str) -> None:
    """Running statistics from CALIBRATION_BATCHES random batches (training-
    mode forwards, cumulative average): the scale a trained model's
    statistics have, so that eval-mode activations stay finite."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for seed in range(CALIBRATION_BATCHES):
        model(make_batch(settings, name, seed=1000 + seed)[0].to("cpu"))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def make_batch(settings: BenchSettings, name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh random batch (never zeros) for model ``name`` at its size, and
    labels, on the device."""
    gen = torch.Generator().manual_seed(seed)
    batch, resolution = settings.size(name)
    shape = (batch, 3, resolution, resolution)
    x = torch.randn(shape, generator=gen)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    x = x.to(settings.torch_device).contiguous(memory_format=fmt)
    y = torch.randint(0, bench_model_spec(name).num_classes, (batch,), generator=gen)
    return x, y.to(settings.torch_device)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _normwise(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over all the tensors together (2-norm): the
    gradients of a whole model, where some parameters' are tiny."""
    diff = sum(((g.double() - w.double()) ** 2).sum() for g, w in zip(got, want, strict=True))
    norm = sum((w.double() ** 2).sum() for w in want)
    return (diff / norm.clamp_min(1e-300)).sqrt().item()


def _forward_backward(model: nn.Module, x, y, precision) -> dict[str, torch.Tensor]:
    """Training-mode logits and parameter gradients, then eval-mode logits."""
    model.zero_grad(set_to_none=True)
    model.train()
    with precision:
        logits = model(x)
    nn.functional.cross_entropy(logits.float(), y).backward()
    out = {"train logits": logits.detach()}
    out.update({f"grad {k}": p.grad.detach() for k, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad(), precision:
        out["eval logits"] = model(x).detach()
    return out


def check_accuracy(models: dict[str, nn.Module], x, y, settings: BenchSettings) -> dict:
    """The fast and the eager model against a float64 copy of the eager one.

    Logits in training and eval mode are compared by worst relative error
    (max |a - oracle| / max |oracle|), the parameter gradients by norm-wise
    relative error over the whole model. The fast model passes when its error
    is at most twice eager's in the same precision, or under a small floor
    (float32 kernels differ by rounding).

    Returns:
        errors per model and kind ("logits", "grads"), the max |fast - eager|
        of the logits, the tolerance and ``ok``.
    """
    n = min(CHECK_BATCH, x.shape[0])
    xs, ys = x[:n], y[:n]
    oracle = copy.deepcopy(models["eager"]).double()
    want = _forward_backward(oracle, xs.double(), ys, contextlib.nullcontext())
    del oracle
    got = {
        label: _forward_backward(models[label], xs, ys, autocast(settings))
        for label in ("fast", "eager")
    }
    result: dict = {"images": n}
    grad_keys = [k for k in want if k.startswith("grad ")]
    for label, outputs in got.items():
        result[label] = {
            "logits": max(_relative(outputs[k], want[k]) for k in ("train logits", "eval logits")),
            "grads": _normwise([outputs[k] for k in grad_keys], [want[k] for k in grad_keys]),
        }
    result["max_abs_logit_diff"] = max(
        (got["fast"][k].double() - got["eager"][k].double()).abs().max().item()
        for k in ("train logits", "eval logits")
    )
    floor = ERROR_FLOOR[settings.torch_dtype]
    result["tolerance"] = {k: max(2 * result["eager"][k], floor) for k in ("logits", "grads")}
    result["ok"] = all(result["fast"][k] <= result["tolerance"][k] for k in ("logits", "grads"))
    for model in models.values():
        model.zero_grad(set_to_none=True)
    return result


def saved_bytes_per_image(model: nn.Module, x, settings: BenchSettings) -> float | None:
    """Activation bytes one training forward saves for backward, per image
    (storages counted once, parameters excluded); None when it cannot be
    measured (torch.compile may refuse saved-tensor hooks)."""
    model.train()
    try:
        with autocast(settings):
            out, saved = saved_activations(model, x, exclude=list(model.parameters()))
    except Exception:  # noqa: BLE001 - reported as "not measured"
        return None
    del out
    return saved.bytes / x.shape[0]


def settle_measured_choices(model: nn.Module, x, y, settings: BenchSettings) -> dict:
    """Runs one training forward and backward of a copy of ``model`` on
    ``x``, which measures the training choices its shapes need
    (conv/measured.py), then tunes its eval-mode choices in the model
    (resnet_fast.tune), and returns what was chosen: {kind: {choice: number
    of shapes}}, e.g. {"block": {"lean": 5, "eager": 3}, "conv": {"gemm": 6,
    "onednn": 8}, "eval_conv": {"winograd": 9}}."""
    probe = copy.deepcopy(model).train()
    with measured.recording() as used:
        with autocast(settings):
            loss = nn.functional.cross_entropy(probe(x), y)
        loss.backward()
        probe.eval()
        with autocast(settings):
            tune(probe, x)
        with torch.no_grad(), autocast(settings):
            probe(x)
    summary: dict = {}
    for key, choice in used.items():
        kind = summary.setdefault(key[0], {})
        kind[choice] = kind.get(choice, 0) + 1
    return summary


def labels(settings: BenchSettings, mode: str) -> tuple[list[str], dict[str, str]]:
    """(the variants timed in ``mode``, {variant: why it is left out})."""
    wanted = ["fast", "fast-checked", "eager"]
    if settings.compile:
        wanted += list(COMPILED)
    if settings.peers:
        wanted += list(PEERS)
    timed, left_out = [], {}
    for label in wanted:
        if mode not in VARIANTS[label].modes:
            continue
        why = available(label, settings.torch_device, settings.dtype)
        if why is None:
            timed.append(label)
        else:
            left_out[label] = why
    return timed, left_out


def units_per_model(settings: BenchSettings) -> int:
    """Progress units of one model: build, check, saved bytes, then per mode
    each round."""
    return 3 + 2 * settings.rounds


def bench_model(name: str, settings: BenchSettings, progress: tqdm) -> dict:
    """Everything ``resnet-fast bench`` measures for one model.

    Returns:
        the JSON row: backend, batch size and resolution, accuracy check,
        fusion count (and a warning when nothing was fused), saved bytes, and
        per mode ("train", "infer") and variant the times, images/s and peak
        memory.
    """
    device = settings.torch_device
    batch, resolution = settings.size(name)
    progress.set_description_str(f"{name}: building")
    models = build_models(name, settings)
    x, y = make_batch(settings, name, seed=0)
    progress.update()
    progress.set_description_str(f"{name}: accuracy check vs float64, fusion count")
    row: dict = {"model": name, "backend": fast_backend_for(device)}
    row.update(batch_size=batch, resolution=resolution)
    row["check"] = check_accuracy(models, x, y, settings)
    # Measured choices first (what a user's first step does), so that the
    # count, the saved bytes and the timings below see the settled model.
    row["measured"] = settle_measured_choices(models["fast"], x, y, settings)
    with autocast(settings):
        fusion = count_fusion(models["fast"], models["eager"], x)
    row["fusion"] = fusion_dict(fusion)
    row["fusion"]["warning"] = warn_if_unfused(name, fusion)
    progress.update()
    progress.set_description_str(f"{name}: saved activations")
    row["saved_bytes_per_image"] = {
        label: saved_bytes_per_image(model, x, settings) for label, model in models.items()
    }
    progress.update()
    oracle_logits = oracle_eval_logits(models["eager"], x)
    with tempfile.TemporaryDirectory(prefix="resnet-fast-bench-") as folder:
        shared, batch_file = os.path.join(folder, "models.pt"), os.path.join(folder, "batch.pt")
        torch.save({label: model.cpu() for label, model in models.items()}, shared)
        torch.save((x.cpu(), y.cpu()), batch_file)
        del models
        for mode in ("train", "infer"):
            row[mode] = time_mode(
                name, mode, settings, folder, shared, batch_file, oracle_logits, progress
            )
    return row


def time_mode(name, mode, settings, folder, shared, batch_file, oracle_logits, progress) -> dict:
    """Every variant of ``mode`` in a process of its own, taking turns (see
    the module doc); returns {variant: stats} with the speed-ups of "fast"
    and, for inference, each variant's logits error against float64."""
    batch, _ = settings.size(name)
    progress.set_description_str(f"{name}: {'training step' if mode == 'train' else 'inference'}")
    timed, left_out = labels(settings, mode)
    threads = settings.threads or torch.get_num_threads()
    workers, out = {}, {}
    try:
        for label in timed:
            logits = os.path.join(folder, f"{label}.logits.pt") if mode == "infer" else ""
            job = Job(
                label, mode, name, shared, batch_file, settings.device, settings.dtype,
                settings.channels_last, threads, max(settings.warmup, 1), logits,
            )  # fmt: skip
            try:
                workers[label] = Worker(job)
            except WorkerError as error:
                left_out[label] = f"failed: {error}"
        times = take_turns(workers, settings.rounds, progress.update)
    finally:
        for worker in workers.values():
            worker.close()
    for label, samples in times.items():
        stats = summarize(samples)
        stats["images_per_s"] = batch / (stats["median_ms"] * 1e-3)
        stats["samples_ms"] = samples
        stats["peak_memory_MiB"] = workers[label].info.get("peak_memory_MiB")
        if mode == "infer":
            stats["logits_error"] = _logits_error(folder, label, oracle_logits)
        out[label] = stats
    if "fast" in out:
        for other in [label for label in out if label != "fast"]:
            out[f"speedup_vs_{other}"] = out[other]["median_ms"] / out["fast"]["median_ms"]
    out["left_out"] = left_out
    return out


@torch.no_grad()
def oracle_eval_logits(eager: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits of a float64 copy of ``eager`` as it is handed to the
    variants, for the first CHECK_BATCH images of ``x``."""
    oracle = copy.deepcopy(eager).double().eval()
    return oracle(x[:CHECK_BATCH].double()).float()


def _logits_error(folder: str, label: str, oracle: torch.Tensor) -> float | None:
    """Worst relative error of a variant's eval logits (first images) against
    the float64 oracle."""
    path = os.path.join(folder, f"{label}.logits.pt")
    if not os.path.exists(path):
        return None
    got = torch.load(path, weights_only=True)[: oracle.shape[0]]
    return _relative(got, oracle)


def run_bench(settings: BenchSettings, progress: tqdm) -> list[dict]:
    """``bench_model`` for each model in the settings."""
    return [bench_model(name, settings, progress) for name in settings.models]


def settings_dict(settings: BenchSettings) -> dict:
    """The settings as recorded in the JSON file."""
    out = asdict(settings)
    out["sizes"] = {name: list(settings.size(name)) for name in settings.models}
    out["precision"] = settings.precision
    return out
