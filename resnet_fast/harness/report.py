"""Tables (plain text for the terminal, markdown for the README) and JSON
files, built from the result dictionaries that the benchmarks return, so that
a table printed now and one rendered later from the JSON are the same."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from tabulate import tabulate

from .environment import describe

MODE_NAMES = {"train": "training step", "infer": "inference"}


@dataclass
class Table:
    """Headers, rows of cells (strings) and which columns align right."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]


def _tabulate(table: Table, fmt: str) -> str:
    # The cells are formatted already: no number parsing, alignment by column kind.
    align = ["right" if numeric else "left" for numeric in table.numeric]
    return tabulate(table.rows, table.headers, tablefmt=fmt, colalign=align, disable_numparse=True)


def render_text(table: Table) -> str:
    """Aligned columns for a terminal."""
    return _tabulate(table, "simple")


def render_markdown(table: Table) -> str:
    """A GitHub markdown table."""
    return _tabulate(table, "pipe")


def threads_text(count: int) -> str:
    """ "1 thread", "2 threads"."""
    return f"{count} thread" + ("" if count == 1 else "s")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rate(stats: dict | None) -> str:
    return "-" if stats is None else f"{stats['images_per_s']:.1f}"


def _kib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.0f}"


VARIANT_ORDER = ("fast", "fast-checked", "eager", "compile", "compile-max", "fast-compile",
                 "onnxruntime", "openvino")  # fmt: skip


def _variants(result: dict) -> list[str]:
    """The variants timed in any row and mode, in VARIANT_ORDER (results made
    before the variants existed have fast, eager and maybe compile)."""
    seen = {
        label
        for row in result["rows"]
        for mode in ("train", "infer")
        for label, stats in row[mode].items()
        if isinstance(stats, dict) and "median_ms" in stats
    }
    return [label for label in VARIANT_ORDER if label in seen]


PEER_VARIANTS = ("compile", "compile-max", "onnxruntime", "openvino")
"""The variants that are another tool at its strongest documented setting:
what a published speed-up is measured against (the README's table)."""


def bench_throughput_table(result: dict, ratios_against: tuple[str, ...] | None = None) -> Table:
    """Images/s of every variant, and fast's speed-up over each of the others
    (over those of ``ratios_against`` only, when given)."""
    variants = _variants(result)
    others = [
        label
        for label in variants
        if label != "fast" and (ratios_against is None or label in ratios_against)
    ]
    headers = ["model", "backend", "mode"] + [f"{label} img/s" for label in variants]
    headers += [f"fast vs {label}" for label in others]
    rows = []
    for row in result["rows"]:
        for mode in ("train", "infer"):
            timed = row[mode]
            cells = [row["model"], row["backend"], MODE_NAMES[mode]]
            cells += [_rate(timed.get(label)) for label in variants]
            cells += [_ratio(timed.get(f"speedup_vs_{label}")) for label in others]
            rows.append(cells)
    numeric = [False, False, False] + [True] * (len(headers) - 3)
    return Table(headers, rows, numeric)


def bench_memory_table(result: dict) -> Table:
    """Saved activations, peak GPU memory, the accuracy check and (in results
    that counted it) how many of the eager model's BatchNorms run fused."""
    on_gpu = result["environment"]["gpu"] is not None
    counted = any("fusion" in row for row in result["rows"])
    headers = ["model"] + (["BN fused"] if counted else [])
    headers += ["saved KiB/img fast", "saved KiB/img eager", "saved fast/eager"]
    if on_gpu:
        headers += ["train peak MiB fast", "eager"]
    headers += ["logits err fast (eager)", "grads err fast (eager)", "max abs diff logits", "check"]
    rows = []
    for row in result["rows"]:
        saved = row["saved_bytes_per_image"]
        fraction = (
            f"{saved['fast'] / saved['eager']:.2f}"
            if saved.get("fast") and saved.get("eager")
            else "-"
        )
        cells = [row["model"]]
        if counted:
            fusion = row.get("fusion")
            cells.append("-" if fusion is None else f"{fusion['fused']}/{fusion['batch_norms']}")
        cells += [_kib(saved.get("fast")), _kib(saved.get("eager")), fraction]
        if on_gpu:
            peak = row["train"]
            cells += [
                f"{peak['fast']['peak_memory_MiB']:.0f}",
                f"{peak['eager']['peak_memory_MiB']:.0f}",
            ]
        check = row["check"]
        cells += [
            f"{check['fast']['logits']:.1e} ({check['eager']['logits']:.1e})",
            f"{check['fast']['grads']:.1e} ({check['eager']['grads']:.1e})",
            f"{check['max_abs_logit_diff']:.1e}",
            "ok" if check["ok"] else "MISMATCH",
        ]
        rows.append(cells)
    return Table(headers, rows, [False] + [True] * (len(headers) - 2) + [False])


