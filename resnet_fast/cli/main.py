"""The ``resnet-fast`` command (also ``python -m resnet_fast``).

    resnet-fast bench   end-to-end model benchmark: training step and inference,
                        fast vs eager PyTorch (and torch.compile), table + JSON + PNG
    resnet-fast ops     each fused op vs its eager sequence at ResNet-50 shapes
    resnet-fast check   every backend available here against the reference
    resnet-fast info    build, versions, CPU vector level, GPU, backends

Arguments are checked before anything heavy runs; a bad one ends the command
with exit status 2 and a message saying what is wrong and what is accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import torch
from tqdm import tqdm

import resnet_fast

from ..conv import measured
from ..harness import backends, environment, report
from ..harness.workloads import BENCH_MODELS, bench_model_spec

DEFAULT_MODELS = ["resnet18", "resnet50"]
DEFAULT_OUT = "resnet-fast-results"
# (batch size, resolution) when not given and the model has no size of its own
# (resnet_fast/harness/workloads.py): about two minutes on a 2-core CPU; on a GPU, a size
# where the kernels, not the launches, set the pace.
DEFAULT_SIZE = {"cpu": (16, 64), "cuda": (128, 224)}
QUICK = {"models": ["resnet18"], "batch_size": 4, "resolution": 32, "rounds": 3, "warmup": 1}
DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


class ArgumentError(Exception):
    """A command-line value that cannot work; the message says why."""


# ---------------------------------------------------------------- arguments


def _int_at_least(minimum: int, rule: str):
    """An argparse type: a whole number >= ``minimum`` (``rule`` says so)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "must be at least 1")
