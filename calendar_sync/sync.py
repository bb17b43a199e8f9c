"""The level-triggered core: make each destination's calendar match the object as it is *now*.

Plain functions, no Celery: what needs enqueueing is returned to the caller (`tasks`). Every
trigger (save, retry, sweep, reconnect, resync) asks for the same work — sync one object in
one destination — so duplicate, late or reordered deliveries converge on the right result.
"""

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Model, Q
from django.utils import timezone

from . import audit, invitations, locks, meetings, series, tokens
from .conf import get_setting
from .exceptions import AuthorizationLost, TransientError, UsageLimited
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner
from .progress import STALE_AFTER, tracked
from .providers import get_provider
from .sources import EventSource, get_source, get_sources
from .types import Operation, Outcome

logger = logging.getLogger(__name__)
State = SyncRecord.State
MEMBER_ROLE = "member"
MAX_ROUNDS = 5  # re-reads when the object changes while a sync is under way
#: Writes for these reasons are bulk work: they use at most QUOTA_BULK_SHARE of a connection's window.
# Writes for these reasons are bulk work (quotas.bulk): backfills, resyncs, calendar and connection moves.
BULK_REASONS = {AccessLog.Reason.BACKFILL, AccessLog.Reason.RESYNC, AccessLog.Reason.CALENDAR_CHANGE}
# A resync writes events again even when they look unchanged: it repairs what someone did in the calendar.
REWRITE_REASONS = {AccessLog.Reason.RESYNC}


@dataclass(frozen=True)
class Work:
    """One unit to enqueue: sync `object_id` of `source` in `destination`, after `countdown` seconds,
    for `reason` (a backfill's leftovers stay bulk work)."""

    source: str
    object_id: str
    destination: str = MEMBER_ROLE
    countdown: float | None = None
    reason: str | None = None


def mark_changed(source, obj):
    """Record (in the caller's transaction) that `obj`'s events must be brought up to date.

    Returns the destinations to sync: none when no record exists and no event is wanted.
    """
    object_id = str(obj.pk)
    wanted = destinations(source, obj)
    records = SyncRecord.objects.filter(source=source.key, object_id=object_id)
    changes = {
        "version": F("version") + 1,
        "state": State.PENDING,
        "attempts": 0,
        "retry_at": None,
        "last_error": "",
        "updated_at": timezone.now(),
    }
    if records.update(**changes) == len(wanted):
        return list(wanted)
    present = set(records.values_list("destination", flat=True))
    missing = [role for role in wanted if role not in present]
    if missing and source.should_exist(obj):
        try:
            with transaction.atomic():
                SyncRecord.objects.bulk_create(
                    [
                        SyncRecord(source=source.key, object_id=object_id, destination=role, **wanted[role].lookup())
                        for role in missing
                    ]
                )
        except IntegrityError:  # created concurrently: bump them instead
            records.filter(destination__in=missing).update(**changes)
        present.update(missing)
    return sorted(present)


def destinations(source, obj):
    """{role: Owner} the object syncs to now: the member's always (its state shows "not connected"),
    shared ones only while connected — a room without a calendar costs no record and no task;
    connecting it later backfills its upcoming objects.
    """
    destinations = {role: Owner.of(kind, pk) for role, (kind, pk) in source.destinations(obj).items()}
    shared = [owner for owner in destinations.values() if not owner.is_member]
    if not shared:
        return destinations
    query = Q()
    for owner in shared:
        query |= Q(**owner.lookup())
    connected = {
        Owner(kind, pk) for kind, pk in CalendarToken.objects.filter(query).values_list("owner_kind", "owner_id")
    }
    return {role: owner for role, owner in destinations.items() if owner.is_member or owner in connected}


