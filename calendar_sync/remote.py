"""What someone changed in our events in a member's own calendar, reported to the host (decision 21).

A pull of a member's write calendar (`reads.pull`) hands its changes here. Only our events count:
those whose remote id a synced record of that member holds. The app decides nothing about them; it
tells the host's `EventSource` through its hooks and leaves one access-log row each, with the word
the hook answered (what the host did) as its outcome:

- gone (deleted or cancelled, confirmed by reading the event itself: a read that only no longer
  lists it, or a failed read, never counts) → `remote_deleted`;
- at another time than the object's event → `remote_moved`;
- guests' answers other than last reported → `responses_changed`.

Our own writes never come back as changes: a record keeps the provider's version of what our last
write left (`SyncRecord.written["version"]`), and an event still at that version is as we wrote it.
A change is claimed on the record (its version noted, compare-and-set on the record's version)
before the host hears of it, so a repeated read, or our own write racing the read, reports nothing
twice; a record with our write still pending is left alone (that write decides).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction

from . import audit, tokens
from .exceptions import ConfigurationError, PermanentError
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner
from .providers import PROVIDERS, get_provider
from .sources import get_source
from .types import BusyBlock, Changes

logger = logging.getLogger(__name__)
Reason = AccessLog.Reason
#: Keys of `SyncRecord.written` that describe the event as we wrote it: dropped once the calendar
#: holds something else, so the next write is sent whatever it compares with.
WRITTEN_DIGESTS = ("digest", "guest_digest")


def watched(token: CalendarToken) -> bool:
    """Whether the pull of this connection reports changes to our events: a member's write one on a
    provider whose reads say enough (`reports_changes`)."""
    return not token.is_shared and token.write and get_provider(token.provider).reports_changes


def providers(push: bool = False) -> list[str]:
    """Names of the providers whose members' write calendars are watched (with `push`: those that can
    also notify)."""
    return [
        name
        for name in PROVIDERS
        if (provider := get_provider(name)).reports_changes and (provider.supports_push or not push)
    ]


def review(owner: Owner, token: CalendarToken, changes: Changes, start: datetime, end: datetime, reason: str) -> int:
    """Report what the member changed in our events, as `changes` (a read of [start, end)) shows it.
    Returns how many changes were reported."""
    seen = {b.remote_id: b for b in changes.blocks if b.remote_id}
    ids = set(seen) | set(changes.removed)
    synced = SyncRecord.objects.filter(state=SyncRecord.State.SYNCED, remote_may_exist=True, **owner.lookup()).exclude(
        remote_id=""
    )
    records = list(synced.filter(remote_id__in=ids)) if ids else []
    if changes.full:  # a full read names no deletion: ours it should have shown are looked up
        records += _unlisted(synced.exclude(remote_id__in=ids), start, end)
    reported = 0
    for record in records:
        try:
            reported += _review(token, record, seen.get(record.remote_id), reason)
        except ConfigurationError:  # a source the host no longer configures
            continue
        except PermanentError as exc:  # this event cannot be read: it stays as it is, the others go on
            logger.warning("event %s of %s not read: %s", record.remote_id[:40], owner, exc.code)
    return reported


def _unlisted(records: Any, start: datetime, end: datetime, chunk: int = 500) -> list[SyncRecord]:
    """Records whose object's event lies in [start, end) though the read did not list it (objects read
    `chunk` at a time, one query per source)."""
    found: list[SyncRecord] = []
    rows = list(records.only("pk", "source", "object_id", "destination", "version", "remote_id", "written"))
    for first in range(0, len(rows), chunk):
        part = rows[first : first + chunk]
        for key in {r.source for r in part}:
            try:
                source = get_source(key)
            except ConfigurationError:
                continue
            model_pk = source.get_model()._meta.pk
            objects = source.get_queryset().in_bulk([model_pk.to_python(r.object_id) for r in part if r.source == key])
            for record in (r for r in part if r.source == key):
                obj = objects.get(model_pk.to_python(record.object_id))
                if obj is not None and source.should_exist(obj):
                    event = source.event(obj, record.destination)
                    if event.start < end and event.end > start:
                        found.append(record)
    return found


def _object(source: Any, object_id: str) -> Any:
    pk = source.get_model()._meta.pk.to_python(object_id)
    return source.get_queryset().filter(pk=pk).first()


def _review(token: CalendarToken, record: SyncRecord, block: BusyBlock | None, reason: str) -> int:
    source = get_source(record.source)
    obj = _object(source, record.object_id)
    if obj is None or not source.should_exist(obj):
        return 0  # our own delete is under way
    if block is None:  # the read no longer lists it: only the event itself says it is gone
        provider = get_provider(token.provider)
        block = tokens.with_access(
            token,
            AccessLog.Operation.PULL,
            reason,
            lambda access: provider.event(access, token.calendar_id, record.remote_id),
        )
    written = dict(record.written or {})
    ref, role = f"{source.key}:{record.object_id}", record.destination
    if block is None:
        if not _claim(record, remote_id="", remote_may_exist=False, written={}):
            return 0
        _report(token, Reason.REMOTE_DELETED, ref, lambda: source.remote_deleted(obj, role))
        return 1
    if block.version and block.version == written.get("version"):
        return 0  # still as our last write left it
    event = source.event(obj, role)
    moved = (_second(block.start), _second(block.end)) != (_second(event.start), _second(event.end))
    answers = sorted([g.email, g.response] for g in block.guests)
    answered = bool(block.guests) and answers != written.get("responses", [])
    claimed = {key: value for key, value in written.items() if not (moved and key in WRITTEN_DIGESTS)}
    if block.version:
        claimed["version"] = block.version
    if block.guests:
        claimed["responses"] = answers
    if (claimed == written and not moved) or not _claim(record, written=claimed):
        return 0  # nothing new (a provider that names no version: a move is reported all the same)
    reported = 0
    if moved:
        _report(token, Reason.REMOTE_MOVED, ref, lambda: source.remote_moved(obj, role, block.start, block.end))
        reported += 1
    if answered:
        _report(token, Reason.RESPONSES, ref, lambda: source.responses_changed(obj, role, list(block.guests)))
        reported += 1
    return reported


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _claim(record: SyncRecord, **fields: Any) -> bool:
    """Note what was found on the record, unless our own write changed it meanwhile (that write decides)
    or a racing pull noted it first (under the row's lock: one of them reports it)."""
    with transaction.atomic():
        current = (
            SyncRecord.objects.select_for_update()
            .filter(pk=record.pk, version=record.version, state=SyncRecord.State.SYNCED)
            .values_list("remote_id", "written")
            .first()
        )
        if current is None or current != (record.remote_id, record.written):
            return False
        return SyncRecord.objects.filter(pk=record.pk).update(**fields) > 0


def _report(token: CalendarToken, reason: Any, ref: str, hook: Any) -> None:
    """Call the host's hook and leave one row in the member's activity with what it answered."""
    try:
        outcome = hook() or "ok"
    except Exception:  # noqa: BLE001 - the host's rule failed: logged, the pull goes on
        logger.exception("calendar change hook (%s) failed for %s", reason, ref)
        outcome = "error"
    row = audit.entry(token, AccessLog.Operation.PULL, reason, object_ref=ref)
    row.outcome = str(outcome)[:64]
    row.save(force_insert=True)
