"""The level-triggered core: make the remote calendar match the object as it is *now*.

Plain functions, no Celery. Every trigger (save, retry, sweep, reconnect, resync) asks for
the same work, so duplicate, late or reordered deliveries converge on the right result.
"""
import hashlib
import logging
import time
from collections import deque
from contextlib import contextmanager
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import audit, oauth
from .conf import get_setting
from .exceptions import AuthorizationLost, TransientError
from .models import AccessLog, CalendarToken, SyncRecord
from .providers import get_provider
from .providers.base import Operation, Outcome
from .sources import get_source, get_sources

logger = logging.getLogger(__name__)
State = SyncRecord.State
MAX_ROUNDS = 5  # re-reads when the object changes while a sync is under way


def mark_changed(source, obj):
    """Record (in the caller's transaction) that `obj`'s event must be brought up to date.

    Returns False when there is nothing to do: no record yet and no event wanted.
    """
    object_id, owner_id = str(obj.pk), source.owner_id(obj)
    changes = {"version": F("version") + 1, "state": State.PENDING, "user_id": owner_id, "attempts": 0,
               "retry_at": None, "last_error": "", "updated_at": timezone.now()}
    if SyncRecord.objects.filter(source=source.key, object_id=object_id).update(**changes):
        return True
    if not source.should_exist(obj):
        return False  # never had an event and needs none
    try:
        with transaction.atomic():
            SyncRecord.objects.create(source=source.key, object_id=object_id, user_id=owner_id)
    except IntegrityError:  # created concurrently: bump it instead
        SyncRecord.objects.filter(source=source.key, object_id=object_id).update(**changes)
    return True


class RateLimiter:
    """Sliding-window limit on requests sent for one member (Google counts batch parts too).

    A request counts from the moment its response is back, so however long the provider
    takes to process a batch, no window of its clock sees more than `limit` requests.
    """

    def __init__(self, limit=None, window=None):
        self.limit = limit or get_setting("RATE_LIMIT_PER_MINUTE")
        self.window = window or get_setting("RATE_LIMIT_WINDOW")
        self.sent = deque()

    @contextmanager
    def slot(self, n):
        n = min(n, self.limit)
        while True:
            now = time.monotonic()
            while self.sent and now - self.sent[0] >= self.window:
                self.sent.popleft()
            if len(self.sent) + n <= self.limit:
                break
            time.sleep(self.window - (now - self.sent[len(self.sent) + n - self.limit - 1]) + 0.001)
        try:
            yield
        finally:
            self.sent.extend([time.monotonic()] * n)


def _run(token, operations, reason, limiter=None, calendar_id=None):
    """Apply operations with a fresh access token; one forced refresh on a 401. Raises AuthorizationLost.

    Returns one Outcome per operation and leaves one access-log row per operation (one bulk insert).
    """
    provider = get_provider(token.provider)
    calendar_id = calendar_id or token.calendar_id
    try:
        results = provider.apply(oauth.access_token(token, reason=reason), calendar_id, operations, limiter)
        retry = [i for i, r in enumerate(results) if isinstance(r.error, AuthorizationLost)]
        if retry:
            access = oauth.access_token(token, force=True, reason=reason)
            for i, r in zip(retry, provider.apply(access, calendar_id, [operations[i] for i in retry], limiter)):
                if isinstance(r.error, AuthorizationLost):
                    oauth.mark_needs_reauth(token, r.error)
                    results[i] = r
                    raise r.error
                results[i] = r
    except AuthorizationLost as exc:
        audit.log_operations(token, operations, [Outcome(exc)] * len(operations), reason)
        raise
    audit.log_operations(token, operations, results, reason)
    return results


def _operation(source, record, obj):
    """What the provider must do for this object now. Patch first when an event may already exist."""
    object_id = record.object_id
    wanted = obj is not None and source.should_exist(obj)
    remote_id = record.remote_id or (obj is not None and source.event_id_field and getattr(obj, source.event_id_field)) or None
    return Operation(
        key=source.event_id(object_id),
        event=source.event(obj) if wanted else None,
        object_ref=f"{source.key}:{object_id}",
        remote_id=remote_id,
        known_to_exist=record.remote_may_exist or bool(remote_id),
    )


