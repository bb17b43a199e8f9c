"""A series is one event (design decision 22): one recurring event per series and destination, with
exceptions for the occurrences that differ from what its rule makes.

The level-triggered unit stays the sync of one object in one destination; for an occurrence it is
"make the series' event and this occurrence's instance match the series as it is now". The series'
event is brought up to date first (under a lock per series and destination, so racing occurrences
write it once): made once under a deterministic key, patched when its title, text or rule changes,
ended (UNTIL) after its last occurrence that should exist, deleted when none should. Then the
occurrence's own instance: nothing when the rule makes it as it is, else one write (moved, retitled
or cancelled). What was written is kept (`SeriesRecord.written`, the occurrence's
`SyncRecord.written["series"]`), so a sync that would write the same thing again calls nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from dateutil import rrule
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import audit, locks, tokens
from .conf import get_setting
from .exceptions import AuthorizationLost, PermanentError, TransientError, UsageLimited
from .models import AccessLog, SeriesRecord, SyncRecord
from .providers import get_provider
from .sources import get_source
from .types import Event, Operation, Outcome

State = SyncRecord.State
MAX_INSTANCES = 1000  # a rule is never expanded further (a series has at most a few hundred)
PLAIN, CANCELLED, NONE = "plain", "cancelled", "none"


# --- the rule --------------------------------------------------------------------------------
def _parts(rule):
    return [p.strip() for p in rule.strip().removeprefix("RRULE:").split(";") if "=" in p]


def _until_local(value, zone):
    """An UNTIL as a naive local time: a UTC time converted, a floating one as is, a date its whole day."""
    if "T" not in value:
        return datetime.strptime(value[:8], "%Y%m%d") + timedelta(days=1, microseconds=-1)
    moment = datetime.strptime(value.rstrip("Z")[:15], "%Y%m%dT%H%M%S")
    return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None) if value.endswith("Z") else moment


def expand(rule, start, zone_name, limit=MAX_INSTANCES):
    """The starts (aware, UTC) the rule makes from `start`, expanded in wall-clock time of `zone_name`
    (09:00 stays 09:00 across daylight-saving changes; a time in the spring gap is read with the offset
    before it, RFC 5545 §3.3.5)."""
    zone = ZoneInfo(zone_name)
    local = start.astimezone(zone).replace(tzinfo=None)
    parts = dict(p.split("=", 1) for p in _parts(rule))
    until = parts.pop("UNTIL", None)
    recurrence = rrule.rrulestr(";".join(f"{k}={v}" for k, v in parts.items()), dtstart=local, cache=False)
    if until:
        recurrence = recurrence.replace(until=_until_local(until, zone))
    starts = list(islice(recurrence, limit))
    return [
        start.astimezone(UTC) if moment == local else moment.replace(tzinfo=zone, fold=0).astimezone(UTC)
        for moment in starts
    ]


def ended(rule, last):
    """The rule ending with the occurrence that starts at `last` (UNTIL in UTC, as calendars require)."""
    kept = [p for p in _parts(rule) if p.split("=", 1)[0].upper() not in ("COUNT", "UNTIL")]
    return ";".join([*kept, f"UNTIL={stamp(last)}"])


def stamp(moment):
    """RFC 5545's UTC form, YYYYMMDDTHHMMSSZ (also the tail of a Google instance id)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


