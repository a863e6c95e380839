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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "WorkBudgetExceeded",
    "budgeted",
    "check_budget",
    "end_budget",
    "start_budget",
    "work_budget",
]

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


def budgeted(chunks: Iterable[T], seconds: float) -> Iterator[T]:
    """Iterate ``chunks`` with a budget of ``seconds`` for all of them (a streamed export).

    A generator shares the context of whoever resumes it, so a ``with work_budget()``
    around a ``yield`` would leave the deadline set in the *consumer's* context between
    chunks — and for good if the stream is abandoned. The deadline is set for each resume
    of ``chunks`` only, and reset before the chunk is handed on.
    """
    deadline = (time.monotonic() + seconds, seconds)
    iterator = iter(chunks)
    while True:
        token = _deadline.set(deadline)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            _deadline.reset(token)
        yield chunk


def start_budget(seconds: float):
    """Set a deadline without a block (a request's ``before_request``); returns the token
    for :func:`end_budget`."""
    return _deadline.set((time.monotonic() + seconds, seconds))


def end_budget(token) -> None:
    """Undo :func:`start_budget`. Torn down in another context than it was set in (a
    finished stream), the token cannot be reset: the deadline is cleared instead, so it
    never outlives its request in the thread that goes on to other work."""
    try:
        _deadline.reset(token)
    except ValueError:
        _deadline.set(None)


def check_budget() -> None:
    """Raise :class:`WorkBudgetExceeded` when the current budget has run out."""
    current = _deadline.get()
    if current is not None and time.monotonic() > current[0]:
        raise WorkBudgetExceeded(current[1])
