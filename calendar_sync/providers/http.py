"""HTTP plumbing both providers share (django-anymail's `base_requests` is the model).

- `PerThread`: each thread keeps its own kept-alive client (neither `requests.Session` nor
  `httplib2.Http` is safe to share across threads); a forked worker makes new ones, never
  reading from its parent's sockets; after a network failure the thread's client is dropped.
- `aware` / `bound`: UTC instants and whole-second query bounds, widened outwards.
- `Pages`: follow a paged read (Google's pageToken, Graph's @odata.nextLink) to its end or a bound.
- `Fold`: fold a read's events into `Changes`, the latest state of each event last.
- `sent` / `answered` / `batch_size`: the one door every calendar API request of a provider passes through: the quota
  governor counts it (batch parts one by one) and a throttled answer marks the connection.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, cast

from .. import quotas
from ..types import BusyBlock, Changes

logger = logging.getLogger(__name__)
UTC = dt.UTC
MAX_PAGES = 100  # per read: a bound, should a server page forever
THROTTLED = {429, 503}
Client = TypeVar("Client")


class PerThread(Generic[Client]):
    """This thread's client from `factory(*key)`: made once per thread and key, anew after a fork."""

    def __init__(self, factory: Callable[..., Client]):
        self._factory = factory
        self._local = threading.local()

    def get(self, *key: Any) -> Client:
        wanted = (os.getpid(), *key)
        if getattr(self._local, "key", None) != wanted:
            self.drop()
            self._local.key, self._local.client = wanted, self._factory(*key)
        return self._local.client

    def drop(self) -> None:
        """After a network failure: a timed-out request may still answer later, and that answer must
        never be read as the next request's. The thread's next request opens new connections."""
        client, self._local.key, self._local.client = getattr(self._local, "client", None), None, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is dropped anyway
                pass


# --- time bounds -----------------------------------------------------------------------------------
def aware(value: dt.datetime) -> dt.datetime:
    """`value` in UTC (a naive one is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def bound(value: dt.datetime, ceil: bool = False) -> str:
    """A query bound in whole seconds, widened outwards (start floored, end `ceil`ed), as ISO 8601 UTC."""
    value = aware(value)
    whole = value.replace(microsecond=0)
    if ceil and whole < value:
        whole += dt.timedelta(seconds=1)
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- paged reads -----------------------------------------------------------------------------------
Position = TypeVar("Position")


class Pages(Generic[Position]):
    """Iterate the pages of one read: `fetch(position)` returns (page body, next position or None).

    After the loop, `complete` says whether the last page named no next one, and `pending` holds
    the next position when the bound of `limit` pages stopped it (Graph resumes a round from it).
    """

    def __init__(self, fetch: Callable[[Position], tuple[dict[str, Any], Position | None]], first: Position, what: str):
        self.fetch, self.first, self.what = fetch, first, what
        self.complete, self.pending = False, cast(Position | None, None)
        self.last: dict[str, Any] = {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = self.first
        for _ in range(MAX_PAGES):
            self.last, position_next = self.fetch(position)
            yield self.last
            if not position_next:
                self.complete = True
                return
            position = position_next
        logger.warning("%s still paging after %s pages: stopping.", self.what, MAX_PAGES)
        self.pending = position


class Fold:
    """The events of one read over [start, end): {remote id: BusyBlock, or None once not busy there}."""

    def __init__(self, start: dt.datetime, end: dt.datetime):
        self.start, self.end = start, end
        self.state: dict[str, BusyBlock | None] = {}

    def add(self, remote_id: str, block: BusyBlock | None) -> None:
        """The event's latest state (a later page repeats an event that changed meanwhile). One of our
        own events stays itself outside the window: moved there, it was moved, not deleted."""
        self.state.pop(remote_id, None)
        inside = block is not None and (block.ours or (block.start < self.end and block.end > self.start))
        self.state[remote_id] = block if inside else None

    def blocks(self) -> list[BusyBlock]:
        return [b for b in self.state.values() if b is not None]

    def changes(self, cursor: str, full: bool) -> Changes:
        return Changes(
            blocks=self.blocks(),
            removed=[remote_id for remote_id, b in self.state.items() if b is None],
            cursor=cursor,
            full=full,
        )


# --- the request point -------------------------------------------------------------------------------
@contextmanager
def sent(parts: int = 1) -> Iterator[None]:
    """Around every HTTP request to a calendar API: room in the quota windows first (`parts` batched
    requests count `parts` times); see `quotas.acquire`."""
    with quotas.acquire(parts):
        yield


def batch_size(setting: Any, limit: int) -> int:
    """Calls per batch request: the setting, capped at the service's `limit` and at what the quota
    governor lets one request carry on this connection (a batch never outgrows a window)."""
    try:
        wanted = int(setting)
    except (TypeError, ValueError):
        wanted = limit
    return max(1, min(wanted, limit, quotas.largest_request()))


def answered(status: int, retry_after: float | None, code: str = "") -> None:
    """Every answer (and batch part) the calendar API gave: a 429/503 naming a Retry-After, or Graph's
    MailboxConcurrency, marks the connection throttled for every worker until then."""
    if code.lower() == "mailboxconcurrency":
        quotas.throttle(retry_after or 1.0)
    elif status in THROTTLED and retry_after:
        quotas.throttle(retry_after)