def _run(token, operations, reason, calendar_id=None, log=True):
    """Apply operations with a fresh access token; one forced refresh on a 401. Raises AuthorizationLost.

    Returns one Outcome per operation and leaves one access-log row (one insert) for them —
    with `log=False` the caller writes that row (`audit.entry_for`), in the transaction
    that records the outcome. A lost authorization is logged here before it is raised. The calls
    count against the connection's quotas (bulk ones for BULK_REASONS).
    """
    provider = get_provider(token.provider)
    calendar_id = calendar_id or token.calendar_id
    with tokens.counted(token, bulk=reason in BULK_REASONS):
        return _apply(provider, token, calendar_id, operations, reason, log)


def _apply(provider, token, calendar_id, operations, reason, log):
    try:
        results = provider.apply(tokens.access_token(token, reason=reason), calendar_id, operations)
        retry = [i for i, r in enumerate(results) if isinstance(r.error, AuthorizationLost)]
        if retry:
            access = tokens.access_token(token, force=True, reason=reason)
            for i, r in zip(retry, provider.apply(access, calendar_id, [operations[i] for i in retry]), strict=True):
                results[i] = r
                if isinstance(r.error, AuthorizationLost):
                    tokens.mark_needs_reauth(token, r.error)
                    raise r.error
    except AuthorizationLost as exc:
        audit.log_operations(token, operations, [Outcome(exc)] * len(operations), reason)
        raise
    if log:
        audit.log_operations(token, operations, results, reason)
    return results


@dataclass
class _Item:
    """One object in one destination as a sync read it: its record, the record owner's connection
    (None when not connected) and the object (None when it is gone)."""

    source: EventSource
    record: SyncRecord
    token: CalendarToken | None
    obj: Model | None


def _operation(item):
    """What the provider must do for this object in this destination now. Patch first when an event may exist."""
    source, record, obj = item.source, item.record, item.obj
    object_id, role = record.object_id, record.destination
    wanted = obj is not None and source.should_exist(obj) and role in source.destinations(obj)
    remote_id = record.remote_id or None
    if remote_id is None and role == MEMBER_ROLE and obj is not None and source.event_id_field:
        remote_id = getattr(obj, source.event_id_field) or None
    operation = Operation(
        key=source.event_id(object_id, role),
        event=source.event(obj, role) if wanted else None,
        object_ref=f"{source.key}:{object_id}",
        remote_id=remote_id,
        known_to_exist=record.remote_may_exist or bool(remote_id),
    )
    return meetings.plan(operation, item.token, record)  # the video meeting this copy is to have


def _reason(operation):
    """Why this write happens, for the access log: derived from what the write does."""
    if operation.is_delete:
        return AccessLog.Reason.CANCELLED
    return AccessLog.Reason.RESCHEDULED if operation.known_to_exist else AccessLog.Reason.CONFIRMED


NO_CALL = Outcome()  # how a sync ends that called nothing: no error, no remote id


def _finish(item, state, operation=None, outcome=NO_CALL, log=None):
    """Write how the sync of `item` ended; its record only if nobody changed the object meanwhile
    (compare-and-set on the version read). Returns whether the record was written.

    One transaction: the object's event id (only when it changes), the record, and `log`, the
    call's access-log row (unsaved). Rows are locked in the order saves lock them (object, then
    record), so no deadlock. The event id and the log row are written whoever wins: both say what
    the calendar now holds, and a newer version's sync starts from there.
    """
    source, record, obj = item.source, item.record, item.obj
    records = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    error = outcome.error
    with transaction.atomic():
        if state == State.SYNCED and obj is None:
            won = records.delete()[0] > 0  # the object and its event are gone: so is the record
        else:
            event_id = None if operation is None or operation.is_delete else outcome.remote_id or operation.remote_id
            field = source.event_id_field
            if state == State.SYNCED and field and record.destination == MEMBER_ROLE:
                if getattr(obj, field) != (
                    stored := source.stored_event_id(event_id)
                ):  # "" where the field takes no null
                    type(obj)._default_manager.filter(pk=obj.pk).update(**{field: stored})  # the object row first
            now = timezone.now()
            changes = {
                "state": state,
                "last_error": "" if error is None else str(error)[:2000],
                "retry_at": None,
                "updated_at": now,
            }
            if state == State.SYNCED:
                changes.update(
                    synced_version=record.version,
                    synced_at=now,
                    attempts=0,
                    remote_may_exist=not operation.is_delete,
                    remote_id=event_id or "",
                )
            written = invitations.after(record.written, operation, outcome, outcome is not NO_CALL)
            if state == State.SYNCED and outcome is not NO_CALL:  # a call left a new version of the event
                written = _with_version(written, operation, outcome, item.token)
            if written != (record.written or {}):  # only when ours changed: other keys stay as others wrote them
                changes["written"] = written
            won = records.update(**changes) > 0
        if log is not None:
            log.save(force_insert=True)
    return won


