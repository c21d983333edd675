"""What ``resnet-fast bench`` compares: each variant of a model, built the way
a user would run it at its strongest documented setting, for one mode
("train": forward, loss, backward, SGD; "infer": eval mode, no_grad).

    eager         the model in plain PyTorch
    fast          resnet_fast: the zoo model or convert() of the user's; for
                  inference frozen and tuned on the batch (resnet_fast.freeze,
                  resnet_fast.tune), as for deployment
    fast-checked  resnet_fast for inference without freeze: the default,
                  which compares the weights' values on each call (one read)
    compile       torch.compile of the eager model: the default mode for
                  training; for inference with freezing
                  (torch._inductor.config.freezing, PyTorch's CPU inference
                  recipe: BN folded, weights prepacked, epilogues fused)
    compile-max   torch.compile of the eager model for training in mode
                  "max-autotune-no-cudagraphs" (inductor also times its own
                  GEMM templates against the library kernels)
    fast-compile  torch.compile of the fast model, with compile's settings
    onnxruntime   ONNX Runtime's CPU execution provider, all graph
                  optimizations, the eager model exported by torch.onnx
                  (inference; fp32)
    openvino      OpenVINO on the CPU, converted from the eager model, in
                  float32 (its default on CPUs with bfloat16 units is bf16,
                  which would compare another precision), latency hint
                  (inference; fp32)

Every variant runs in a process of its own (peer_worker.py), with the same
thread count, the same weights and the same batch; see model_bench.py for
how they are timed side by side.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Variant:
    """One way of running a model.

    Attributes:
        label: its name in tables and JSON.
        modes: which of "train", "infer" it runs.
        package: the optional package it needs, or None.
        fp32_cpu_only: only runs fp32 on the CPU.
    """

    label: str
    modes: tuple[str, ...]
    package: str | None = None
    fp32_cpu_only: bool = False


VARIANTS = {
    v.label: v
    for v in (
        Variant("eager", ("train", "infer")),
        Variant("fast", ("train", "infer")),
        Variant("fast-checked", ("infer",)),
        Variant("compile", ("train", "infer")),
        Variant("compile-max", ("train",)),
        Variant("fast-compile", ("train", "infer")),
        Variant("onnxruntime", ("infer",), "onnxruntime", True),
        Variant("openvino", ("infer",), "openvino", True),
    )
}

COMPILED = ("compile", "compile-max", "fast-compile")
PEERS = ("onnxruntime", "openvino")


def available(label: str, device: torch.device, dtype: str) -> str | None:
    """Why variant ``label`` cannot run here, or None."""
    variant = VARIANTS[label]
    if variant.package and importlib.util.find_spec(variant.package) is None:
        return f"{variant.package} is not installed (pip install .[peers])"
    if variant.fp32_cpu_only and (device.type != "cpu" or dtype != "float32"):
        return "compared on the CPU in float32 only"
    return None


@dataclass
class Job:
    """Everything a worker needs to build one variant (JSON-serializable).

    Attributes:
        variant, mode: what to build.
        model: the bench model's name (workloads.py).
        models: path of {"eager": module, "fast": module} (torch.save'd, on
            the CPU, the same weights): what every variant starts from, built
            once by the coordinator.
        batch: path of the (x, y) batch.
        device, dtype, channels_last, threads: as in BenchSettings.
        warmup: untimed calls before the worker reports ready.
        logits: path to save the first inference output to (the accuracy of
            each variant is checked by the coordinator), or "".
    """

    variant: str
    mode: str
    model: str
    models: str
    batch: str
    device: str
    dtype: str
    channels_last: bool
    threads: int
    warmup: int
    logits: str = ""


def _autocast(job: Job) -> contextlib.AbstractContextManager:
    if job.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(job.device).type, dtype=getattr(torch, job.dtype))


def _load(job: Job, which: str) -> nn.Module:
    return torch.load(job.models, weights_only=False)[which]


def _torch_model(job: Job, x: torch.Tensor) -> nn.Module:
    model = _load(job, "eager" if job.variant in ("eager", "compile", "compile-max") else "fast")
    fmt = torch.channels_last if job.channels_last else torch.contiguous_format
    model = model.to(torch.device(job.device), memory_format=fmt)
    model.train(job.mode == "train")
    if job.mode == "infer" and job.variant in ("fast", "fast-compile"):
        import resnet_fast

        resnet_fast.freeze(model)
        with _autocast(job):
            resnet_fast.tune(model, x)
    if job.variant in COMPILED:
        if job.mode == "infer":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
        mode = "max-autotune-no-cudagraphs" if job.variant == "compile-max" else None
        model = torch.compile(model, mode=mode)
    return model


def _torch_step(job: Job, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    model = _torch_model(job, x)
    if job.mode == "infer":

        def infer():
            with torch.no_grad(), _autocast(job):
                return model(x)

        return infer
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def train():
        opt.zero_grad(set_to_none=True)
        with _autocast(job):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return train


def _eager_eval(job: Job) -> nn.Module:
    return _load(job, "eager").eval()


def _onnxruntime_step(job: Job, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    import onnxruntime as ort

    path = os.path.join(os.path.dirname(job.models), f"{job.model}.onnx")
    if not os.path.exists(path):
        with torch.no_grad():
            torch.onnx.export(copy.deepcopy(_eager_eval(job)), (x,), dynamo=True).save(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = job.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: x.contiguous().numpy()}
    return lambda: torch.from_numpy(session.run(None, feed)[0])


def _openvino_step(job: Job, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    import openvino as ov

    core = ov.Core()
    with torch.no_grad():
        converted = ov.convert_model(_eager_eval(job), example_input=x)
    config = {
        "INFERENCE_NUM_THREADS": job.threads,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    request = core.compile_model(converted, "CPU", config).create_infer_request()
    data = x.contiguous().numpy()
    return lambda: torch.from_numpy(request.infer({0: data})[0].copy())


def build_step(job: Job) -> Callable[[], object]:
    """The zero-argument callable that runs one step of ``job``'s variant
    (its first inference output is the variant's logits)."""
    x, y = torch.load(job.batch, weights_only=True)
    device = torch.device(job.device)
    if job.variant == "onnxruntime":
        return _onnxruntime_step(job, x, y)
    if job.variant == "openvino":
        return _openvino_step(job, x, y)
    fmt = torch.channels_last if job.channels_last else torch.contiguous_format
    x = x.to(device).contiguous(memory_format=fmt)
    return _torch_step(job, x, y.to(device))