# --- what the calendar should hold -------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """The series' event wanted in one destination (None: no event), and this occurrence's instance:
    NONE (the event has no such instance), PLAIN (as the rule makes it), CANCELLED, or the digest of
    the exception it must be; `instance_event` is what to write for it."""

    master: Event | None
    instance: str
    instance_event: Event | None = None
    #: Starts the rule makes that no occurrence has (left out when the series was made): cancelled.
    missing: tuple[datetime, ...] = ()


def _digest(*values):
    return hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()[:32]


def master_digest(event):
    return _digest(
        event.summary,
        event.location,
        event.description,
        event.start.astimezone(UTC).isoformat(),
        event.end.astimezone(UTC).isoformat(),
        event.time_zone,
        event.series.rule if event.series else "",
    )


def _wanted(source, obj, role):
    return source.should_exist(obj) and role in source.destinations(obj)


def plan(source, obj, info, role):
    """What the destination `role` should hold for the series of `obj` and for `obj`'s instance."""
    known, wanted = set(), []
    for member in source.series_members(obj):
        member_info = source.series(member)
        if member_info is None or member_info.key != info.key:
            continue
        known.add(member_info.original_start.astimezone(UTC))
        if _wanted(source, member, role):
            wanted.append(member_info.original_start)
    if not wanted:
        return Plan(None, NONE)
    starts = expand(info.rule, info.start, info.time_zone)
    last, rule = max(wanted), info.rule
    if any(s > last for s in starts):
        rule, starts = ended(info.rule, last), [s for s in starts if s <= last]
    missing = tuple(s for s in starts if s not in known)
    master = replace(
        source.series_event(obj, role),
        start=info.start,
        end=info.end,
        time_zone=info.time_zone,
        series=replace(info, rule=rule),
    )
    original = info.original_start.astimezone(UTC)
    if original not in starts:
        return Plan(master, NONE, missing=missing)
    if not _wanted(source, obj, role):
        return Plan(master, CANCELLED, missing=missing)
    event = source.event(obj, role)
    ruled = (original, original + (info.end - info.start))
    if (event.start, event.end) == ruled and event.summary == master.summary:
        plain = Event(summary=master.summary, start=ruled[0], end=ruled[1], time_zone=info.time_zone)
        return Plan(master, PLAIN, plain, missing)
    moved = replace(event, time_zone=info.time_zone, series=None)
    return Plan(master, _digest(event.start.isoformat(), event.end.isoformat(), event.summary), moved, missing)


# --- one occurrence's sync ---------------------------------------------------------------------
def applies(source, obj, token):
    """Whether `obj` syncs as an occurrence of its series' one event: it is one, and the token's
    provider writes series (`supports_series`; else each occurrence is an event of its own)."""
    if obj is None or token is None or source.series(obj) is None:
        return False
    return get_provider(token.provider).supports_series


def _master_record(source, info, record, token):
    """The series' record in this destination; forgotten when the event went to another calendar."""
    fields = {"owner_kind": record.owner_kind, "owner_id": record.owner_id}
    try:
        with transaction.atomic():
            master, _ = SeriesRecord.objects.get_or_create(
                source=source.key, series_key=info.key, destination=record.destination, defaults=fields
            )
    except IntegrityError:
        master = SeriesRecord.objects.get(source=source.key, series_key=info.key, destination=record.destination)
    where = (str(token.pk), token.calendar_id)
    if (master.connection, master.calendar_id) != where:
        master.connection, master.calendar_id = where
        master.remote_id, master.remote_may_exist, master.written = "", False, {}
        master.save()
    return master


def _reason(operation):
    if operation.is_delete:
        return AccessLog.Reason.CANCELLED
    return AccessLog.Reason.RESCHEDULED if operation.known_to_exist else AccessLog.Reason.CONFIRMED


class _Stop(Exception):
    """The round ends with this state (None: go again) after a call that did not succeed."""

    def __init__(self, state):
        self.state = state


def sync_round(item, info, reason, run):
    """One round of an occurrence's sync (see the module); `run` applies operations with the
    connection's token (the core's). Returns the record's state, or None when the object changed
    meanwhile (go again). Raises TransientError for the caller to retry."""
    source, record, token = item.source, item.record, item.token
    versioned = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    if token.writes_paused:  # the provider's usage limit: no call until it resets
        note = tokens.pause_note(token.paused_until)
        return State.PENDING if versioned.update(retry_at=token.paused_until, last_error=note) else None
    logs: list[AccessLog] = []
    with locks.held(source.key, f"series:{info.key}", record.destination):
        master = _master_record(source, info, record, token)
        wanted = plan(source, item.obj, info, record.destination)
        try:
            _drop_single(source, record, token, reason, run, logs)
            fresh = _sync_master(source, info, record, token, master, wanted, reason, run, logs)
            _sync_missing(source, info, record, token, master, wanted, reason, run, logs)
            done = _sync_instance(source, info, record, token, master, wanted, reason, run, logs, fresh)
        except _Stop as stop:
            return _end(versioned, stop.state, logs)
        except TransientError:
            _save(logs)
            raise
        return _end(versioned, State.SYNCED, logs, written=done)