WRITTEN_IN = "calendar"  # `SyncRecord.written` key: the connection and calendar the event was written to


def written_in(token):
    """Where a write of `token` puts its events: its connection and calendar (`SyncRecord.written["calendar"]`).
    A read of another calendar (a calendar change or a new write connection whose move has not run
    yet) says nothing of that event (`remote`)."""
    return f"{token.pk}:{token.calendar_id}"


def forget_written_in(owner):
    """The owner's connection was granted again, maybe for another account: where its events were
    written is no longer known, so no read reports them gone or moved until they are written again."""
    records = SyncRecord.objects.filter(**owner.lookup(), written__has_key=WRITTEN_IN)
    with transaction.atomic():
        for pk, written in records.select_for_update().values_list("pk", "written"):
            SyncRecord.objects.filter(pk=pk).update(written={k: v for k, v in written.items() if k != WRITTEN_IN})


def _with_version(written, operation, outcome, token=None):
    """`written` with the provider's version of what this write left and the calendar it is in (neither
    after a delete), so a read that finds that version knows the event is still as we wrote it (`remote`)."""
    written = {key: value for key, value in (written or {}).items() if key not in ("version", WRITTEN_IN)}
    if operation is not None and not operation.is_delete:
        if outcome.version:
            written["version"] = outcome.version
        if token is not None:
            written[WRITTEN_IN] = written_in(token)
    return written


def record_transient(record, error, retry_in):
    """Remember a transient failure; the record stays pending until `retry_in` seconds pass.
    An answered error forgets the marker of a notifying write (`invitations.after`)."""
    changes = {}
    written = invitations.after(record.written, Operation(key=""), Outcome(error), sent=True)
    if written != (record.written or {}):
        changes["written"] = written
    SyncRecord.objects.filter(pk=record.pk, version=record.version).update(
        attempts=F("attempts") + 1,
        last_error=str(error)[:2000],
        retry_at=timezone.now() + timedelta(seconds=retry_in),
        updated_at=timezone.now(),
        **changes,
    )


def _planned(item, token, operation, reason):
    """The operation with `notify` decided, and whether to send it at all (`invitations.plan`)."""
    plan = invitations.plan(
        item.record.written,
        operation,
        exists=item.record.remote_may_exist,
        bulk=reason in BULK_REASONS,
        rewrite=reason in REWRITE_REASONS,
        notifies_every_write=get_provider(token.provider).notifies_every_write,
    )
    return replace(operation, notify=plan.notify), plan.send


def _announce(record, operation):
    """Before a notifying write, commit that it is under way (`invitations`): never announced twice."""
    written = invitations.announcing(record.written, operation)
    if written is not None:
        SyncRecord.objects.filter(pk=record.pk).update(written=written)
        record.written = written


def record_paused(records, until):
    """Writes to the records' connection are paused until `until`: they stay pending and the sweeper
    takes them up then. No task waits hours in the broker (past its visibility timeout it would be
    delivered again and again), and nothing is lost."""
    now = timezone.now()
    return records.update(retry_at=until, last_error=tokens.pause_note(until) if until else "", updated_at=now)


def _records(source_key, object_id, destination):
    return SyncRecord.objects.filter(source=source_key, object_id=str(object_id), destination=destination)


def _one(queryset):
    """The row of a query on a unique key, or None. Unordered (unlike first()): there is nothing to order."""
    return next(iter(queryset.order_by()), None)