def sizes_text(models: list[str], size: Callable[[str], tuple[int, int]]) -> str:
    """ "batch 16 | 64x64" when every model runs at one size, else each
    model's: "batch x resolution: resnet18 16 x 64x64, tutorial_... 64 x 32x32"."""
    sizes = {name: tuple(size(name)) for name in models}
    if len(set(sizes.values())) == 1:
        batch, res = next(iter(sizes.values()))
        return f"batch {batch} | {res}x{res}"
    each = ", ".join(f"{name} {b} x {r}x{r}" for name, (b, r) in sizes.items())
    return f"batch x resolution: {each}"


def bench_caption(result: dict) -> str:
    """One line: where and how the benchmark ran."""
    env, s = result["environment"], result["settings"]
    where = env["gpu"]["name"] if env["gpu"] else f"{env['cpu']}, {threads_text(env['threads'])}"
    layout = "channels_last" if s["channels_last"] else "NCHW"
    default = (s["batch_size"], s["resolution"])  # results made before per-model sizes
    sizes = {row["model"]: (row.get("batch_size"), row.get("resolution")) for row in result["rows"]}
    sizes = {name: size if size[0] else default for name, size in sizes.items()}
    return (
        f"{where} | torch {env['torch']} | {s['precision']} | {layout} | "
        f"{sizes_text(list(sizes), sizes.__getitem__)} | "
        f"median of {s['rounds']} interleaved rounds"
    )


def bench_notes(result: dict) -> list[str]:
    """What a reader of the tables must know: models whose fast variant fused
    nothing (its timings are eager's own computation), and the choices the
    fast models measured on this machine (block shapes run eager instead of
    lean, convolution shapes run as matrix products)."""
    notes = [
        row["fusion"]["warning"]
        for row in result["rows"]
        if row.get("fusion") and row["fusion"].get("warning")
    ]
    for row in result["rows"]:
        for mode in ("train", "infer"):
            for label, why in row[mode].get("left_out", {}).items():
                notes.append(f"{row['model']} {MODE_NAMES[mode]}: {label} not timed: {why}")
        errors = {
            label: stats["logits_error"]
            for label, stats in row["infer"].items()
            if isinstance(stats, dict) and stats.get("logits_error") is not None
        }
        if errors:
            notes.append(
                f"{row['model']} inference, worst relative error of the logits vs float64: "
                + ", ".join(f"{label} {err:.1e}" for label, err in errors.items())
            )
        measured = row.get("measured")
        if measured:
            kinds = "; ".join(
                f"{_MEASURED_KINDS.get(kind, kind)}: "
                + ", ".join(f"{n} {choice}" for choice, n in sorted(choices.items()))
                for kind, choices in sorted(measured.items())
            )
            notes.append(f"{row['model']}: measured on this machine, shapes per choice: {kinds}")
    return notes


_MEASURED_KINDS = {
    "block": "residual blocks",
    "conv": "convolutions",
    "eval_conv": "inference 1x1 and 3x3 convolutions",
}


