"""Progress reporting for long stages: rich progress bars on a terminal, periodic log lines in a Job's pod."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("eft.progress")


class Task:
    """One counted piece of work; `advance()` as items finish."""

    def __init__(self, reporter: "Progress", description: str, total: int | None, task_id=None):
        self._reporter, self.description, self.total, self._id = reporter, description, total, task_id
        self.done = 0
        self._last_log = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._reporter.rich is not None and self._id is not None:
            self._reporter.rich.update(self._id, advance=n)
        else:
            now = time.monotonic()
            if now - self._last_log > 10 or (self.total and self.done >= self.total):
                self._last_log = now
                log.info("%s: %d/%s", self.description, self.done, self.total if self.total else "?")


class Progress:
    """Creates tasks; uses rich when stderr is a terminal (or `force_rich`), logging otherwise.

    On a terminal each stage gets one clean display: `stage(name)` prints a heading rule, the stage's bars live
    under it, and the display is closed (its final bars kept) when the stage ends, before the caller prints the
    stage's summary line. Log records and stray writes to stderr during a stage are printed above the bars by
    rich (see `eft.terminal`). Without a terminal (a Job's log) every step is one log line, as before.
    """

    def __init__(self, enabled: bool = True, force_rich: bool = False, console=None):
        self.rich = None
        self._enabled = enabled
        self._use_rich = enabled and (force_rich or sys.stderr.isatty())
        self.console = console
        if self._use_rich and self.console is None:
            from eft.terminal import stderr_console

            self.console = stderr_console()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self._stop(*exc)

    def _start(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.rich = RichProgress(
            TextColumn("  [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False, console=self.console,
        )
        self.rich.__enter__()

    def _stop(self, *exc) -> None:
        if self.rich is not None:
            self.rich.__exit__(*(exc or (None, None, None)))
            self.rich = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """One stage's display: a heading, then its bars (closed when the stage ends)."""
        if self._use_rich:
            self._stop()
            self.console.rule(f"[bold]{name}", align="left")
        elif self._enabled:
            log.info("stage %s: started", name)
        try:
            yield
        finally:
            self._stop()

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        if self._use_rich and self.rich is None:
            self._start()
        task_id = self.rich.add_task(description, total=total) if self.rich is not None else None
        t = Task(self, description, total, task_id)
        try:
            yield t
        finally:
            if self.rich is not None and task_id is not None and total is None:
                self.rich.update(task_id, total=t.done)


#: A reporter that shows nothing (tests, library use).
SILENT = Progress(enabled=False)