def _token(record):
    """The write connection of the record's owner (where its events go), or None."""
    return _one(CalendarToken.objects.filter(owner_kind=record.owner_kind, owner_id=record.owner_id, write=True))


def give_up(source_key, object_id, error, destination=MEMBER_ROLE):
    """Retries are exhausted: mark failed; the sweeper tries again later if it was transient."""
    later = timezone.now() + timedelta(seconds=get_setting("RETRY_BACKOFF_MAX"))
    _records(source_key, object_id, destination).filter(state=State.PENDING).update(
        state=State.FAILED, last_error=str(error)[:2000], retry_at=later, updated_at=timezone.now()
    )


def fail_unexpected(source_key, object_id, exc, destination=MEMBER_ROLE):
    """An error nothing classified: end the work as failed, visible, on a bounded retry schedule.

    Retried by the sweeper after RETRY_BACKOFF * 2**attempts seconds (capped), MAX_RETRIES
    times; then it stays failed until someone resyncs it.
    """
    logger.exception("calendar sync of %s:%s → %s met an unexpected error", source_key, object_id, destination)
    record = _records(source_key, object_id, destination).first()
    if record is None:
        return
    attempts = record.attempts + 1
    delay = min(get_setting("RETRY_BACKOFF_MAX"), get_setting("RETRY_BACKOFF") * 2**attempts)
    retry_at = timezone.now() + timedelta(seconds=delay) if attempts < get_setting("MAX_RETRIES") else None
    SyncRecord.objects.filter(pk=record.pk, version=record.version).update(
        state=State.FAILED,
        attempts=attempts,
        retry_at=retry_at,
        last_error=f"Unexpected error: {type(exc).__name__}: {exc}"[:2000],
        updated_at=timezone.now(),
    )


def sync_object(source_key, object_id, destination=MEMBER_ROLE, reason=None, reread=None):
    """Bring one object's event in one destination up to date. Returns the record state.

    `reread`: a list this sync appends True to when its write left the copy's video meeting still
    being made (Google makes Meet asynchronously), for the caller to read it again shortly.

    Raises TransientError for the caller to retry later; every other outcome is recorded,
    including errors nothing classified (as failed, with the error). Syncs of the same object in
    the same destination run one at a time (`locks.held`); the lock is released after the
    outcome is committed, so the next sync reads it.
    """
    source = get_source(source_key)
    object_id = str(object_id)
    with locks.held(source_key, object_id, destination):
        try:
            for round_ in range(MAX_ROUNDS):
                state = _sync_round(source, object_id, destination, round_ == 0, reason, reread)
                if state is not None:
                    return state
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, never left pending
            fail_unexpected(source_key, object_id, exc, destination)
            return State.FAILED
    # Changed on every round: leave it pending; the task the last change enqueued converges.
    return State.PENDING


def _read(source, object_id, destination, first):
    """The `_Item` to sync; None when there is no record, or (`first`) when it is synced at its
    version already: a duplicate delivery reads nothing more. The record is read before the
    object, so its version never claims a newer object than the one read."""
    record = _one(_records(source.key, object_id, destination))
    if record is None or (first and record.state == State.SYNCED and record.synced_version == record.version):
        return None
    token = _token(record)
    obj = _one(source.get_queryset().filter(pk=object_id))
    return _Item(source, record, token, obj)


