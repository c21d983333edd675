"""The on/off switches of the conv package, read from the environment once,
at import."""

from __future__ import annotations

import os


def env_switch(name: str) -> bool:
    """Whether the environment variable ``name`` is "1" (the default) rather
    than "0"; any other value is refused.

    Raises:
        ValueError: the variable holds something else than 0 or 1.
    """
    setting = os.environ.get(name, "1")
    if setting not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1; got {setting!r}")
    return setting == "1"
