"""Work a request starts beside its own and waits for before it answers.

A search page counts its facets on a second connection while its own query runs: the
page's time is then the longest of the parts, not their sum. (Its access-log entry is
stored while it renders too, but with no thread: ``PostgresSink.send`` in
:mod:`dashboard.access_log.sinks` sends it from the request's own.) Each task is bounded
by the client-side limits of the connection it uses
(:class:`dashboard.db.BoundedConnection`), and the request always waits for it (or gives
up on it with an answer that says so): nothing here outlives a request by more than those
bounds.

Tasks run in a thread pool of this process, made on first use and made again in a forked
child (a gunicorn worker does not inherit its parent's threads). No Flask here: a task
gets what it needs as arguments, never from the request's globals.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Tasks at once per process: a gunicorn worker serves a few threads, each with at most one
# task in flight (the counts); more simply queue.
MAX_TASKS = 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _pool
    _pool = None  # the parent's threads do not exist here; its pool is not ours


os.register_at_fork(after_in_child=_forget_pool)


def submit(task: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Run ``task(*args, **kwargs)`` in this process's pool; its Future."""
    global _pool
    pool = _pool
    if pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(MAX_TASKS, thread_name_prefix="audit-page")
            pool = _pool
    return pool.submit(task, *args, **kwargs)