def _call(token, operation, reason, run, logs, versioned):
    """Apply one operation; its outcome on success, else _Stop (or TransientError) with the record written."""
    reason = reason or _reason(operation)
    try:
        outcome = run(token, [operation], reason, log=False)[0]
    except AuthorizationLost as exc:  # logged by `run`
        raise _Stop(_failed(versioned, State.NOT_CONNECTED, exc)) from None
    logs.append(audit.entry_for(token, [operation], [outcome], reason))
    error = outcome.error
    if isinstance(error, UsageLimited):
        until = tokens.pause_writes(token, error)
        _save(logs)
        logs.clear()
        versioned.update(retry_at=until, last_error=tokens.pause_note(until) if until else "")
        raise _Stop(State.PENDING)
    if isinstance(error, TransientError):
        _save(logs)
        logs.clear()
        versioned.update(
            attempts=F("attempts") + 1,
            last_error=str(error)[:2000],
            retry_at=timezone.now() + timedelta(seconds=error.retry_after or get_setting("RETRY_BACKOFF")),
        )
        raise error
    return outcome


def _drop_single(source, record, token, reason, run, logs):
    """An event of the occurrence's own (written before it synced as part of its series, or by a
    provider that writes no series) is deleted once: the series' event holds the occurrence now."""
    if not record.remote_may_exist:
        return
    versioned = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    operation = Operation(
        key=source.event_id(record.object_id, record.destination),
        object_ref=f"{source.key}:{record.object_id}",
        remote_id=record.remote_id or None,
        known_to_exist=True,
    )
    outcome = _call(token, operation, reason or AccessLog.Reason.CANCELLED, run, logs, versioned)
    if outcome.error is not None:
        raise _Stop(_failed(versioned, State.FAILED, outcome.error, logs))
    SyncRecord.objects.filter(pk=record.pk).update(remote_may_exist=False, remote_id="")
    field = source.event_id_field
    if field and record.destination == "member":  # the object no longer names that event
        source.get_queryset().filter(pk=record.object_id).update(**{field: source.stored_event_id(None)})


def _sync_master(source, info, record, token, master, wanted, reason, run, logs):
    """Bring the series' event to `wanted.master`: nothing when it is as written (or gone and unwanted).
    Returns whether it was written now."""
    versioned = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    if wanted.master is None:
        if not master.remote_may_exist:
            return False
        digest = None
    else:
        digest = master_digest(wanted.master)
        if master.remote_may_exist and master.written.get("digest") == digest:
            return False
    operation = Operation(
        key=source.event_id(f"series:{info.key}", record.destination),
        event=wanted.master,
        object_ref=f"{source.key}:series:{info.key}"[:140],
        remote_id=master.remote_id or None,
        known_to_exist=master.remote_may_exist or bool(master.remote_id),
    )
    if not operation.is_delete and not master.remote_may_exist:
        # Committed before the call: a create whose answer is lost still leaves "it may exist".
        SeriesRecord.objects.filter(pk=master.pk).update(remote_may_exist=True)
        master.remote_may_exist = True
    outcome = _call(token, operation, reason, run, logs, versioned)
    if outcome.error is not None:
        raise _Stop(_failed(versioned, State.FAILED, outcome.error, logs))
    if operation.is_delete:
        master.remote_id, master.remote_may_exist, master.written = "", False, {}
    else:
        # The same event when it was there and its id is unchanged (a CalDAV id's "#<ETag>" aside).
        same = operation.known_to_exist and _resource(outcome.remote_id) in (
            "",
            _resource(master.remote_id),
            operation.key,
        )
        generation = master.written.get("generation") if same else None
        master.remote_id = outcome.remote_id or master.remote_id
        kept = master.written if generation else {}  # what else was written to this very event
        master.written = {**kept, "digest": digest, "generation": generation or secrets.token_hex(8)}
    master.save(update_fields=["remote_id", "remote_may_exist", "written", "updated_at"])
    return True


def _sync_missing(source, info, record, token, master, wanted, reason, run, logs):
    """Cancel the instances the rule makes on dates the series has no occurrence for (left out when it
    was made, e.g. taken): one call each, once per event (`written["missing"]`)."""
    done = set(master.written.get("missing") or [])
    versioned = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    for moment in wanted.missing if wanted.master is not None else ():
        if stamp(moment) in done:
            continue
        operation = Operation(
            key=source.event_id(f"series:{info.key}", record.destination),
            object_ref=f"{source.key}:series:{info.key}"[:140],
            remote_id=master.remote_id or None,
            known_to_exist=True,
            occurrence=moment,
        )
        outcome = _call(token, operation, reason or AccessLog.Reason.CANCELLED, run, logs, versioned)
        if outcome.error is not None:
            raise _Stop(_failed(versioned, State.FAILED, outcome.error, logs))
        done.add(stamp(moment))
        master.written = {**master.written, "missing": sorted(done)}
        SeriesRecord.objects.filter(pk=master.pk).update(written=master.written)


