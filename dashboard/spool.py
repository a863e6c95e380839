"""A durable local spool: JSON records that could not reach their database, kept until they do.

One JSON object per line in ``<directory>/<name>.jsonl``, mode 0600 in a 0700 directory.
Every append is one ``write()`` with ``O_APPEND`` under an exclusive ``flock`` and is
``fsync``'d before it returns, so a record the caller was told is kept survives a crash
or power loss, and records from several worker processes never interleave.

Delivery (:meth:`Spool.deliver`) hands records to a callback in the order they were kept,
holding the lock. A sidecar file ``<name>.offset`` says how many bytes have been delivered;
it is written (and fsync'd) after each batch, and the spool is truncated only when every
record is delivered. A crash between a delivery and the offset write delivers those records
again: the receiver must ignore duplicates (records carry a unique id for that). Records
are never dropped: a line that is not JSON is copied to ``<name>.rejected`` with a warning.

Pure: no Flask, no database; the caller's callback does the writing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500  # records per delivery call: bounds how long the lock (and a request) waits


class Spool:
    def __init__(self, directory: Path, name: str = "spool"):
        self.directory = Path(directory)
        self.path = self.directory / f"{name}.jsonl"
        self.offset_path = self.directory / f"{name}.offset"
        self.rejected_path = self.directory / f"{name}.rejected"

    def append(self, record: dict[str, Any]) -> None:
        """Keep ``record``; when this returns it is on disk. Raises OSError when it is not."""
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self._make_directory()
        with self._locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            created = os.fstat(fd).st_size == 0
            written = os.write(fd, line)
            if written != len(line):  # a full disk: never leave half a record
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        if created:
            fsync_directory(self.directory)

    def pending_bytes(self) -> int:
        """Bytes not yet delivered (0 when the spool is empty or missing). One stat()."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        return max(0, size - self._read_offset()) if size else 0

    def records(self) -> list[dict[str, Any]]:
        """Every record not yet delivered, oldest first (for inspection and tests)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [record for _, record in _parse(data[self._read_offset() :]) if record is not None]

    def deliver(self, send: Callable[[dict[str, Any]], None], *, batch: int = DEFAULT_BATCH) -> int:
        """Hand up to ``batch`` undelivered records to ``send``, oldest first.

        Stops at the first record ``send`` raises on (the exception propagates; that record
        and the rest stay for next time). Returns how many were delivered. When the last
        record is delivered the spool is emptied.
        """
        if not self.path.exists():  # created by the first append, never removed
            return 0
        with self._locked(os.O_RDWR) as fd:
            size = os.fstat(fd).st_size
            offset = min(self._read_offset(), size)
            if offset >= size:
                if size:
                    self._empty(fd)
                return 0
            data = _read_from(fd, offset, size)
            delivered = 0
            position = offset
            try:
                for end, record in _parse(data, self):
                    if record is not None:
                        if delivered == batch:
                            break
                        send(record)
                        delivered += 1
                    position = offset + end
            finally:
                if position >= size:
                    self._empty(fd)
                elif position > offset:
                    self._write_offset(position)
            return delivered

    # --- internals ---------------------------------------------------------------------------

    def _make_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextmanager
    def _locked(self, flags: int) -> Iterator[int]:
        """The spool file, opened and exclusively locked; reopened if it was replaced."""
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _empty(self, fd: int) -> None:
        # The offset goes first: a crash between the two steps leaves every record to be
        # delivered again (harmless), never an old offset that would skip new records.
        self._write_offset(0)
        os.ftruncate(fd, 0)
        os.fsync(fd)

    def _read_offset(self) -> int:
        try:
            text = self.offset_path.read_text(encoding="ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return 0
        return int(text) if text.isdigit() else 0

    def _write_offset(self, offset: int) -> None:
        if offset == 0:
            with suppress(FileNotFoundError):
                self.offset_path.unlink()
                fsync_directory(self.directory)
            return
        temporary = self.offset_path.with_suffix(".offset.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(offset).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.offset_path)

    def _reject(self, raw: bytes) -> None:
        log.warning(
            "A spooled record in %s is not JSON; moved to %s", self.path, self.rejected_path
        )
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, raw.rstrip(b"\n") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_from(fd: int, offset: int, size: int) -> bytes:
    chunks = []
    position = offset
    while position < size:
        chunk = os.pread(fd, min(1 << 20, size - position), position)
        if not chunk:
            break
        chunks.append(chunk)
        position += len(chunk)
    return b"".join(chunks)


def _parse(data: bytes, spool: Spool | None = None) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(end offset, record)`` per complete line; None for a line that is not a JSON object
    (copied to the rejected file when ``spool`` is given). A last line without its newline
    is still being written by nobody (appends are whole lines), so it is a torn write: it
    is treated like any other bad line."""
    position = 0
    while position < len(data):
        end = data.find(b"\n", position)
        end = len(data) if end == -1 else end + 1
        raw = data[position:end]
        position = end
        if not raw.strip():
            yield end, None
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if spool is not None:
                spool._reject(raw)
            yield end, None
            continue
        yield end, record


def append_line(path: Path, line: str, mode: int) -> None:
    """Append one line to a JSON-lines file of one writer (a heads or results file) and
    fsync it, and its directory when the file is new: once this returns, the line survives
    a crash. Raises OSError."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    with os.fdopen(fd, "ab") as out:
        out.write(line.encode("utf-8"))
        out.flush()
        os.fsync(out.fileno())
    if created:
        fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make a new or renamed file's directory entry durable (best effort: some file
    systems cannot fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Backoff:
    """After a failed delivery, wait ``seconds`` before trying again (per process), so a
    database that is still down is not asked on every request."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._not_before = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self._not_before

    def failed(self) -> None:
        self._not_before = time.monotonic() + self.seconds

    def succeeded(self) -> None:
        self._not_before = 0.0