def _sync_round(source, object_id, destination, first, reason=None, reread=None):
    """One read-apply-compare round; None when the object changed meanwhile (go again)."""
    item = _read(source, object_id, destination, first)
    if item is None:
        return State.SYNCED  # already synced, nothing was ever asked, or the object and its event are gone
    record, token = item.record, item.token
    if token is None or not token.is_active:
        outcome = Outcome(None if token is None else AuthorizationLost("Reconnect the calendar to resume syncing."))
        return State.NOT_CONNECTED if _finish(item, State.NOT_CONNECTED, outcome=outcome) else None
    if series.applies(source, item.obj, token):  # one recurring event per series (series.py)
        return series.sync_round(item, source.series(item.obj), reason, _run)
    operation = _operation(item)
    if operation.is_delete and not record.remote_may_exist and first:
        return State.SYNCED if _finish(item, State.SYNCED, operation) else None
    versioned = SyncRecord.objects.filter(pk=record.pk, version=record.version)
    if token.writes_paused:  # the provider's usage limit: no call until it resets
        return State.PENDING if record_paused(versioned, token.paused_until) else None
    reason = reason or _reason(operation)
    operation, send = _planned(item, token, operation, reason)
    if not send:  # already written as it should be, or a write its guests must not hear of
        return State.SYNCED if _finish(item, State.SYNCED, operation) else None
    _announce(record, operation)
    premarked = not operation.is_delete and not record.remote_may_exist
    if premarked:
        # Committed before the call: a create whose answer is lost still leaves the record saying an event may exist.
        SyncRecord.objects.filter(pk=record.pk).update(remote_may_exist=True)
    try:
        with tokens.counted(token) as call:
            outcome = _run(token, [operation], reason, log=False)[0]
    except AuthorizationLost as exc:  # logged by _run
        return State.NOT_CONNECTED if _finish(item, State.NOT_CONNECTED, outcome=Outcome(exc)) else None
    if premarked and not call.admitted:  # the quota held every request back: still nothing can exist
        SyncRecord.objects.filter(pk=record.pk).update(remote_may_exist=False)
    log = audit.entry_for(token, [operation], [outcome], reason)
    error = outcome.error
    if isinstance(error, UsageLimited):
        until = tokens.pause_writes(token, error)
        with transaction.atomic():
            log.save(force_insert=True)
            record_paused(versioned, until)
        return State.PENDING
    if isinstance(error, TransientError):
        with transaction.atomic():
            log.save(force_insert=True)
            record_transient(record, error, error.retry_after or get_setting("RETRY_BACKOFF"))
        raise error
    state = State.FAILED if error is not None else State.SYNCED
    if not _finish(item, state, operation, outcome, log):
        return None
    if meetings.recorded(item, operation, outcome) and reread is not None:
        reread.append(True)
    if token.paused_until is not None and error is None:
        tokens.resume_writes(token)  # the pause is over and writes go through again
    if error is not None:
        logger.warning("calendar sync failed for %s:%s → %s: %s", source.key, object_id, destination, error)
    return state


def _roles_at(source, obj, owner):
    return [role for role, (kind, pk) in source.destinations(obj).items() if Owner.of(kind, pk) == owner]


def backfill(owner, reason=AccessLog.Reason.BACKFILL, kind="backfill", progress=None):
    """Sync an owner's upcoming objects and anything left pending, in chunks, as bulk work (quotas).

    Run on connect, reconnect, resync and calendar change. Its progress (`kind`, or the calendar
    move's `progress` it is part of) is on the connection while it runs. Returns ({state: count},
    [Work to enqueue]).
    """
    token = _write_token(owner)
    if token is None:
        return {}, []
    with tracked(token, kind, progress) as shown:
        return _backfill(owner, token, reason, shown, rewrite=kind == "resync" or reason in REWRITE_REASONS)


