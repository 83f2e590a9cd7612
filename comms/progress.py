"""Progress of long work (a district-wide fan-out, a roster import): bars in a terminal, one summary
line every few seconds in logs, nothing in tests and libraries unless asked.

The work says `task(name, total)` (a total may grow: each event of a run adds its families) and
`advance(name, n)`; how it is shown is the caller's choice (`for_console()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

log = logging.getLogger("comms.progress")


class Tracker:
    """Shows nothing: the default."""

    def task(self, name: str, total: int | None = None) -> None:
        """Start `name`, or add `total` to its total."""

    def advance(self, name: str, n: int = 1) -> None:
        """`n` more of `name` done."""

    def close(self) -> None:
        """The work is over: a last summary."""


NO_PROGRESS = Tracker()


class _Counts(Tracker):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = {}

    def task(self, name: str, total: int | None = None) -> None:
        with self.lock:
            old = self.totals.get(name)
            self.totals[name] = None if total is None else (old or 0) + total
            self.done.setdefault(name, 0)

    def advance(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.done[name] = self.done.get(name, 0) + n


class LogLines(_Counts):
    """One line every `every` seconds while work advances: `progress: sms 120,000 of 289,412 (41%),
    1,850/s; email ...`. For logs, where a bar would be noise."""

    def __init__(self, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every, self.clock = every, clock  # an interval clock, for rates: never a time of day
        self.last = self.clock()
        self.last_done: dict[str, int] = {}

    def advance(self, name: str, n: int = 1) -> None:
        super().advance(name, n)
        now = self.clock()
        if now - self.last >= self.every:
            self._line(now)

    def _line(self, now: float) -> None:
        with self.lock:
            elapsed = max(now - self.last, 1e-9)
            parts = []
            for name, done in self.done.items():
                total = self.totals.get(name)
                rate = (done - self.last_done.get(name, 0)) / elapsed
                of = f" of {total:,} ({100 * done / total:.0f}%)" if total else ""
                parts.append(f"{name} {done:,}{of}, {rate:,.0f}/s")
            self.last, self.last_done = now, dict(self.done)
        if parts:
            log.info("progress: %s", "; ".join(parts))

    def close(self) -> None:
        """The last figures, if the work ran long enough to have had a line and moved since it
        (short work, and a run that failed before doing any, stay silent)."""
        if self.last_done and self.done != self.last_done:
            self._line(self.clock())


class Bars(Tracker):
    """rich progress bars, one per task, while attached to a terminal."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.ids: dict[str, TaskID] = {}
        self.lock = threading.Lock()
        self.bars.start()

    def task(self, name: str, total: int | None = None) -> None:
        with self.lock:
            if name not in self.ids:
                self.ids[name] = self.bars.add_task(name, total=total)
            elif total is not None:
                t = self.bars.tasks[self.ids[name]]
                self.bars.update(self.ids[name], total=(t.total or 0) + total)

    def advance(self, name: str, n: int = 1) -> None:
        with self.lock:
            if name not in self.ids:
                self.ids[name] = self.bars.add_task(name, total=None)
            self.bars.advance(self.ids[name], n)

    def close(self) -> None:
        self.bars.stop()


def for_console(console: Console, every: float = 5.0) -> Tracker:
    """Bars when `console` is a terminal, summary lines in the log otherwise."""
    return Bars(console) if console.is_terminal else LogLines(every)