def _resource(remote_id):
    return (remote_id or "").partition("#")[0]


def _sync_instance(source, info, record, token, master, wanted, reason, run, logs, fresh=False):
    """Write this occurrence's instance when it differs from what was written; returns what it holds now.
    An instance that is not there (404/410) means the series' event is not as written: it is written
    again next round, unless it was just written (then the occurrence's sync fails, visibly)."""
    generation = master.written.get("generation")
    before = record.written.get("series") or {}
    held = before.get("instance") if before.get("generation") == generation else PLAIN
    if wanted.master is None:
        return {}  # no series' event: no instance either
    target = wanted.instance
    if target == NONE:  # the rule no longer makes it: an exception written to it is cancelled once
        target = held if held in (PLAIN, CANCELLED) else CANCELLED
    if target == held:
        return {"generation": generation, "instance": target}
    versioned = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    operation = Operation(
        key=source.event_id(f"series:{info.key}", record.destination),
        event=None if target == CANCELLED else wanted.instance_event,
        object_ref=f"{source.key}:{record.object_id}",
        remote_id=master.remote_id or None,
        known_to_exist=True,
        occurrence=info.original_start.astimezone(UTC),
    )
    outcome = _call(token, operation, reason, run, logs, versioned)
    error = outcome.error
    gone = isinstance(error, PermanentError) and error.status in (404, 410)
    if gone and operation.is_delete:
        error = None  # cancelling an instance that is not there: done
    elif gone and not fresh:
        # The series' event is not there as written (deleted in the calendar?): write it again next round.
        SeriesRecord.objects.filter(pk=master.pk).update(written={}, remote_may_exist=True)
        _save(logs)
        logs.clear()
        raise _Stop(None)
    if error is not None:
        raise _Stop(_failed(versioned, State.FAILED, error, logs))
    return {"generation": generation, "instance": target}


def _save(logs):
    for log in logs:
        log.save(force_insert=True)


def _failed(versioned, state, error, logs=()):
    with transaction.atomic():
        _save(logs)
        won = versioned.update(state=state, last_error=str(error)[:2000], retry_at=None, updated_at=timezone.now())
    if isinstance(logs, list):
        logs.clear()
    return state if won else None


def _end(versioned, state, logs, written=None):
    """Record how the round ended (compare-and-set on the version read); None when it changed meanwhile."""
    if state is None or state != State.SYNCED:
        _save(logs)
        return state
    record = next(iter(versioned), None)
    now = timezone.now()
    with transaction.atomic():
        _save(logs)
        if record is None:
            return None
        kept = {**record.written, "series": written or {}}
        won = versioned.update(
            state=State.SYNCED,
            synced_version=record.version,
            synced_at=now,
            attempts=0,
            last_error="",
            retry_at=None,
            updated_at=now,
            remote_may_exist=False,  # the occurrence has no event of its own: the series' event holds it
            written=kept,
        )
    return State.SYNCED if won else None


def remove(token, calendar_id, run, reason):
    """Delete the series' events we wrote with `token` in `calendar_id` (the owner moves to another
    calendar or connection); each is forgotten once gone. Returns how many could not be removed."""
    masters = list(
        SeriesRecord.objects.filter(
            owner_kind=token.owner_kind,
            owner_id=token.owner_id,
            connection=str(token.pk),
            calendar_id=calendar_id,
            remote_may_exist=True,
        )
    )
    failed = 0
    for master in masters:
        source_key = master.source
        operation = Operation(
            key=_key(source_key, master),
            object_ref=f"{source_key}:series:{master.series_key}"[:140],
            remote_id=master.remote_id or None,
            known_to_exist=True,
        )
        try:
            outcome = run(token, [operation], reason, calendar_id=calendar_id)[0]
        except (AuthorizationLost, TransientError) as exc:
            outcome = Outcome(exc)
        if outcome.error is None:
            SeriesRecord.objects.filter(pk=master.pk).update(
                remote_id="", remote_may_exist=False, written={}, connection="", calendar_id=""
            )
        else:
            failed += 1
    return failed


def _key(source_key, master):
    """The source's deterministic key for the series' event."""
    return get_source(source_key).event_id(f"series:{master.series_key}", master.destination)