def _reason(operation, record):
    """Why this write happens, for the access log: derived from what the write does."""
    if operation.is_delete:
        return AccessLog.Reason.CANCELLED
    return AccessLog.Reason.RESCHEDULED if operation.known_to_exist else AccessLog.Reason.CONFIRMED


def _finish(record, version, state, error=None, source=None, obj=None, operation=None, remote_id=None):
    """Write the outcome if nobody changed the object meanwhile (compare-and-set on version)."""
    now = timezone.now()
    with transaction.atomic():
        if obj is not None:  # lock in the order saves do (object, then record): no deadlock
            list(type(obj)._default_manager.select_for_update().filter(pk=obj.pk).values_list("pk"))
        locked = SyncRecord.objects.select_for_update().filter(pk=record.pk).first()
        if locked is None or locked.version != version:
            return False
        if state == State.SYNCED and obj is None:
            locked.delete()  # the object itself is gone and so is its event
            return True
        event_id = None if operation is None or operation.is_delete else remote_id or operation.remote_id
        if state == State.SYNCED and source.event_id_field:
            if getattr(obj, source.event_id_field) != event_id:
                type(obj)._default_manager.filter(pk=obj.pk).update(**{source.event_id_field: event_id})
        locked.state = state
        locked.last_error = "" if error is None else str(error)[:2000]
        if state == State.SYNCED:
            locked.synced_version, locked.synced_at, locked.attempts = version, now, 0
            locked.remote_may_exist = not operation.is_delete
            locked.remote_id = event_id or ""
        locked.retry_at = None
        locked.save()
    return True


def record_transient(record, error, retry_in):
    """Remember a transient failure; the record stays pending until `retry_in` seconds pass."""
    SyncRecord.objects.filter(pk=record.pk, version=record.version).update(
        attempts=F("attempts") + 1,
        last_error=str(error)[:2000],
        retry_at=timezone.now() + timedelta(seconds=retry_in),
        updated_at=timezone.now(),
    )


def give_up(source_key, object_id, error):
    """Retries are exhausted: mark failed; the sweeper tries again later if it was transient."""
    later = timezone.now() + timedelta(seconds=get_setting("RETRY_BACKOFF_MAX"))
    SyncRecord.objects.filter(source=source_key, object_id=str(object_id), state=State.PENDING).update(
        state=State.FAILED, last_error=str(error)[:2000], retry_at=later, updated_at=timezone.now()
    )


def fail_unexpected(source_key, object_id, exc):
    """An error nothing classified: end the work as failed, visible, on a bounded retry schedule.

    Retried by the sweeper after RETRY_BACKOFF * 2**attempts seconds (capped), MAX_RETRIES
    times; then it stays failed until someone resyncs it.
    """
    logger.exception("calendar sync of %s:%s met an unexpected error", source_key, object_id)
    record = SyncRecord.objects.filter(source=source_key, object_id=str(object_id)).first()
    if record is None:
        return
    attempts = record.attempts + 1
    delay = min(get_setting("RETRY_BACKOFF_MAX"), get_setting("RETRY_BACKOFF") * 2**attempts)
    retry_at = timezone.now() + timedelta(seconds=delay) if attempts < get_setting("MAX_RETRIES") else None
    SyncRecord.objects.filter(pk=record.pk, version=record.version).update(
        state=State.FAILED, attempts=attempts, retry_at=retry_at,
        last_error=f"Unexpected error: {type(exc).__name__}: {exc}"[:2000], updated_at=timezone.now(),
    )


