"""Where the Triton tests run: TRITON_DEVICE ("cuda" on a GPU, "cpu" under
the interpreter) and TRITON_SKIP_REASON (None when they can run).

Imported by conftest.py after it has set TRITON_INTERPRET; this module does
not import triton itself (find_spec only)."""

import importlib.util

import torch

from resnet_fast.triton.interpreter import triton_interpreting

INTERPRETING = triton_interpreting()
TRITON_DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"


def _skip_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if TRITON_DEVICE == "cpu" and not INTERPRETING:
        return "no CUDA device and TRITON_INTERPRET is not set"
    return None


TRITON_SKIP_REASON = _skip_reason()
# Under the interpreter every kernel runs in Python: the tests keep to small shapes.
SMALL_ONLY = TRITON_DEVICE == "cpu"
