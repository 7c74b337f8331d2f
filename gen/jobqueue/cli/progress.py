"""A progress bar on stderr for ``jobq submit --file``, drawn only when stderr is a terminal.

One line, redrawn in place with a carriage return after each batch the service stored
(``[########------------]  1000/2500 jobs  40%``). When stderr is not a terminal (a pipe, a log
file, CI) it draws nothing: carriage returns would only litter the log, and the summary printed at
the end says the same. Written here rather than taken from a library, so that the client library
keeps its few dependencies.
"""

from __future__ import annotations

from typing import TextIO

#: The bar's width in characters, between the brackets.
BAR_WIDTH = 30


class ProgressBar:
    """How many of ``total`` things are done, redrawn on ``stream`` when ``enabled``."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool, unit: str = "jobs") -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = enabled
        self.unit = unit
        self._drawn = False

    @classmethod
    def for_terminal(cls, total: int, stream: TextIO, *, unit: str = "jobs") -> ProgressBar:
        """A bar that draws only if ``stream`` is a terminal."""
        return cls(total, stream, enabled=stream.isatty(), unit=unit)

    def render(self) -> str:
        """The bar's line as it stands (without the carriage return)."""
        fraction = self.done / self.total if self.total else 1.0
        filled = round(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"[{bar}] {self.done:>{len(str(self.total))}}/{self.total} {self.unit} {fraction:4.0%}"

    def advance(self, count: int) -> None:
        """Count ``count`` more as done, and redraw."""
        self.done = min(self.total, self.done + count)
        self._draw()

    def start(self) -> None:
        """Draw the empty bar, so that the user sees at once that work has begun."""
        self._draw()

    def close(self) -> None:
        """End the bar's line, so that whatever is printed next starts on a line of its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        if not self.enabled:
            return
        self.stream.write("\r" + self.render())
        self.stream.flush()
        self._drawn = True
