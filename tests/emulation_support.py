"""Where the tests run the "cuda_emulated" backend: the CUDA kernels on CPU
tensors through the test-only library (resnet_fast/_native/emulation.py),
which the development install builds where HIP-CPU's libco is found.

Its tests skip, with the reason, where it is not built. The emulated device
comes in two sizes: SMALL (reductions in one block per channel) and LARGE,
an H100 (132 SMs x 16 blocks: reductions split over many blocks, merged by
the finalize kernels)."""

import contextlib

import pytest

import resnet_fast
from resnet_fast._native import emulation
from resnet_fast._ops import backends

SMALL, LARGE = (2, 2), (132, 16)
SKIP_REASON = emulation.why_absent()


@contextlib.contextmanager
def emulated(size):
    """The cuda_emulated backend forced, on a device of `size` (sms, blocks
    per SM); skips the test where the library is absent. Yields its ops."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    emulation.set_device(*size)
    ops = backends.get("cuda_emulated").ops  # registered before any traced call
    with resnet_fast.use_backend("cuda_emulated"):
        yield ops
