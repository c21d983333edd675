"""The test-only library resnet_fast._cuda_emulated: the CUDA build's host
code and kernels running CPU tensors through the project's CUDA-on-CPU
emulation (csrc/cuda/emulation/), as the op namespace
torch.ops.resnet_fast_cuda_emulated, the "cuda_emulated" backend.

It checks, without a GPU, what the CUDA kernels compute: indexing, dtype
conversions, the reduction splits and their merge, the vector and scalar
paths, on a fake device whose size the tests set (``set_device``). It cannot
find races, a missing ``__syncthreads`` or memory-model bugs, and says
nothing of speed: threads run one at a time.

The development install builds it (``pip install --no-build-isolation -e .``)
where HIP-CPU's libco is found; a user's ``pip install .`` never does.
Importing this module declares the namespace (the contract's schemas, fake
kernels and autograd, contract.declare_namespace) and then loads the library,
whose static registrations add the kernels; where it is absent, nothing is
declared and ``why_absent()`` says why.
"""

import importlib
import importlib.util

from .._ops.contract import declare_namespace

NAMESPACE = "resnet_fast_cuda_emulated"
_MODULE = "resnet_fast._cuda_emulated"
_NOT_BUILT = (
    "resnet_fast._cuda_emulated is not built: the development install "
    "(pip install --no-build-isolation -e .) builds it where HIP-CPU's libco is found "
    "(RESNET_FAST_HIP_CPU, or ../shared/hip-cpu next to the repository), unless "
    "RESNET_FAST_CUDA_EMULATION=0; a pip install . never does"
)


def _load():
    """(the library module, None) or (None, why not)."""
    if importlib.util.find_spec(_MODULE) is None:
        return None, _NOT_BUILT
    global _LIBRARY_DEF
    _LIBRARY_DEF = declare_namespace(NAMESPACE)  # before the kernels register
    try:
        return importlib.import_module(_MODULE), None
    except ImportError as error:
        return None, (
            f"resnet_fast._cuda_emulated does not load ({error}); rebuild it with "
            "pip install --no-build-isolation -e ."
        )


_LIBRARY_DEF = None  # the namespace's defining library, kept alive
_library, _why_absent = _load()


def available() -> bool:
    """Whether the library is built and loaded (the backend can run)."""
    return _library is not None


def why_absent() -> str | None:
    """Why the library is not available, or None when it is."""
    return _why_absent


def _require():
    if _library is None:
        raise RuntimeError(_why_absent)
    return _library


def set_device(sm_count: int, blocks_per_sm: int) -> None:
    """Sizes the emulated device: ``sm_count`` multiprocessors with room for
    ``blocks_per_sm`` resident blocks of every kernel; the launchers size
    their grids (and the reductions their splits) from it. Default 2 x 2; an
    H100 is 132 x 16. At most 64 distinct sizes per process.

    Raises:
        ValueError: a size that is not an int >= 1.
        RuntimeError: the library is absent (why_absent()).
    """
    for name, value in (("sm_count", sm_count), ("blocks_per_sm", blocks_per_sm)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"set_device: {name} must be an int >= 1, got {value!r}")
    _require().set_device(sm_count, blocks_per_sm)


def device() -> tuple[int, int]:
    """(sm_count, blocks_per_sm) of the emulated device."""
    return tuple(_require().device())


def recent_launches() -> list[dict]:
    """The last kernel launches run (or refused) in this process, oldest first
    (at most 16), each a dict: ``kernel`` (as written at the launch, e.g.
    ``bn_stats_rows_kernel<T, V>``), ``caller`` (the launching function with
    its template arguments), ``grid`` and ``block`` (x, y, z)."""
    return list(_require().recent_launches())
