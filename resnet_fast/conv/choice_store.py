"""The measured choices of this machine and build, kept on disk between
processes: the same command with the same seed then takes the same choices,
hence gives the same bits, run after run (a timing made afresh in every
process would let near ties go either way).

One JSON file per fingerprint: the processor (model name, logical CPUs,
the ISA build of the kernels in use), torch (version and commit) and
resnet_fast (version, and a digest of its compiled library and its Python
sources). Another machine, CPU, torch or build computes another fingerprint
and so another file, and a file whose recorded fingerprint is not this one's
(copied in from elsewhere) or that does not parse is ignored with one
warning. Writes are atomic (a temporary file renamed over the old one) and
serialized by a lock file, so concurrent processes (torchrun's ranks,
pytest-xdist workers) never read half a file; a choice already stored when a
process comes to store its own is adopted instead, so every process on the
machine ends up with the stored one.

Where: ``$RESNET_FAST_CHOICES_DIR``, else ``choices/`` under
``$RESNET_FAST_CACHE_DIR`` (default ``~/.cache/resnet_fast``). Deleting the
folder forgets every choice; ``resnet-fast info`` prints it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator

import torch

FORMAT = 1


def folder() -> str:
    """Where the choice files live."""
    explicit = os.environ.get("RESNET_FAST_CHOICES_DIR")
    if explicit:
        return explicit
    from .._native.build import cache_root

    return os.path.join(cache_root(), "choices")


def _digest_of_package() -> str:
    """sha256 of the compiled library and of every Python source of the
    package: what implements the candidates a choice was made between."""
    import resnet_fast

    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(resnet_fast.__file__))
    files = [resnet_fast._C.__file__]
    for root, _, names in os.walk(package):
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    for path in sorted(files):
        digest.update(os.path.relpath(path, package).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict:
    """What the choices of this process depend on beyond their own keys."""
    import resnet_fast

    return {
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "cpu_kernels": resnet_fast.build_info().get("cpu_capability"),
        "torch": f"{torch.__version__} {torch.version.git_version}",
        "resnet_fast": f"{resnet_fast.__version__} {_digest_of_package()}",
    }


class ChoiceStore:
    """The choice file of one fingerprint.

    Args:
        directory: the folder of the choice files.
        prints: the fingerprint (see :func:`fingerprint`).
    """

    def __init__(self, directory: str, prints: dict) -> None:
        self.fingerprint = prints
        name = hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()[:16]
        self.path = os.path.join(directory, f"{name}.json")
        self._warned = False

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"resnet_fast: ignoring the measured-choice file {self.path} ({why}); "
                "choices are measured again and the file is rewritten",
                RuntimeWarning,
                stacklevel=4,
            )

    def read(self) -> dict[str, str]:
        """The stored choices, {encoded key: choice}; {} without a usable file."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            self._warn(f"unreadable: {error}")
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            self._warn("not a choice file of this version")
            return {}
        if data.get("fingerprint") != self.fingerprint:
            self._warn("made for another machine or build")
            return {}
        choices = data.get("choices")
        if not isinstance(choices, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in choices.items()
        ):
            self._warn("malformed choices")
            return {}
        return choices

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def settle(self, key: str, choice: str) -> str:
        """Stores ``choice`` for ``key`` unless a choice is stored already,
        and returns the stored one: the first process to store a key decides
        for every process. A folder that cannot be written keeps ``choice``
        for this process alone."""
        try:
            with self._locked():
                choices = self.read()
                if key in choices:
                    return choices[key]
                choices[key] = choice
                self._write(choices)
        except OSError as error:
            self._warn(f"cannot write: {error}")
        return choice

    def _write(self, choices: dict[str, str]) -> None:
        data = {"format": FORMAT, "fingerprint": self.fingerprint, "choices": choices}
        folder_ = os.path.dirname(self.path)
        fd, temporary = tempfile.mkstemp(dir=folder_, prefix=".choices-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise

    def clear(self) -> None:
        """Deletes this fingerprint's file."""
        with self._locked(), contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