_non_negative_int = _int_at_least(0, "must be 0 or more")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:N"
    )
    p.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16, fp16",
    )
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format (default) or NCHW",
    )
    p.add_argument("--rounds", type=_positive_int, default=None, help="timed rounds (median)")
    p.add_argument("--warmup", type=_non_negative_int, default=None, help="untimed calls first")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice, printed)",
    )
    p.add_argument("--quick", action="store_true", help="the smallest meaningful run (CI)")
    p.add_argument("--out", default=DEFAULT_OUT, help="folder for the JSON and PNG files")
    p.add_argument(
        "--steady-allocator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep glibc from unmapping freed memory (steadier CPU timings; default on)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``resnet-fast`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="resnet-fast",
        description="Benchmarks and self-checks for resnet_fast's fused ResNet ops.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser(
        "bench",
        help="training step and inference: fast models vs eager PyTorch",
        description="Training step (forward, backward, SGD) and inference throughput of "
        "resnet_fast models vs the same models in eager PyTorch (and torch.compile with "
        "--compile, ONNX Runtime and OpenVINO with --peers), each variant in a process of "
        "its own, checked against float64 first; table, JSON and PNG.",
    )
    bench.add_argument(
        "--models",
        default=None,
        help=f"comma-separated (default {','.join(DEFAULT_MODELS)}); known: "
        + ", ".join(BENCH_MODELS)
        + ". tutorial_* are user-style models (plain PyTorch as the common CIFAR tutorials "
        "write it) run through resnet_fast.convert; they default to batch 64 at 32x32",
    )
    bench.add_argument(
        "--resolution",
        type=_positive_int,
        default=None,
        help="input height = width (default: the model's own, else the device's)",
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of the eager and of the fast model (training: the "
        "default mode, and max-autotune-no-cudagraphs for the eager model; inference: with "
        "freezing, PyTorch's CPU inference recipe)",
    )
    bench.add_argument(
        "--peers",
        action="store_true",
        help="also time ONNX Runtime and OpenVINO inference (CPU, fp32) where installed "
        "(pip install .[peers])",
    )
    _add_common(bench)

    ops = sub.add_parser(
        "ops",
        help="each fused op vs its eager sequence at ResNet-50 shapes",
        description="Each fused op vs the eager PyTorch sequence it replaces, forward and "
        "forward+backward, training mode, at the ResNet-50 BatchNorm shapes: median "
        "times, speed-up, effective GB/s; table, JSON and PNG.",
    )
    ops.add_argument("--ops", default=None, help="comma-separated subset of the fused ops")
    _add_common(ops)

    check = sub.add_parser(
        "check", help="every available backend against the reference (exit 1 on a mismatch)"
    )
    check.add_argument("--backends", default=None, help="comma-separated (default: all)")
    check.add_argument("-v", "--verbose", action="store_true", help="print every case")

    info = sub.add_parser("info", help="build, versions, CPU vector level, GPU, backends")
    info.add_argument("--json", action="store_true", help="print JSON")
    return parser


def resolve_device(text: str) -> torch.device:
    """``--device`` as a torch.device; CUDA only where CUDA is."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ArgumentError(f"--device must be auto, cpu, cuda or cuda:N; got {text!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ArgumentError(f"--device must be auto, cpu, cuda or cuda:N; got {text!r}")
    if not torch.cuda.is_available():
        why = (
            f"this torch ({torch.__version__}) is built without CUDA"
            if torch.version.cuda is None
            else f"torch (CUDA {torch.version.cuda}) sees no CUDA device"
        )
        raise ArgumentError(f"--device {text}: CUDA is not available here: {why}")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ArgumentError(
            f"--device {text}: there are {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def resolve_dtype(text: str, device: torch.device) -> str:
    """``--dtype`` as a torch dtype name; auto = bf16 on a GPU, fp32 on the CPU."""
    if text == "auto":
        if device.type != "cuda":
            return "float32"
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if text not in DTYPE_NAMES:
        raise ArgumentError(f"--dtype must be auto, fp32, bf16 or fp16; got {text!r}")
    name = DTYPE_NAMES[text]
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ArgumentError("--dtype bf16: this GPU does not support bfloat16")
    return name


def resolve_models(text: str | None, quick: bool) -> list[str]:
    """``--models`` as a list of known model names."""
    if text is None:
        return list(QUICK["models"] if quick else DEFAULT_MODELS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = list(BENCH_MODELS)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ArgumentError(
            f"--models: unknown model {', '.join(map(repr, unknown)) or repr(text)}; "
            f"known: {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def check_trainable(sizes: dict[str, tuple[int, int]]) -> None:
    """Every model must train at its batch size and resolution: BatchNorm in
    training mode needs more than one value per channel, and a fixed pooling
    head needs its input size. Checked on the meta device, which computes
    shapes only."""
    for name, (batch_size, resolution) in sizes.items():
        with torch.device("meta"):
            model = bench_model_spec(name).build_eager().train()
            try:
                model(torch.empty(batch_size, 3, resolution, resolution))
            except (ValueError, RuntimeError) as error:
                raise ArgumentError(
                    f"{name} cannot train at --batch-size {batch_size} and --resolution "
                    f"{resolution}: {error}"
                ) from None


def model_sizes(
    args: argparse.Namespace, device: torch.device, names: list[str]
) -> dict[str, tuple[int, int]]:
    """(batch size, resolution) per model: each flag given (or --quick) wins,
    else the model's own default on this device, else the device's."""
    batch, resolution, _, _ = _sizes(args, device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    sizes = {}
    for name in names:
        own = bench_model_spec(name).sizes.get(kind)
        if own is None or args.quick:
            sizes[name] = (batch, resolution)
        else:
            sizes[name] = (args.batch_size or own[0], args.resolution or own[1])
    return sizes


def _sizes(args: argparse.Namespace, device: torch.device) -> tuple[int, int, int, int]:
    """(batch size, resolution, rounds, warmup) from the flags, --quick and the device."""
    batch, resolution = DEFAULT_SIZE["cuda" if device.type == "cuda" else "cpu"]
    rounds, warmup = (20, 3) if device.type == "cpu" else (30, 5)
    if args.quick:
        batch, resolution = QUICK["batch_size"], QUICK["resolution"]
        rounds, warmup = QUICK["rounds"], QUICK["warmup"]
    return (
        args.batch_size or batch,
        getattr(args, "resolution", None) or resolution,
        args.rounds or rounds,
        warmup if args.warmup is None else args.warmup,
    )


# ---------------------------------------------------------------- commands


def _prepare_run(args: argparse.Namespace, device: torch.device) -> None:
    environment.set_threads(args.threads)
    if args.steady_allocator and device.type == "cpu":
        environment.steady_allocator()


def _header(command: str, device: torch.device, details: str) -> str:
    where = (
        environment.gpu(device)["name"]
        if device.type == "cuda"
        else f"{environment.cpu_name()}, {report.threads_text(torch.get_num_threads())}"
    )
    return (
        f"resnet-fast {command} | {device} ({where}) | torch {torch.__version__} | "
        f"resnet_fast {resnet_fast.__version__} | {details}\n"
        f"allocator: {environment.allocator_setting()}"
    )


def check_out(text: str) -> str:
    """``--out``, checked before any timing: a folder that exists or can be made."""
    path = os.path.abspath(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArgumentError(f"--out must be a folder; {text!r} is a file")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ArgumentError(f"--out {text!r}: cannot make a folder under the file {existing!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArgumentError(f"--out {text!r}: {existing!r} is not writable")
    return text


def _out_paths(out: str, stem: str) -> tuple[str, str]:
    return os.path.join(out, f"{stem}.json"), os.path.join(out, f"{stem}.png")


def _progress(total: int, args: argparse.Namespace) -> tqdm:
    """A progress bar on stderr (stdout keeps the tables), on a terminal
    only: in logs and pipes it would be noise (``disable=None``)."""
    return tqdm(total=total, disable=True if args.no_progress else None, leave=False, unit="step")


def cmd_bench(args: argparse.Namespace) -> int:
    from ..harness import model_bench as bench_models
    from ..harness import plot

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    check_out(args.out)
    names = resolve_models(args.models, args.quick)
    batch, resolution, rounds, warmup = _sizes(args, device)
    sizes = model_sizes(args, device, names)
    check_trainable(sizes)
    settings = bench_models.BenchSettings(
        models=names,
        device=str(device),
        dtype=dtype,
        batch_size=batch,
        resolution=resolution,
        channels_last=args.channels_last,
        compile=args.compile,
        rounds=rounds,
        warmup=warmup,
        peers=args.peers,
        sizes={n: list(size) for n, size in sizes.items() if size != (batch, resolution)},
    )
    _prepare_run(args, device)
    settings.threads = torch.get_num_threads()
    layout = "channels_last" if settings.channels_last else "NCHW"
    print(
        _header(
            "bench",
            device,
            f"{','.join(names)} | {settings.precision} | {layout} | "
            f"{report.sizes_text(settings.models, settings.size)} | {rounds} rounds",
        ),
        flush=True,
    )
    progress = _progress(len(names) * bench_models.units_per_model(settings), args)
    rows = bench_models.run_bench(settings, progress)
    progress.close()
    result = {
        "kind": "bench",
        "command": args.command_line,
        "environment": environment.describe(device),
        "settings": bench_models.settings_dict(settings),
        "rows": rows,
    }
    print()
    print(report.bench_caption(result))
    print(report.render_text(report.bench_throughput_table(result)))
    print()
    print(report.render_text(report.bench_memory_table(result)))
    for note in report.bench_notes(result):
        print(f"note: {note}")
    json_path, png_path = _out_paths(args.out, f"bench-{device.type}")
    print(f"\nwrote {report.write_json(result, json_path)}")
    if plot.plot_bench(result, png_path):
        print(f"wrote {png_path}")
    failed = [row["model"] for row in rows if not row["check"]["ok"]]
    if failed:
        print(
            f"MISMATCH: {', '.join(failed)} differ from float64 more than eager does",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from ..harness import op_bench as bench_ops
    from ..harness import plot

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    check_out(args.out)
    names = bench_ops.OPS if args.ops is None else [o.strip() for o in args.ops.split(",")]
    unknown = [name for name in names if name not in bench_ops.OPS]
    if unknown or not names:
        raise ArgumentError(
            f"--ops: unknown op {', '.join(map(repr, unknown)) or repr(args.ops)}; "
            f"known: {', '.join(bench_ops.OPS)}"
        )
    batch, _, rounds, warmup = _sizes(args, device)
    if args.batch_size is None and not args.quick:
        batch = 16 if device.type == "cpu" else 64
    shapes = bench_ops.QUICK_SHAPES if args.quick else bench_ops.RESNET50_BN_SHAPES
    settings = bench_ops.OpsSettings(
        ops=list(names),
        shapes=list(shapes),
        device=str(device),
        dtype=dtype,
        batch_size=batch,
        channels_last=args.channels_last,
        rounds=rounds,
        warmup=warmup,
    )
    _prepare_run(args, device)
    layout = "channels_last" if settings.channels_last else "NCHW"
    print(
        _header("ops", device, f"{dtype} | {layout} | batch {batch} | {rounds} rounds"), flush=True
    )
    progress = _progress(bench_ops.units(settings), args)
    rows, summary = bench_ops.run_ops(settings, progress)
    progress.close()
    result = {
        "kind": "ops",
        "command": args.command_line,
        "environment": environment.describe(device),
        "settings": bench_ops.settings_dict(settings),
        "rows": rows,
        "summary": summary,
    }
    print()
    print(report.ops_caption(result) + f" | backend {result['settings']['backend']}")
    print(report.render_text(report.ops_table(result)))
    print()
    print(report.render_text(report.ops_summary_table(result)))
    json_path, png_path = _out_paths(args.out, f"ops-{device.type}")
    print(f"\nwrote {report.write_json(result, json_path)}")
    if plot.plot_ops(result, png_path):
        print(f"wrote {png_path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..harness.check import run_check

    statuses = backends.all_backends()
    if args.backends is not None:
        wanted = [name.strip() for name in args.backends.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in resnet_fast.BACKENDS]
        if unknown or not wanted:
            named = ", ".join(map(repr, unknown)) or repr(args.backends)
            raise ArgumentError(
                f"--backends: unknown backend {named}; known: {', '.join(resnet_fast.BACKENDS)}"
            )
        statuses = [s for s in statuses if s.name in wanted]

    def show(result) -> None:
        if args.verbose or not result.ok:
            status = "ok" if result.ok else "MISMATCH"
            detail = result.error or f"{result.worst:.1e} ({result.tensor})"
            print(f"  {result.backend:14} {result.case:45} {detail}  {status}", flush=True)

    print("resnet-fast check: each op vs resnet_fast.reference in float64", flush=True)
    results, skipped = run_check(statuses, on_case=show)
    for name in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == name]
        bad = [r for r in mine if not r.ok]
        worst = {}
        for r in mine:
            dtype = r.case.split()[2]
            worst[dtype] = max(worst.get(dtype, 0.0), r.worst)
        errors = ", ".join(f"{d} {w:.1e} (tolerance {_tolerance(d):.0e})" for d, w in worst.items())
        verdict = "ok" if not bad else f"{len(bad)} MISMATCH"
        print(f"{name:14} {len(mine):3d} cases  worst relative error: {errors}  {verdict}")
    for status in skipped:
        print(f"{status.name:14} skipped: {status.reason}")
    if not results:
        print("no backend could run here", file=sys.stderr)
        return 1
    return 0 if all(r.ok for r in results) else 1


def _tolerance(dtype_name: str) -> float:
    from ..harness.check import TOLERANCE

    return TOLERANCE[getattr(torch, dtype_name)]


def info_dict() -> dict:
    """What ``resnet-fast info`` shows."""
    build = resnet_fast.build_info()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment.describe(device)
    env.pop("argv")
    env.pop("allocator")
    env["package_path"] = os.path.dirname(os.path.abspath(resnet_fast.__file__))
    env["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env["cpu_capability"] = build.get("cpu_capability")
    env["backends"] = [
        {"name": s.name, "available": s.available, "device": s.device, "reason": s.reason}
        for s in backends.all_backends()
    ]
    env["measured_choices"] = measured.store_summary()
    return env


def cmd_info(args: argparse.Namespace) -> int:
    info = info_dict()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    build = info["build_info"]
    gpu = info["gpu"]
    lines = [
        f"resnet_fast  {info['resnet_fast']}  ({info['package_path']}, "
        f"commit {info['commit'] or 'unknown'})",
        f"torch        {info['torch']}  (CUDA {info['torch_cuda'] or 'none'})  "
        f"python {info['python']}",
        f"platform     {info['platform']}",
        f"CPU          {info['cpu']}, {report.threads_text(info['threads'])}; kernels "
        f"{build.get('cpu_capability')} (compiled: {build.get('cpu_capabilities_compiled')})",
        "GPU          "
        + (
            f"{gpu['name']} (compute {gpu['capability']}, {gpu['memory_GiB']} GiB), "
            f"{info['cuda_devices']} device(s)"
            if gpu
            else "none"
        ),
        f"compiled     backends {', '.join(build['backends'])}; CUDA archs "
        f"{build.get('cuda_archs') or 'none'}; built against torch {build.get('torch_version')}",
        f"triton       {info['triton'] or 'not installed'}",
        "backends:",
    ]
    for b in info["backends"]:
        where = f"runs on {b['device']}" if b["available"] else "unavailable"
        lines.append(f"  {b['name']:14} {where:16} {b['reason']}")
    stored = info["measured_choices"]
    lines += [
        f"choices      {stored['entries']} measured choices stored for this machine and build "
        f"in {stored['file']}",
        f"             (all builds: {stored['files']} file(s) in {stored['folder']}; delete "
        "that folder to measure again)",
    ]
    print("\n".join(lines))
    return 0


def command_line(argv: list[str]) -> str:
    """How this run was started, for the JSON file: the command, and the
    allocator variables from the environment when they are set."""
    env = [
        f"{key}={os.environ[key]}"
        for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
        if key in os.environ
    ]
    return shlex.join([*env, "resnet-fast", *argv])


COMMANDS = {"bench": cmd_bench, "ops": cmd_ops, "check": cmd_check, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    """Runs ``resnet-fast`` with ``argv`` (default: the process's arguments).

    Returns:
        the exit status: 0 success, 1 a check failed, 2 bad arguments.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)
    try:
        return COMMANDS[args.command](args)
    except ArgumentError as error:
        parser.exit(2, f"resnet-fast {args.command}: error: {error}\n")
    return 2  # unreachable: parser.exit raises SystemExit


if __name__ == "__main__":
    sys.exit(main())
