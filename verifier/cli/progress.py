"""A progress bar for people on stderr: presentation only, fed by the full audit's
`progress(done, total)` callback."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["ProgressLine"]


class ProgressLine:
    """A `Progress` for people: a bar redrawn in place on a terminal, at most 5 times a
    second; otherwise (a log file, CI) one line a minute. `close` ends the bar's line."""

    def __init__(self, stream: TextIO, tty: bool | None = None,
                 label: str = "tlog-verify: audit") -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.interval = 0.2 if self.tty else 60.0
        self.started = time.monotonic()
        self._last = self.started
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        final = self.tty and done >= total  # a bar ends full; a log gets the summary instead
        if now - self._last < self.interval and not final:
            return
        self._last = now
        text = self.render(done, total, now - self.started)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"{self.label} {text}\n")
        self.stream.flush()

    @staticmethod
    def render(done: int, total: int, elapsed: float) -> str:
        fraction = done / total if total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - done) / rate) if rate > 0 else "?"
        bar = "#" * int(30 * fraction)
        return (f"[{bar:<30}] {100 * fraction:5.1f}% {done:,}/{total:,} entries "
                f"{rate:,.0f}/s ETA {eta}")

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