def ops_table(result: dict) -> Table:
    """Median times, speed-up and effective bandwidth of each op and shape."""
    headers = ["op", "pass", "C", "H", "fused ms", "eager ms", "speed-up", "fused GB/s"]
    headers.append("eager GB/s")
    rows = [
        [
            r["op"],
            r["pass"],
            str(r["C"]),
            str(r["H"]),
            f"{r['fused']['median_ms']:.3f}",
            f"{r['eager']['median_ms']:.3f}",
            f"{r['speedup']:.2f}x",
            f"{r['fused_GBps']:.1f}",
            f"{r['eager_GBps']:.1f}",
        ]
        for r in result["rows"]
    ]
    return Table(headers, rows, [False, False] + [True] * 7)


def ops_summary_table(result: dict) -> Table:
    """Per op and pass: geometric-mean and total-time speed-up over the shapes."""
    rows = [
        [s["op"], s["pass"], f"{s['geomean_speedup']:.2f}x", f"{s['total_time_speedup']:.2f}x"]
        for s in result["summary"]
    ]
    return Table(
        ["op", "pass", "geomean speed-up", "total-time speed-up"], rows, [False] * 2 + [True] * 2
    )


def ops_caption(result: dict) -> str:
    """One line: where and how the op benchmark ran."""
    env, s = result["environment"], result["settings"]
    where = env["gpu"]["name"] if env["gpu"] else f"{env['cpu']}, {threads_text(env['threads'])}"
    layout = "channels_last" if s["channels_last"] else "NCHW"
    return (
        f"{where} | torch {env['torch']} | {s['dtype']} | {layout} | batch {s['batch_size']}"
        f" | training mode | median of {s['rounds']} interleaved rounds"
    )


def write_benchmark_json(path: str, benchmark: str, command: str, rows: list, device) -> str:
    """Writes a benchmark script's result (its name, the command that made
    it, the environment of ``device`` and its rows) to ``path``; returns the
    path."""
    result = {
        "benchmark": benchmark,
        "command": command,
        "environment": describe(device),
        "rows": rows,
    }
    return write_json(result, path)


def dump_json_if_asked(path: str | None, result) -> None:
    """Writes ``result`` as indented JSON to ``path`` (a script's --json
    option) when one is given; None writes nothing."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


def write_json(result: dict, path: str) -> str:
    """Writes ``result`` to ``path`` (creating its folder) and returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return path


README_BEGIN = (
    "<!-- results:begin: generated by `python benchmarks/render_readme_table.py` "
    "from benchmarks/results/; edit there, not here -->"
)
README_END = "<!-- results:end -->"
DEVICE_TITLES = {"cpu": "CPU", "cuda": "GPU"}


def _load(results_dir: str, name: str) -> dict | None:
    path = os.path.join(results_dir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def readme_section(results_dir: str, link_prefix: str) -> str:
    """The README's results section from the committed results: for each
    device with results, the model table (speed-ups against the peers at
    their strongest settings only, PEER_VARIANTS) and plot. The fused ops'
    comparison (ops-<device>.json) is against eager PyTorch's op sequence,
    not a peer, so it stays in its JSON file.

    Args:
        results_dir: the folder holding ``bench-<device>.json`` and its PNG.
        link_prefix: how the README reaches that folder (e.g.
            "benchmarks/results").
    """
    parts = [README_BEGIN]
    for device, title in DEVICE_TITLES.items():
        bench = _load(results_dir, f"bench-{device}.json")
        if bench is not None:
            parts += [
                f"### Models, {title}",
                f"{bench_caption(bench)}; commit {bench['environment']['commit']}, made by",
                f"```bash\n{bench['command']}\n```",
                render_markdown(bench_throughput_table(bench, PEER_VARIANTS)),
                render_markdown(bench_memory_table(bench)),
                *[f"Note: {note}." for note in bench_notes(bench)],
                f"![resnet-fast bench, {title}]({link_prefix}/bench-{device}.png)",
            ]
    parts.append(README_END)
    return "\n\n".join(parts)


def replace_readme_section(readme: str, section: str) -> str:
    """``readme`` with the text between the results markers replaced."""
    start = readme.index(README_BEGIN)
    end = readme.index(README_END) + len(README_END)
    return readme[:start] + section + readme[end:]
