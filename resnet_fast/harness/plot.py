"""PNG bar charts of the benchmark results (matplotlib, an optional
dependency: without it the JSON and tables are still written and a warning
says how to get the plots)."""

from __future__ import annotations

import os
import warnings

from .report import MODE_NAMES, bench_caption, ops_caption

VARIANT_COLORS = {
    "fast": "#2a7ab9",
    "fast-checked": "#8fbfe0",
    "eager": "#9a9a9a",
    "compile": "#e08a2c",
    "compile-max": "#f2b880",
    "fast-compile": "#5b3f9e",
    "onnxruntime": "#3a9a5b",
    "openvino": "#c0392b",
}
PASS_COLORS = {"fwd": "#2a7ab9", "fwd+bwd": "#7cb8e0"}


def _pyplot():
    """matplotlib.pyplot on the non-interactive backend, or None (warned)."""
    try:
        import matplotlib
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: no PNG plot written "
            "(pip install matplotlib, or pip install 'resnet_fast[bench]')",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bench(result: dict, path: str) -> str | None:
    """Images/s of each variant, one panel per mode, models side by side,
    the fast model's speed-up over the fastest other variant written above
    its bar.

    Returns:
        ``path``, or None when matplotlib is missing.
    """
    plt = _pyplot()
    if plt is None:
        return None
    rows = result["rows"]
    timed = {v for row in rows for m in ("train", "infer") for v in row[m] if v in VARIANT_COLORS}
    variants = [v for v in VARIANT_COLORS if v in timed]
    fig, axes = plt.subplots(1, 2, figsize=(5 + 2.2 * len(rows), 4.2))
    width = 0.8 / len(variants)
    for ax, mode in zip(axes, ("train", "infer"), strict=True):
        for j, variant in enumerate(variants):
            xs = [i + (j - (len(variants) - 1) / 2) * width for i in range(len(rows))]
            rates = [row[mode].get(variant, {}).get("images_per_s", 0.0) for row in rows]
            bars = ax.bar(xs, rates, width, label=variant, color=VARIANT_COLORS[variant])
            if variant == "fast":
                for bar, row in zip(bars, rows, strict=True):
                    ax.annotate(
                        f"{_worst_ratio(row[mode]):.2f}x",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(rows)), [row["model"] for row in rows])
        ax.set_title(MODE_NAMES[mode])
        ax.set_ylabel("images / s (higher is better)")
        ax.margins(y=0.12)
    axes[0].legend(fontsize=8)
    fig.suptitle(bench_caption(result), fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def _worst_ratio(timed: dict) -> float:
    """fast's speed-up over the fastest other variant of a mode."""
    ratios = [v for k, v in timed.items() if k.startswith("speedup_vs_")]
    return min(ratios) if ratios else 1.0


def plot_ops(result: dict, path: str) -> str | None:
    """Speed-up of each fused op over eager per shape, forward and
    forward+backward, one panel per op; the dashed line is parity."""
    plt = _pyplot()
    if plt is None:
        return None
    ops = list(dict.fromkeys(r["op"] for r in result["rows"]))
    passes = list(dict.fromkeys(r["pass"] for r in result["rows"]))
    fig, axes = plt.subplots(len(ops), 1, figsize=(8, 2.4 * len(ops)), squeeze=False)
    width = 0.8 / len(passes)
    for ax, op in zip(axes[:, 0], ops, strict=True):
        shapes = list(dict.fromkeys((r["C"], r["H"]) for r in result["rows"] if r["op"] == op))
        for j, name in enumerate(passes):
            by_shape = {
                (r["C"], r["H"]): r["speedup"]
                for r in result["rows"]
                if r["op"] == op and r["pass"] == name
            }
            xs = [i + (j - (len(passes) - 1) / 2) * width for i in range(len(shapes))]
            ax.bar(xs, [by_shape.get(s, 0) for s in shapes], width, label=name,
                   color=PASS_COLORS.get(name))  # fmt: skip
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(shapes)), [f"C{c} H{h}" for c, h in shapes], fontsize=7)
        ax.set_ylabel("speed-up vs eager")
        ax.set_title(op, fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(ops_caption(result), fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
