"""The copy of every signed tree head outside the database: a JSON-lines file, one head
(:func:`.heads.head_to_json`) per line, appended and fsync'd by the notary after the head
is committed to ``audit_tree_heads``.

It is the anchor the database cannot rewrite: a superuser who deletes or replaces heads
in the table cannot make the file agree, so ``verify`` (and the notary, before it extends
the tree) compare the two. Put it where the database's administrators cannot rewrite it:
an object-lock (WORM) bucket in compliance mode, an append-only (``chattr +a``) file on
another host, or a log shipper that forwards each line. No database here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..spool import append_line
from .heads import HeadError, TreeHead, head_from_json, head_to_json

TAIL_CHUNK = 64 * 1024


class HeadsFileError(ValueError):
    """The heads file cannot be read, or a line of it is not a tree head."""


def append_head(path: Path, head: TreeHead) -> None:
    """Append one head as one line, then flush and fsync (and the directory when the file
    is new), so a head the notary reports written survives a crash."""
    line = json.dumps(head_to_json(head), separators=(",", ":"), sort_keys=True) + "\n"
    try:
        append_line(path, line, 0o640)
    except OSError as exc:
        raise HeadsFileError(
            f"Cannot append to the heads file {path}: {exc.strerror or exc}"
        ) from None


def _parse(path: Path, where: str, line: bytes) -> TreeHead:
    try:
        return head_from_json(json.loads(line))
    except (HeadError, ValueError) as exc:
        raise HeadsFileError(f"{path}, {where}, is not a tree head: {exc}") from None


def read_heads(path: Path) -> Iterator[TreeHead]:
    """Every head in the file, in file order, one line at a time (bounded memory)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise HeadsFileError(f"The heads file {path} does not exist") from None
    except OSError as exc:
        raise HeadsFileError(
            f"The heads file {path} cannot be read: {exc.strerror or exc}"
        ) from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield _parse(path, f"line {number}", line)


def last_line(path: Path, what: str = "The heads file") -> bytes | None:
    """The file's last non-blank line, read from its end (such files grow by a line a minute
    for years); None when the file is missing or empty. Raises :class:`HeadsFileError`."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadsFileError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    with handle:
        end = handle.seek(0, os.SEEK_END)
        tail = b""
        position = end
        while position > 0:
            step = min(TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
            stripped = tail.rstrip()
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        stripped = tail.strip()
        return stripped or None


def last_head(path: Path) -> TreeHead | None:
    """The file's last head, read from its end; None when the file is missing or empty."""
    line = last_line(path)
    return None if line is None else _parse(path, "last line", line)
