"""Who hears of a write, and which writes are sent at all (design decision 21).

Guests get one invitation when the event is first written, one update when what they see changes
(time, place, guest list, video link), one cancellation when it is deleted — and nothing on a
retry, resync, sweep, backfill, calendar move, duplicate delivery or a change only the member sees
(a title). The sync core asks `plan()` before every write, comparing the event about to be written
with what was last written there (`SyncRecord.written`):

- `"digest"`: a hash of the whole event as written. Unchanged, with the event there: no call at
  all (a duplicate delivery, sweep or backfill costs no quota). A resync writes it again anyway
  (it repairs what someone changed in the calendar), never notifying.
- `"guest_digest"`: a hash of what guests see; absent when the event had no guests, so a delete
  notifies only when there were guests to tell.
- `"announced"`: the guest digest of a notifying write under way (committed before the call). If
  the worker dies or the network drops the answer, the next attempt does not notify again: at
  most one message per change, never two.

A provider whose service tells attendees of every organizer write (`notifies_every_write`: Graph)
is not sent a write that changes nothing its guests see: that change waits for the next one they
do see (a known limit, in the README).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from .types import Event, Operation, Outcome

DIGEST, GUEST_DIGEST, ANNOUNCED = "digest", "guest_digest", "announced"
KEYS = (DIGEST, GUEST_DIGEST, ANNOUNCED)


@dataclass(frozen=True)
class Plan:
    """Whether to send the write, and whether its guests should hear of it."""

    send: bool
    notify: bool = False


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def digest(event: Event) -> str:
    """The whole event as it would be written (guests in any order are the same guests)."""
    fields = asdict(event)
    fields["attendees"] = sorted(event.attendees)
    return _hash(fields)


def guest_digest(event: Event) -> str | None:
    """What the event's guests see of it; None when it has none."""
    if not event.attendees:
        return None
    return _hash(
        [
            event.start.isoformat(),
            event.end.isoformat(),
            event.location,
            sorted(event.attendees),
            event.conference,
            event.join_url,
        ]
    )


def plan(
    written: dict[str, Any] | None,
    operation: Operation,
    *,
    exists: bool,
    bulk: bool,
    rewrite: bool = False,
    notifies_every_write: bool = False,
) -> Plan:
    """What to do with `operation`, given what was last `written` in that destination.

    `exists`: the event is there, under a known id (the record says so, not only the object). `bulk`: backfills, resyncs, calendar moves — they never notify. `rewrite`: a resync, which
    writes an unchanged event again. `notifies_every_write`: the provider tells attendees of every
    write whatever we ask (Graph)."""
    written = written or {}
    if operation.is_delete:
        return Plan(True, bool(written.get(GUEST_DIGEST)) and not bulk)
    event = operation.event
    assert event is not None
    exists = exists and bool(operation.remote_id)
    guests = guest_digest(event)
    seen = guests != written.get(GUEST_DIGEST)  # guests appear, go, or see another time, place or link
    if exists and not seen and event.attendees and notifies_every_write:
        return Plan(False)  # the service would tell every guest of a change they cannot see
    if exists and written.get(DIGEST) == digest(event) and not rewrite:
        return Plan(False)  # already there as it should be
    announced = guests is not None and guests == written.get(ANNOUNCED)
    return Plan(True, seen and not bulk and not announced)


def announcing(written: dict[str, Any] | None, operation: Operation) -> dict[str, Any] | None:
    """`written` with the marker of a notifying write about to be sent; None when nothing to mark."""
    if not operation.notify or operation.event is None:
        return None
    guests = guest_digest(operation.event)
    return None if guests is None else {**(written or {}), ANNOUNCED: guests}


def after(written: dict[str, Any] | None, operation: Operation | None, outcome: Outcome, sent: bool) -> dict[str, Any]:
    """`written` once a sync ended: the digests of what a successful write put there (none after a
    delete); an error the service answered (it did nothing) forgets the marker of a notifying write,
    an unanswered one keeps it (the write may have gone through)."""
    written = dict(written or {})
    if operation is None:
        return written
    error = outcome.error
    if error is None and operation.is_delete:
        for key in KEYS:
            written.pop(key, None)
    elif error is None and sent and operation.event is not None:
        written[DIGEST] = digest(operation.event)
        guests = guest_digest(operation.event)
        if guests is None:
            written.pop(GUEST_DIGEST, None)
        else:
            written[GUEST_DIGEST] = guests
        written.pop(ANNOUNCED, None)
    elif error is not None and getattr(error, "status", None):
        written.pop(ANNOUNCED, None)
    return written