def _backfill(owner, token, reason, shown, rewrite=False):
    upcoming: set[tuple[str, str, str]] = set()
    for source in get_sources().values():
        objects = list(source.get_queryset().filter(pk__in=source.upcoming(owner).values("pk")))
        pairs = {(str(obj.pk), role) for obj in objects for role in _roles_at(source, obj, owner)}
        upcoming.update((source.key, *pair) for pair in pairs)
        SyncRecord.objects.bulk_create(
            [SyncRecord(source=source.key, object_id=i, destination=role, **owner.lookup()) for i, role in pairs],
            ignore_conflicts=True,
        )
        for role in {role for _, role in pairs}:
            SyncRecord.objects.filter(
                source=source.key, destination=role, object_id__in=[i for i, r in pairs if r == role]
            ).exclude(state=State.PENDING).update(
                state=State.PENDING, version=F("version") + 1, updated_at=timezone.now()
            )
    records = list(SyncRecord.objects.filter(Q(**owner.lookup()) & ~Q(state=State.SYNCED)).order_by("created_at"))
    work = []  # (item, operation)
    deferred: list[Work] = []  # occurrences of series, each its own sync (series.py)
    unchanged = 0
    notifies = get_provider(token.provider).notifies_every_write
    for key, source in get_sources().items():
        mine = [r for r in records if r.source == key]
        objects = source.get_queryset().in_bulk([r.object_id for r in mine])
        for record in mine:
            item = _Item(source, record, token, objects.get(_pk(source, record.object_id)))
            if series.applies(source, item.obj, token):  # synced one by one: its series' event is shared
                deferred.append(Work(key, record.object_id, record.destination, reason=reason))
                continue
            operation = _operation(item)
            plan = invitations.plan(
                record.written,
                operation,
                exists=record.remote_may_exist,
                bulk=True,
                rewrite=rewrite,
                notifies_every_write=notifies,
            )
            if operation.is_delete and not record.remote_may_exist:
                _finish(item, State.SYNCED, operation)
            elif not plan.send:  # already there as it should be: no call
                unchanged += _finish(item, State.SYNCED, operation)
            elif operation.is_delete or (key, record.object_id, record.destination) in upcoming:
                work.append((item, operation))  # past events are not created after the fact
    if work and token.writes_paused:  # the provider's usage limit: nothing is sent, all of it waits
        record_paused(SyncRecord.objects.filter(pk__in=[item.record.pk for item, _ in work]), token.paused_until)
        return {State.PENDING: len(work)}, deferred
    SyncRecord.objects.filter(pk__in=[item.record.pk for item, operation in work if not operation.is_delete]).update(
        remote_may_exist=True
    )
    if not work:
        return ({str(State.SYNCED): unchanged} if unchanged else {}), deferred
    shown.add(len(work))
    counts: dict[str, int] = {str(State.SYNCED): unchanged} if unchanged else {}
    later: list[Work] = []
    lost, held, paused_until = None, None, None
    size = get_setting("BULK_CHUNK")
    for start in range(0, len(work), size):
        chunk = work[start : start + size]
        if paused_until is not None:  # the usage limit was met: the rest waits for the pause, unsent
            record_paused(SyncRecord.objects.filter(pk__in=[item.record.pk for item, _ in chunk]), paused_until)
            counts[State.PENDING] = counts.get(State.PENDING, 0) + len(chunk)  # type: ignore[index, call-overload]  # TextChoices member: a str at runtime (no django-stubs)
            shown.step(len(chunk))
            continue
        held = _hold([item.record.pk for item, _ in work[start:]], held)
        # Locked chunk by chunk: a member's sync of one of these objects waits for one call at most.
        keys = [locks.key(item.source.key, item.record.object_id, item.record.destination) for item, _ in chunk]
        taken = locks.try_acquire(keys)
        later += [
            Work(item.source.key, item.record.object_id, item.record.destination)
            for (item, _), ok in zip(chunk, taken, strict=True)
            if not ok
        ]  # being synced right now
        sent = [w for w, ok in zip(chunk, taken, strict=True) if ok]
        try:
            if lost is not None or not sent:
                results = [Outcome(lost)] * len(sent)
            else:
                results = _run(token, [operation for _, operation in sent], reason)
        except AuthorizationLost as exc:
            lost = exc  # the rest are not sent: they are not connected either
            results = [Outcome(exc)] * len(sent)
        finally:
            locks.release([k for k, ok in zip(keys, taken, strict=True) if ok])
        for (item, operation), outcome in zip(sent, results, strict=True):
            if isinstance(outcome.error, UsageLimited):
                paused_until = paused_until or tokens.pause_writes(token, outcome.error)
                record_paused(SyncRecord.objects.filter(pk=item.record.pk, version=item.record.version), paused_until)
                state = State.PENDING
            else:
                state = _record_outcome(item, operation, outcome, later, reason)
            counts[state] = counts.get(state, 0) + 1  # type: ignore[index, call-overload]  # TextChoices member: a str at runtime (no django-stubs)
        shown.step(len(chunk))
    logger.info("calendar backfill for %s: %s", owner, counts)
    return counts, later + deferred


