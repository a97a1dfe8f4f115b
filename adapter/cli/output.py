"""How commands print: tables that line up Chinese text, and a progress line."""

from __future__ import annotations

import time
import unicodedata


def display_width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table whose columns line up, Chinese included."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c + " " * (w - display_width(c)) for c, w in zip(row, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


class ProgressLine:
    """A progress line rewritten in place on a terminal, at most one line a second otherwise."""

    def __init__(self, stream) -> None:
        self.stream, self.tty, self.last, self.shown = stream, stream.isatty(), 0.0, False

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 1.0):
            return
        self.last, self.shown = now, True
        self.stream.write(f"\r{text}\033[K" if self.tty else text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
