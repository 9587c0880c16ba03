"""The progress display: one updating line on a terminal, plain lines otherwise (CI logs)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, plain_every: float = 10.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_every = plain_every
        self._last_plain = 0.0
        self._shown = False

    def update(self, text: str) -> None:
        """The current state; on a terminal it replaces the previous one."""
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[2K" + text[:width])
            self.stream.flush()
            self._shown = True
        elif time.monotonic() - self._last_plain >= self.plain_every:
            self._last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def line(self, text: str) -> None:
        """A line that stays (a phase's result)."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[2K")
            self._shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_plain = time.monotonic()


def rate(n: float) -> str:
    """183k/s, 1.2M/s, 950/s."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M/s"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k/s"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k/s"
    return f"{n:.0f}/s"


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"
