"""The native library: loads resnet_fast._C, which registers torch.ops.resnet_fast
(building it first when the install shipped sources only; build.py), and says
what it contains (build_info). spec.py lists what it is built from."""

import importlib.util
import os
import sys

import torch  # noqa: F401  (torch must be loaded before the extension)


def _built_here() -> bool:
    """Whether this package folder holds a compiled _C (an editable install
    of another checkout can answer for resnet_fast._C too: not ours)."""
    if "resnet_fast._C" in sys.modules:
        return True
    found = importlib.util.find_spec("resnet_fast._C")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return found is not None and os.path.dirname(os.path.abspath(found.origin or "")) == here


if _built_here():
    # Built ahead of time (pip install --no-build-isolation, setup.py build_ext).
    try:
        from .. import _C
    except ImportError as error:  # pragma: no cover - exercised only on a broken install
        raise ImportError(
            "resnet_fast's compiled library resnet_fast._C does not load "
            f"({error}). Rebuild it against the installed torch with:  "
            "pip install --no-build-isolation -e .  (from the repository root)"
        ) from error
else:
    # A plain `pip install .` ships the sources: built once, at first import.
    from .build import load as _load

    _C = _load()


# Read once: a constant for torch.compile, which cannot trace into pybind11.
_BUILD_INFO = dict(_C.build_info())


def build_info() -> dict:
    """What this build of resnet_fast contains.

    Returns:
        dict with ``backends`` (compiled native backends, e.g. ``["cpu"]``),
        ``cuda_archs`` (the CUDA architectures compiled, "" without CUDA),
        ``torch_version`` (the torch it was built against),
        ``cpu_capabilities_compiled`` (ISA builds of the CPU kernels) and
        ``cpu_capability`` (the one this processor runs; capped by the
        environment variable ``RESNET_FAST_CPU_CAPABILITY``).
    """
    return dict(_BUILD_INFO)
