"""A small progress bar on stderr, with no dependency.

On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints one
line each time the phase label changes, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts work units towards a known total.

    Args:
        total: the number of units the whole run takes.
        stream: where to draw (stderr by default, keeping stdout for tables).
        enabled: False draws nothing (e.g. ``--no-progress``).
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = enabled and self.stream.isatty()
        self.label = ""
        self.started = time.perf_counter()

    def set_label(self, label: str) -> None:
        """Names the phase now running."""
        if label != self.label and self.enabled and not self.interactive:
            print(f"[{self._elapsed()}] {label}", file=self.stream, flush=True)
        self.label = label
        self._draw()

    def advance(self, units: int = 1) -> None:
        """Marks ``units`` more units as done."""
        self.done = min(self.done + units, self.total)
        self._draw()

    def close(self) -> None:
        """Ends the bar's line on a terminal."""
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _elapsed(self) -> str:
        seconds = int(time.perf_counter() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _draw(self) -> None:
        if not self.interactive:
            return
        width = 28
        filled = width * self.done // self.total
        bar = "#" * filled + "." * (width - filled)
        percent = 100 * self.done // self.total
        line = f"\r[{bar}] {percent:3d}% {self._elapsed()} {self.label}"
        self.stream.write(line[:120].ljust(120))
        self.stream.flush()
