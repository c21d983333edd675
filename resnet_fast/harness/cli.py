"""Command-line options shared by the benchmark scripts: those that time
training steps of whole models (benchmarks/block_step.py,
benchmarks/memory_modes.py) and those that time convolution paths against
oneDNN (benchmarks/gemm_conv.py, benchmarks/conv_algorithms.py)."""

from __future__ import annotations

import argparse


def model_step_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every model-step benchmark takes: --models
    (comma-separated model names), --batch, --resolution (square inputs) and
    --rounds (timed steps per variant); the script adds its own after them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    return parser


def conv_bench_parser(description: str, configs_help: str) -> argparse.ArgumentParser:
    """A parser for a convolution benchmark: --configs (comma-separated
    BATCHxRESOLUTION, described by configs_help), --rounds, --threads (None:
    the default thread count) and --json (where to write the rows)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--configs", default="16x64", help=configs_help)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    return parser
