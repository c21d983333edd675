"""Command-line options shared by the benchmark scripts that time training
steps of whole models (benchmarks/block_step.py, benchmarks/memory_modes.py)."""

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
