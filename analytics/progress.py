"""A progress bar on stderr for the batch jobs, without a dependency for it.

On a terminal it redraws one line; into a file or a CI log it writes a line per tenth of the work,
so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool = True, width: int = 30,
                 min_interval_s: float = 0.1) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.min_interval_s = min_interval_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_tenth = -1
        self._drawn = False
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        fraction = min(1.0, done / total)
        if self.tty:
            now = time.monotonic()
            if done < total and now - self._last_draw < self.min_interval_s:
                return
            self._last_draw = now
            filled = int(round(fraction * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {fraction:4.0%}")
            self._drawn = True
        else:
            tenth = int(fraction * 10)
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(f"{self.label}: {done}/{total} ({fraction:.0%})\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write(f" {time.monotonic() - self._started:.1f}s\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
