"""How the dashboard learns the last full verification: ``audit-dashboard verify`` appends
its result as one JSON line to ``AUDIT_VERIFY_RESULTS_FILE``; the integrity page reads the
last line (from the file's end, so years of nightly runs cost nothing). Pure: no database.

A result is a report, not evidence: it says when the last full check ran and what it
found. Run ``verify`` where its host, not the dashboard's, can write the file (the
dashboard only reads it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..spool import append_line
from .bundle import Problem
from .heads_file import HeadsFileError, last_line

RESULT_FORMAT: Final = "audit-verify-result-v1"
MAX_PROBLEMS_KEPT: Final = 100  # the file keeps the first problems; the count says the rest


class ResultsFileError(ValueError):
    """The results file cannot be read or written, or its last line is not a result."""


@dataclass(frozen=True)
class VerificationResult:
    finished_at: datetime
    clean: bool
    summary: str
    first_head: int | None
    last_head: int | None
    events: int
    since_head: int | None
    problems: tuple[dict[str, Any], ...]
    more_problems: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "finished_at": self.finished_at.astimezone(UTC).isoformat(),
            "clean": self.clean,
            "summary": self.summary,
            "first_head": self.first_head,
            "last_head": self.last_head,
            "events": self.events,
            "since_head": self.since_head,
            "problems": list(self.problems),
            "more_problems": self.more_problems,
        }


def result_of(
    *,
    clean: bool,
    summary: str,
    first_head: int | None,
    last_head: int | None,
    events: int,
    since_head: int | None,
    problems: Sequence[Problem],
    more_problems: int,
    finished_at: datetime | None = None,
) -> VerificationResult:
    kept = tuple(
        {"kind": p.kind, "message": p.message, "seq": p.seq, "event_id": p.event_id}
        for p in problems[:MAX_PROBLEMS_KEPT]
    )
    return VerificationResult(
        finished_at=finished_at or datetime.now(UTC),
        clean=clean,
        summary=summary,
        first_head=first_head,
        last_head=last_head,
        events=events,
        since_head=since_head,
        problems=kept,
        more_problems=more_problems + max(0, len(problems) - MAX_PROBLEMS_KEPT),
    )


def append_result(path: Path, result: VerificationResult) -> None:
    line = json.dumps(result.to_json(), separators=(",", ":"), sort_keys=True) + "\n"
    try:
        append_line(path, line, 0o644)
    except OSError as exc:
        raise ResultsFileError(
            f"Cannot append to the verification results file {path}: {exc.strerror or exc}"
        ) from None


def last_result(path: Path) -> VerificationResult | None:
    """The newest result in the file, or None when the file is missing or empty."""
    try:
        line = last_line(path, "The verification results file")
    except HeadsFileError as exc:
        raise ResultsFileError(str(exc)) from None
    if line is None:
        return None
    try:
        document = json.loads(line)
        if document.get("format") != RESULT_FORMAT:
            raise ValueError(f"not of format {RESULT_FORMAT}")
        return VerificationResult(
            finished_at=datetime.fromisoformat(document["finished_at"]),
            clean=bool(document["clean"]),
            summary=str(document["summary"]),
            first_head=document.get("first_head"),
            last_head=document.get("last_head"),
            events=int(document.get("events") or 0),
            since_head=document.get("since_head"),
            problems=tuple(dict(p) for p in document.get("problems") or ()),
            more_problems=int(document.get("more_problems") or 0),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResultsFileError(
            f"The last line of the verification results file {path} is not a result: {exc}"
        ) from None