def _lock_key(source_key, object_id):
    digest = hashlib.blake2b(f"calendar_sync:{source_key}:{object_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _advisory(function, keys):
    """Call a PostgreSQL advisory-lock function per key; other databases go without (all True)."""
    if connection.vendor != "postgresql" or not keys:
        return [True] * len(keys)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i", [keys])
        return [row[0] is not False for row in cursor.fetchall()]


@contextmanager
def _exclusive(source_key, object_id):
    """Serialize syncs of one object across workers (a PostgreSQL session advisory lock).

    Without it a stale task's write could land after a newer task's, and a crash right then
    would leave the calendar wrong while the record says synced. The lock dies with the
    connection, so a killed worker never leaves it held. Other databases run without it.
    """
    keys = [_lock_key(source_key, object_id)]
    _advisory("pg_advisory_lock", keys)
    try:
        yield
    finally:
        _advisory("pg_advisory_unlock", keys)


def sync_object(source_key, object_id, reason=None):
    """Bring one object's event up to date. Returns the record state.

    Raises TransientError for the caller to retry later; every other outcome is recorded,
    including errors nothing classified (as failed, with the error).
    """
    source = get_source(source_key)
    object_id = str(object_id)
    with _exclusive(source_key, object_id):
        try:
            for round_ in range(MAX_ROUNDS):
                state = _sync_round(source, object_id, first=round_ == 0, reason=reason)
                if state is not None:
                    return state
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, never left pending
            fail_unexpected(source_key, object_id, exc)
            return State.FAILED
    # Changed on every round: leave it pending; the task the last change enqueued converges.
    return State.PENDING


def _sync_round(source, object_id, first, reason=None):
    """One read-apply-compare round; None when the object changed meanwhile (go again)."""
    record = SyncRecord.objects.filter(source=source.key, object_id=object_id).first()
    if record is None:
        return State.SYNCED  # nothing was ever asked, or the object and its event are gone
    if first and record.state == State.SYNCED and record.synced_version == record.version:
        return State.SYNCED
    version = record.version
    obj = source.get_queryset().filter(pk=object_id).first()
    owner_id = source.owner_id(obj) if obj is not None else record.user_id
    token = CalendarToken.objects.filter(user_id=owner_id).first()
    if token is None or not token.is_active:
        error = None if token is None else "Reconnect your calendar to resume syncing."
        return State.NOT_CONNECTED if _finish(record, version, State.NOT_CONNECTED, error) else None
    operation = _operation(source, record, obj)
    if operation.is_delete and not record.remote_may_exist and first:
        return State.SYNCED if _finish(record, version, State.SYNCED, None, source, obj, operation) else None
    if not operation.is_delete and not record.remote_may_exist:
        SyncRecord.objects.filter(pk=record.pk).update(remote_may_exist=True)
    try:
        outcome = _run(token, [operation], reason or _reason(operation, record))[0]
    except AuthorizationLost as exc:
        return State.NOT_CONNECTED if _finish(record, version, State.NOT_CONNECTED, exc) else None
    error = outcome.error
    if isinstance(error, TransientError):
        record_transient(record, error, error.retry_after or get_setting("RETRY_BACKOFF"))
        raise error
    state = State.FAILED if error is not None else State.SYNCED
    if not _finish(record, version, state, error, source, obj, operation, outcome.remote_id):
        return None
    if error is not None:
        logger.warning("calendar sync failed for %s:%s: %s", source.key, object_id, error)
    return state


def backfill_user(user_id, reason=AccessLog.Reason.BACKFILL):
    """Sync a member's upcoming objects and anything left pending, in batches within the rate limit.

    Run on connect and reconnect. Returns {state: count}.
    """
    token = CalendarToken.objects.filter(user_id=user_id, status=CalendarToken.Status.ACTIVE).first()
    if token is None:
        return {}
    upcoming = {}
    for source in get_sources().values():
        ids = upcoming[source.key] = {str(pk) for pk in source.upcoming(user_id).values_list("pk", flat=True)}
        SyncRecord.objects.bulk_create(
            [SyncRecord(source=source.key, object_id=i, user_id=user_id) for i in ids], ignore_conflicts=True
        )
        SyncRecord.objects.filter(source=source.key, object_id__in=ids).exclude(state=State.PENDING).update(
            state=State.PENDING, version=F("version") + 1, updated_at=timezone.now()
        )
    records = list(SyncRecord.objects.filter(Q(user_id=user_id) & ~Q(state=State.SYNCED)).order_by("created_at"))
    work = []
    for key, source in get_sources().items():
        mine = [r for r in records if r.source == key]
        objects = source.get_queryset().in_bulk([r.object_id for r in mine])
        for record in mine:
            obj = objects.get(_pk(source, record.object_id))
            operation = _operation(source, record, obj)
            if operation.is_delete and not record.remote_may_exist:
                _finish(record, record.version, State.SYNCED, None, source, obj, operation)
            elif operation.is_delete or record.object_id in upcoming[key]:
                work.append((record, source, obj, operation))  # past events are not created after the fact
    SyncRecord.objects.filter(pk__in=[w[0].pk for w in work if not w[3].is_delete]).update(remote_may_exist=True)
    if not work:
        return {}
    from .tasks import enqueue  # late: tasks imports this module

    keys = [_lock_key(w[1].key, w[0].object_id) for w in work]
    locked = _advisory("pg_try_advisory_lock", keys)
    for (record, source, _, _), ok in zip(work, locked):
        if not ok:  # a sync of it is running right now: let it finish, then sync it on its own
            enqueue(source.key, record.object_id)
    work = [w for w, ok in zip(work, locked) if ok]
    counts = {}
    try:
        results = _run(token, [w[3] for w in work], reason, RateLimiter())
    except AuthorizationLost as exc:
        results = [Outcome(exc)] * len(work)
    finally:
        _advisory("pg_advisory_unlock", [k for k, ok in zip(keys, locked) if ok])
    for (record, source, obj, operation), outcome in zip(work, results):
        error = outcome.error
        if isinstance(error, TransientError):
            record_transient(record, error, error.retry_after or get_setting("RETRY_BACKOFF"))
            enqueue(source.key, record.object_id, countdown=error.retry_after or get_setting("RETRY_BACKOFF"))
            state = State.PENDING
        else:
            state = State.NOT_CONNECTED if isinstance(error, AuthorizationLost) else State.FAILED if error else State.SYNCED
            if not _finish(record, record.version, state, error, source, obj, operation, outcome.remote_id):
                enqueue(source.key, record.object_id)  # changed meanwhile: sync it on its own
        counts[state] = counts.get(state, 0) + 1
    logger.info("calendar backfill for user=%s: %s", user_id, counts)
    return counts


def remove_events(token, calendar_id, reason=AccessLog.Reason.CALENDAR_CHANGE):
    """Delete every event we may have written for the token's owner from `calendar_id` (best effort).

    Used when the member picks another calendar or connects another provider, so they never
    see every booking twice. Returns how many could not be removed.
    """
    records = list(SyncRecord.objects.filter(user_id=token.user_id, remote_may_exist=True))
    operations = [
        Operation(key=get_source(r.source).event_id(r.object_id), object_ref=f"{r.source}:{r.object_id}", remote_id=r.remote_id or None, known_to_exist=True)
        for r in records
    ]
    if not operations:
        return 0
    try:
        outcomes = _run(token, operations, reason, RateLimiter(), calendar_id=calendar_id)
    except (AuthorizationLost, TransientError) as exc:
        outcomes = [Outcome(exc)] * len(operations)
    failed = sum(1 for o in outcomes if o.error is not None)
    if failed:
        logger.warning("calendar move for user=%s: %s event(s) could not be removed from the old calendar", token.user_id, failed)
    SyncRecord.objects.filter(pk__in=[r.pk for r, o in zip(records, outcomes) if o.error is None]).update(remote_may_exist=False, remote_id="")
    return failed


def move_calendar(user_id, old_calendar_id):
    """The member chose another calendar: take our events out of the old one, then backfill the new."""
    token = CalendarToken.objects.filter(user_id=user_id, status=CalendarToken.Status.ACTIVE).first()
    if token is None or token.calendar_id == old_calendar_id:
        return {}
    remove_events(token, old_calendar_id)
    return backfill_user(user_id, AccessLog.Reason.CALENDAR_CHANGE)


def _pk(source, object_id):
    return source.get_model()._meta.pk.to_python(object_id)