def _hold(pks, held):
    """Keep the sweeper off the records a backfill has yet to send (its pending ones would look
    left behind after SWEEP_STALE_AFTER and go to the interactive queue): their `retry_at` is set
    STALE_AFTER ahead, renewed at half time. Sending one clears it; if the job dies the sweeper
    takes them once the hold ends. Returns until when they are held."""
    now = timezone.now()
    if held is not None and held - now > timedelta(seconds=STALE_AFTER / 2):
        return held
    held = now + timedelta(seconds=STALE_AFTER)
    SyncRecord.objects.filter(pk__in=pks, state=State.PENDING).update(retry_at=held)
    return held


def _record_outcome(item, operation, outcome, later, reason):
    """Write one backfilled operation's outcome; what must run again goes to `later`. Returns the state."""
    record, error = item.record, outcome.error
    if isinstance(error, TransientError):
        retry_in = error.retry_after or get_setting("RETRY_BACKOFF")
        record_transient(record, error, retry_in)
        later.append(Work(item.source.key, record.object_id, record.destination, retry_in, reason))
        return State.PENDING
    state = State.NOT_CONNECTED if isinstance(error, AuthorizationLost) else State.FAILED if error else State.SYNCED
    if not _finish(item, state, operation, outcome):
        later.append(Work(item.source.key, record.object_id, record.destination))  # changed meanwhile
    else:
        meetings.recorded(item, operation, outcome)
    return state


def move_events(token, calendar_id, reason=AccessLog.Reason.CALENDAR_CHANGE, progress=None):
    """Move every event we may have written for the token's owner from `calendar_id` to the token's
    calendar, where the provider `can_move` (Google's events.move): the events keep their ids, guests
    and answers, and nobody is told. Returns the pks of the records moved; the rest are for
    `remove_events` (deleted, then created again by the backfill)."""
    provider = get_provider(token.provider)
    if not provider.can_move:
        return set()
    records = list(
        SyncRecord.objects.filter(owner_kind=token.owner_kind, owner_id=token.owner_id, remote_may_exist=True)
    )
    if progress is not None and records:
        progress.add(len(records))
    moved: set = set()
    size = get_setting("BULK_CHUNK")
    for start in range(0, len(records), size):
        chunk = records[start : start + size]
        operations = [_known(r) for r in chunk]
        try:
            with tokens.counted(token, bulk=True):
                outcomes = provider.move(
                    tokens.access_token(token, reason=reason), calendar_id, token.calendar_id, operations
                )
        except (AuthorizationLost, TransientError) as exc:
            outcomes = [Outcome(exc)] * len(operations)
        audit.log_operations(token, operations, outcomes, reason)
        done = [r.pk for r, o in zip(chunk, outcomes, strict=True) if o.error is None]
        _moved_to(token, done)
        moved.update(done)
        if progress is not None:
            progress.step(len(chunk))
        if any(isinstance(o.error, AuthorizationLost) for o in outcomes):
            break  # the grant is gone: nothing more can be moved
    return moved


def _moved_to(token, pks):
    """The records `pks` name events now in the token's calendar (`written_in`)."""
    with transaction.atomic():
        for pk, written in SyncRecord.objects.select_for_update().filter(pk__in=pks).values_list("pk", "written"):
            SyncRecord.objects.filter(pk=pk).update(written={**(written or {}), WRITTEN_IN: written_in(token)})


def _known(record):
    """The operation naming a record's event as it exists (for a move or a delete)."""
    return Operation(
        key=get_source(record.source).event_id(record.object_id, record.destination),
        object_ref=f"{record.source}:{record.object_id}",
        remote_id=record.remote_id or None,
        known_to_exist=True,
    )


