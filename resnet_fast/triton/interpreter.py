"""Whether Triton runs its kernels on the CPU (its interpreter), read without
importing Triton: the backend choice (resnet_fast._ops.backends) asks it on
machines where triton may not even be installed."""

import os


def triton_interpreting() -> bool:
    """True when Triton runs its kernels on the CPU (TRITON_INTERPRET set to
    anything but "" or "0", as Triton itself reads it).

    Triton reads the variable when it is imported, so this reflects the
    state of the process, not a switch that can be flipped later."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
