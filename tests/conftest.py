"""Shared fixtures and helpers of the op tests.

Every backend runs the same parametrized tests: the `backend` parameter lists
them, and those that cannot run here (no GPU, not built) are skipped with the
reason. Outputs are NaN-poisoned by the kernels before they are written
(RESNET_FAST_POISON_OUTPUTS=1), so an element a kernel skips fails the test.
Choices that resnet_fast measures on the machine (resnet_fast/conv/measured.py) are not
measured (RESNET_FAST_MEASURE=0): every test sees the same paths whatever the
machine's timing; tests/test_measured.py checks the measured choices, with
the `measuring` fixture (stored choices in a folder of the test's own). No
test reads or writes the user's stored choices: RESNET_FAST_CHOICES_DIR
points at a temporary folder.

The triton backend runs on a CUDA GPU when there is one, else on the CPU under
Triton's interpreter: TRITON_INTERPRET=1 is set here, before anything imports
triton (Triton reads it once, at import). Set TRITON_INTERPRET=0 to skip the
Triton tests on a machine without a GPU.
"""

import os
import sys
import tempfile

os.environ.setdefault("RESNET_FAST_POISON_OUTPUTS", "1")
os.environ.setdefault("RESNET_FAST_MEASURE", "0")
os.environ.setdefault("RESNET_FAST_CHOICES_DIR", tempfile.mkdtemp(prefix="resnet-fast-choices-"))

import zlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import emulation_support  # noqa: E402
from triton_support import TRITON_DEVICE, TRITON_SKIP_REASON  # noqa: E402

import resnet_fast  # noqa: E402

# (backend, device[, emulated device size]): the native backends first. The
# CUDA kernels also run on the CPU through the test-only CUDA emulation, on a
# small fake device and an H100-sized one (emulation_support.py); skipped
# where it is not built.
BACKENDS = [
    pytest.param(("cpu", "cpu"), id="cpu"),
    pytest.param(("cuda", "cuda"), id="cuda", marks=pytest.mark.cuda),
    pytest.param(("reference", "cpu"), id="reference"),
    pytest.param(("triton", TRITON_DEVICE), id="triton", marks=pytest.mark.triton),
    pytest.param(("cuda_emulated", "cpu", emulation_support.SMALL), id="cuda_emulated-small",
                 marks=pytest.mark.cuda_emulated),
    pytest.param(("cuda_emulated", "cpu", emulation_support.LARGE), id="cuda_emulated-large",
                 marks=pytest.mark.cuda_emulated),
]  # fmt: skip


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available() and "cuda" in resnet_fast.build_info()["backends"]
    skip = pytest.mark.skip(reason="needs a CUDA device and the CUDA build of resnet_fast")
    skip_triton = pytest.mark.skip(reason=TRITON_SKIP_REASON or "")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip)
        if "triton" in item.keywords and TRITON_SKIP_REASON:
            item.add_marker(skip_triton)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(backend name, device) with that backend forced for the test (and the
    emulated device sized for the cuda_emulated ones)."""
    name, device, *size = request.param
    forced = emulation_support.emulated(*size) if size else resnet_fast.use_backend(name)
    with forced:
        yield name, device


@pytest.fixture
def gen(request):
    """A generator seeded from the test id: fresh inputs per case, reproducible."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    return g


@pytest.fixture
def measuring(monkeypatch, tmp_path):
    """Measurement on, nothing decided yet, and stored choices in a folder of
    this test's own (returns the conv.measured module)."""
    from resnet_fast.conv import measured
    from resnet_fast.conv.choice_store import ChoiceStore

    prints = measured._the_store().fingerprint
    monkeypatch.setattr(measured, "ENABLED", True)
    monkeypatch.setattr(measured, "_choices", {})
    monkeypatch.setattr(measured, "_loaded", {})
    monkeypatch.setattr(measured, "_untuned", set())
    monkeypatch.setattr(measured, "_store", ChoiceStore(str(tmp_path / "choices"), prints))
    return measured