def remove_events(token, calendar_id, reason=AccessLog.Reason.CALENDAR_CHANGE, progress=None, keep=()):
    """Delete every event we may have written for the token's owner from `calendar_id` (best effort).

    Used when the owner picks another calendar or connects another provider, so nobody sees
    every booking twice. Sent in chunks, counted in `progress` when given (a calendar move's);
    the records in `keep` (moved already) are left alone. Never tells guests (bulk work).
    Returns how many could not be removed.
    """
    failed_series = series.remove(token, calendar_id, _run, reason)  # one event per series (series.py)
    records = list(
        SyncRecord.objects.filter(owner_kind=token.owner_kind, owner_id=token.owner_id, remote_may_exist=True).exclude(
            pk__in=list(keep)
        )
    )
    if not records:
        return failed_series
    if progress is not None:
        progress.add(len(records))
    failed, size, lost = 0, get_setting("BULK_CHUNK"), None
    for start in range(0, len(records), size):
        chunk = records[start : start + size]
        operations = [_known(r) for r in chunk]
        try:
            if lost is not None:
                raise lost  # the grant is gone: the rest cannot be removed either
            outcomes = _run(token, operations, reason, calendar_id=calendar_id)
        except (AuthorizationLost, TransientError) as exc:
            lost = exc if isinstance(exc, AuthorizationLost) else None
            outcomes = [Outcome(exc)] * len(operations)
        failed += sum(1 for o in outcomes if o.error is not None)
        SyncRecord.objects.filter(
            pk__in=[r.pk for r, o in zip(chunk, outcomes, strict=True) if o.error is None]
        ).update(remote_may_exist=False, remote_id="")
        if progress is not None:
            progress.step(len(chunk))
    if failed:
        logger.warning(
            "calendar move for %s:%s: %s event(s) could not be removed from the old calendar",
            token.owner_kind,
            token.owner_id,
            failed,
        )
    return failed + failed_series


def _write_token(owner):
    """The owner's active write connection, or None."""
    return CalendarToken.objects.filter(status=CalendarToken.Status.ACTIVE, write=True, **owner.lookup()).first()


def move_connection(owner, old_pk, old_calendar_id):
    """The owner's events go to another connection now: take them out of the old connection's
    calendar (while it is still connected and usable), then create them in the new one (backfill).

    The ids the old calendar gave them mean nothing in the new one: they are forgotten (on the
    records and in the objects' event id field), so the new calendar gets creates, not updates.
    """
    token = _write_token(owner)
    if token is None or str(token.pk) == str(old_pk):
        return {}, []
    old = CalendarToken.objects.filter(pk=old_pk, status=CalendarToken.Status.ACTIVE, **owner.lookup()).first()
    with tracked(token, "calendar_move") as shown:
        if old is not None:
            remove_events(old, old_calendar_id, progress=shown)
        records = SyncRecord.objects.filter(**owner.lookup())
        for key, source in get_sources().items():
            field = source.event_id_field
            ids = list(records.filter(source=key, destination=MEMBER_ROLE).values_list("object_id", flat=True))
            if field and ids:
                source.get_queryset().filter(pk__in=ids).update(**{field: source.stored_event_id(None)})
        records.update(remote_id="", remote_may_exist=False, updated_at=timezone.now())
        return backfill(owner, AccessLog.Reason.CALENDAR_CHANGE, progress=shown)


def move_calendar(owner, old_calendar_id):
    """The owner chose another calendar: move our events there where the provider can (nobody is
    told), take the rest out of the old one, then backfill the new — which writes only what is not
    there yet (one progress for all: the backfill's operations are added to the total once known)."""
    token = _write_token(owner)
    if token is None or token.calendar_id == old_calendar_id:
        return {}, []
    with tracked(token, "calendar_move") as shown:
        moved = move_events(token, old_calendar_id, progress=shown)
        remove_events(token, old_calendar_id, progress=shown, keep=moved)
        return backfill(owner, AccessLog.Reason.CALENDAR_CHANGE, progress=shown)


def _pk(source, object_id):
    return source.get_model()._meta.pk.to_python(object_id)
