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
    """Creates tasks; uses rich when stderr is a terminal (or `force_rich`), logging otherwise."""

    def __init__(self, enabled: bool = True, force_rich: bool = False):
        self.rich = None
        self._enabled = enabled
        self._use_rich = enabled and (force_rich or sys.stderr.isatty())

    def __enter__(self) -> "Progress":
        if self._use_rich:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            )
            self.rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)
            self.rich = None

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        task_id = self.rich.add_task(description, total=total) if self.rich is not None else None
        t = Task(self, description, total, task_id)
        try:
            yield t
        finally:
            if self.rich is not None and task_id is not None and total is None:
                self.rich.update(task_id, total=t.done)


#: A reporter that shows nothing (tests, library use).
SILENT = Progress(enabled=False)
