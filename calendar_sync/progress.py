"""How far a bulk job on one connection has come: kept on the connection (`CalendarToken.bulk_*`),
written by the core as it goes, read by `status` so pages and commands can show a progress bar.

One job at a time per connection is shown: a second one started meanwhile takes the fields over.
A job whose worker was killed never clears its fields: after STALE_AFTER seconds without a step it
is shown no more (its redelivered task starts a new one).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.utils import timezone

from .models import CalendarToken

KINDS = ("backfill", "calendar_move", "resync")
STALE_AFTER = 900  # a chunk waits on a provider for minutes at most (a longer wait reschedules the work)
_listeners: ContextVar[tuple[Callable[["Progress"], None], ...]] = ContextVar("calendar_sync_progress", default=())


class Progress:
    """A running job's counts; every change is one UPDATE of the connection's row."""

    def __init__(self, token_pk, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown bulk kind {kind!r}")
        self.token_pk, self.kind, self.done, self.total = token_pk, kind, 0, 0
        self.started_at = timezone.now()

    def add(self, total: int) -> None:
        """More operations are due (a calendar move adds its backfill after its removals)."""
        self.total += total
        self._save()

    def step(self, done: int) -> None:
        """`done` more operations are finished (sent, whatever their outcome)."""
        self.done += done
        self._save()

    def _save(self, **fields) -> None:
        if not fields:
            for listener in _listeners.get():
                listener(self)
        CalendarToken.objects.filter(pk=self.token_pk).update(
            **(
                fields
                or {
                    "bulk_kind": self.kind,
                    "bulk_done": self.done,
                    "bulk_total": self.total,
                    "bulk_started_at": self.started_at,
                    "bulk_updated_at": timezone.now(),
                }
            )
        )

    def clear(self) -> None:
        self._save(bulk_kind="", bulk_done=0, bulk_total=0, bulk_started_at=None, bulk_updated_at=None)


@contextmanager
def tracked(token: CalendarToken, kind: str, progress: Progress | None = None) -> Iterator[Progress]:
    """The job's Progress, shown from the start and cleared at the end, however it ends. Given an
    outer job's `progress` (a calendar move's backfill), counts into that one and leaves it to its owner."""
    if progress is not None:
        yield progress
        return
    progress = Progress(token.pk, kind)
    progress.add(0)
    try:
        yield progress
    finally:
        progress.clear()


@contextmanager
def reported(listener: Callable[[Progress], None]) -> Iterator[None]:
    """Call `listener(progress)` at every step of the jobs run inside, in this process (a command
    that runs the work itself prints lines with it)."""
    reset = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(reset)


def of(token: CalendarToken | None) -> dict[str, Any] | None:
    """{"kind", "done", "total", "started_at"} of the job under way on this connection, or None."""
    if token is None or not token.bulk_kind:
        return None
    if token.bulk_updated_at and (timezone.now() - token.bulk_updated_at).total_seconds() > STALE_AFTER:
        return None  # its worker died
    return {
        "kind": token.bulk_kind,
        "done": token.bulk_done,
        "total": token.bulk_total,
        "started_at": token.bulk_started_at,
    }
