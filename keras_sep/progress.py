"""The one progress display of every long command: a bar on a terminal, plain lines elsewhere.

- On a terminal (the stream is a TTY): a tqdm bar counting items of a known total and
  naming the item being worked on now (``start``), with an optional nested bar for the
  parts of that item (``child``: the segments of a song, the steps of a training run).
- On a pipe or a file: no bar and no carriage returns, one plain line per finished item
  (``finish``), so logs and CI output read line by line.
- ``quiet``: nothing at all. A command's own messages (results, warnings, errors) go
  through ``say``, which prints whatever the mode, above a bar without breaking it.

Everything goes to stderr unless a stream is given, so stdout keeps only results.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any

BAR, LINES, OFF = "bar", "lines", "off"
# What a display prints in LINES mode: a line per finished item, one line when it
# closes (for fine-grained items such as segments), or nothing (a child whose parent
# prints the line).
EACH, END, NONE = "each", "end", "none"


def display_mode(quiet: bool = False, stream: IO[str] | None = None) -> str:
    """BAR on a terminal, LINES on a pipe or file, OFF when ``quiet``."""
    if quiet:
        return OFF
    stream = stream if stream is not None else sys.stderr
    try:
        return BAR if stream.isatty() else LINES
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return LINES


def _columns(stream: IO[str]) -> int:
    """The terminal's width, 0 when it does not say (a pseudo-terminal nobody sized)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def plural(unit: str) -> str:
    """``batch`` -> ``batches``, ``song`` -> ``songs``."""
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def add_quiet_argument(parser: Any) -> None:
    """``--quiet``: the same option, with the same words, on every long command."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress display (a bar on a terminal, one line per finished item "
        "elsewhere); results and errors are still printed",
    )


class Progress:
    """Progress over ``total`` items called ``unit`` (total None: not known in advance).

    ``start(name)`` names the item now being worked on, ``finish(note)`` counts it done,
    ``set(done)`` moves to an absolute count (for callbacks), ``child(...)`` opens the
    display of the current item's parts. Use it as a context manager, or ``close()`` it.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "item",
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        lines: str = EACH,
        mode: str | None = None,
        position: int = 0,
        keep: bool = False,
    ) -> None:
        self.label, self.total, self.unit, self.lines = label, total, unit, lines
        self.keep = keep
        self.stream = stream if stream is not None else sys.stderr
        self.mode = mode or display_mode(quiet, self.stream)
        self.position = position
        self.n, self.item = 0, ""
        self.started = self.item_started = time.perf_counter()
        self.bar = None
        if self.mode == BAR:
            from tqdm import tqdm

            sized = _columns(self.stream) > 0  # a terminal that reports no size gets 80
            self.bar = tqdm(
                total=total,
                desc=label,
                unit=unit,
                file=self.stream,
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                position=position,
                leave=position == 0,
            )
        self._child: Progress | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, item: str) -> None:
        """Name the item being worked on from now (shown on the bar at once, not after)."""
        self.item, self.item_started = item, time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(item[:48], refresh=True)

    def finish(self, note: str = "") -> None:
        """Count the current item done; in LINES mode print its line (``note``, its time).

        With ``keep`` the line is also printed above the bar on a terminal (one line per
        epoch, as Keras leaves them).
        """
        self.close_child()
        self.n += 1
        of = f"/{self.total}" if self.total is not None else ""
        name = f" {self.item}" if self.item else ""
        seconds = time.perf_counter() - self.item_started
        line = f"{self.label} {self.n}{of}{name}: {note + ', ' if note else ''}{seconds:.1f} s"
        if self.bar is not None:
            self.bar.update(self.n - self.bar.n)
            if self.keep:
                self.bar.write(line, file=self.stream)
        elif self.mode == LINES and self.lines == EACH:
            self._print(line)
        self.item, self.item_started = "", time.perf_counter()

    def set(self, done: int, total: int | None = None) -> None:
        """Move to ``done`` items (of ``total``, when it becomes known); prints no line."""
        if total is not None and total != self.total:
            self.total = total
            if self.bar is not None:
                self.bar.total = total
        self.n = done
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    @property
    def callback(self) -> Callable[[int, int], None]:
        """``(done, total) -> None``, the form ``keras_sep.separate`` reports progress in."""
        return lambda done, total: self.set(done, total)

    def postfix(self, text: str) -> None:
        """Show ``text`` after the counts on the bar (a loss, a rate); nothing elsewhere."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def note(self, text: str) -> None:
        """A milestone (a validation loss): on the bar after the counts, else one line."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        elif self.mode == LINES:
            of = f"/{self.total}" if self.total is not None else ""
            self._print(f"{self.label} {self.n}{of} {plural(self.unit)}: {text}")

    def child(
        self, label: str, total: int | None = None, unit: str = "item", lines: str = NONE
    ) -> Progress:
        """The display of the current item's parts: a second bar under this one on a
        terminal (gone when the item finishes), ``lines`` in LINES mode (default none:
        this display prints the item's line)."""
        self.close_child()
        self._child = Progress(
            label,
            total,
            unit,
            stream=self.stream,
            lines=lines,
            mode=self.mode,
            position=self.position + 1,
        )
        return self._child

    def close_child(self) -> None:
        if self._child is not None:
            self._child.close()
            self._child = None

    def say(self, line: str, file: IO[str] | None = None) -> None:
        """Print a message in every mode (also when quiet), above the bar if there is one."""
        file = file if file is not None else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def outside(self) -> AbstractContextManager:
        """Clear the bars while other code prints (a ``log`` callable), then redraw them."""
        if self.bar is None:
            return nullcontext()
        return self.bar.external_write_mode(file=self.stream)

    def close(self) -> None:
        self.close_child()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == LINES and self.lines == END and self.n:
            of = f"/{self.total}" if self.total is not None else ""
            seconds = time.perf_counter() - self.started
            self._print(f"{self.label}: {self.n}{of} {plural(self.unit)} in {seconds:.1f} s")
            self.lines = NONE  # closing twice prints once

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
