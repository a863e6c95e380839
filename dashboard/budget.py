"""A time budget for the CPU-heavy work of one request: folding, diffing and rendering.

The database's work is bounded by ``statement_timeout``; the Python work after it was
not: one record with a 100,000-item array took 52 s to render, and nothing stopped it.
:func:`work_budget` sets a deadline for the current context (a request, an export) and
the loops that can grow with the data — the fold, the diff, masking, the state and change
rows of the pages, the PDF listing — call :func:`check_budget`, which raises
:class:`WorkBudgetExceeded` once the deadline has passed. The app answers that with a 503
saying it is too much to show at once (:mod:`dashboard.errors`).

The deadline lives in a :class:`contextvars.ContextVar`, so each request (thread) has its
own, and a check outside any budget (the command line, the tests of the pure core) is
free. A check costs a context-variable read and a clock read (about 0.1 µs), so callers
check once per event, row or document, not per character.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["WorkBudgetExceeded", "check_budget", "end_budget", "start_budget", "work_budget"]

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("audit_work_deadline", default=None)


class WorkBudgetExceeded(RuntimeError):
    """The current request's work went past its time budget."""

    def __init__(self, seconds: float):
        super().__init__(
            f"This is too much to show at once: building it took longer than the {seconds:g} s "
            "this server allows. Open a smaller part (a later page, one field, a shorter time "
            "range), or use the JSON API or the CSV export, which have every value."
        )
        self.seconds = seconds


@contextmanager
def work_budget(seconds: float) -> Iterator[None]:
    """Within the block, :func:`check_budget` raises once ``seconds`` have passed."""
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def start_budget(seconds: float):
    """Set a deadline without a block (a request's ``before_request``); returns the token
    for :func:`end_budget`."""
    return _deadline.set((time.monotonic() + seconds, seconds))


def end_budget(token) -> None:
    _deadline.reset(token)


def check_budget() -> None:
    """Raise :class:`WorkBudgetExceeded` when the current budget has run out."""
    current = _deadline.get()
    if current is not None and time.monotonic() > current[0]:
        raise WorkBudgetExceeded(current[1])
