"""Thin Celery wrappers. Tasks take primary keys only: never instances, never tokens.

The core (`sync`, `flows`) returns what must be enqueued; enqueueing happens only in entry points, through here.
"""

import logging
import random
from functools import partial

from celery import Task, shared_task
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import audit, channels, flows, health, meetings, reads, sync
from .conf import get_setting
from .exceptions import TransientError
from .models import AccessLog, OAuthState, SyncRecord
from .owners import Owner

logger = logging.getLogger(__name__)
MEMBER_ROLE = sync.MEMBER_ROLE


def queue(bulk=False):
    """The Celery queue of interactive work (CALENDAR_SYNC["QUEUE"]) or of bulk work ("BULK_QUEUE"):
    two queues, so a member's booking never waits behind a backfill (workers consume both)."""
    return get_setting("BULK_QUEUE" if bulk else "QUEUE")


class CalendarTask(Task):
    """Every task of the app. With CALENDAR_SYNC["SYNC_MODE"] = "inline" a call runs here and now, in the
    process that asked (the web request, after its commit), instead of going to a broker: for hosts
    without Celery workers. A transient failure then stays pending for the sweeper (no countdowns).

    Routing is the app's own: each task goes to its queue (`bulk` tasks to the bulk queue) unless
    the caller names one (a sync enqueued by bulk work) or Celery does (a retry keeps its queue)."""

    bulk = False

    def apply_async(self, args=None, kwargs=None, task_id=None, *rest, **options):
        if get_setting("SYNC_MODE") == "inline":
            return self.apply(args, kwargs, task_id=task_id)
        if "queue" not in options and "routing_key" not in options:
            options["queue"] = queue(self.bulk)
        return super().apply_async(args, kwargs, task_id, *rest, **options)


def backoff(retries, retry_after=None):
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    base = min(get_setting("RETRY_BACKOFF_MAX"), get_setting("RETRY_BACKOFF") * 2**retries)
    return max(retry_after or 0, random.uniform(base / 2, base))


def quota_delay(retry_after):
    """When to try a sync the quota governor held back: once there is room, spread over a tenth more."""
    wait = max(retry_after or 0.0, 0.1)
    return wait + random.uniform(0, wait / 10)


def enqueue(source_key, object_id, destination=MEMBER_ROLE, countdown=None, reason=None, bulk=False):
    """Ask for a sync (on the bulk queue when bulk work asks); if the broker is down the SyncRecord
    stays and the sweeper retries."""
    kwargs = {
        k: v
        for k, v in (("destination", destination), ("reason", reason))
        if v and (k, v) != ("destination", MEMBER_ROLE)
    }
    try:
        sync_task.apply_async((source_key, str(object_id)), kwargs or None, countdown=countdown, queue=queue(bulk))
    except Exception as exc:  # noqa: BLE001 - any broker failure: the durable record covers it
        logger.warning(
            "calendar sync not enqueued for %s:%s → %s (%s); the sweeper will pick it up",
            source_key,
            object_id,
            destination,
            type(exc).__name__,
        )


def enqueue_all(source_key, object_id, destinations):
    for destination in destinations:
        enqueue(source_key, object_id, destination)


def enqueue_work(work):
    """What a bulk job (backfill, calendar move) left to do: on the bulk queue, as the job was."""
    for item in work:
        enqueue(item.source, item.object_id, item.destination, countdown=item.countdown, reason=item.reason, bulk=True)


def resync(records):
    """Mark SyncRecords pending again (new version) and enqueue them now. Returns how many."""
    work = flows.resync_records(records)
    send(work)
    return len(work)


def resync_objects(source_key, objects):
    """Resync these objects of one source in every destination now, creating records for any never synced."""
    work = flows.resync_objects(source_key, objects)
    send(work)
    return len(work)


def send(work):
    """Enqueue what a flow returned, now. A broker failure is logged: sync records stay for the sweeper.
    A resync of many objects is bulk work; of one, a person waiting for it."""
    bulk = sum(item.name == "sync" for item in work) > 1
    for item in work:
        if item.name == "sync":
            source_key, object_id, destination, reason = item.args
            enqueue(source_key, object_id, destination, reason=reason, bulk=bulk)
            continue
        try:
            TASKS[item.name].delay(*item.args)
        except Exception as exc:  # noqa: BLE001 - any broker failure
            logger.warning("calendar task %s%s not enqueued (%s)", item.name, item.args, type(exc).__name__)


def run_here(work):
    """Run what a flow returned in this process, now, as SYNC_MODE "inline" does (a command that
    waits for its work); what that work leaves for later is enqueued as usual."""
    for item in work:
        if item.name == "sync":
            source_key, object_id, destination, reason = item.args
            sync_task.apply((source_key, object_id), {"destination": destination, "reason": reason})
        else:
            TASKS[item.name].apply(item.args)


def schedule(work):
    """Enqueue what a flow returned once the current transaction commits (at once outside one)."""
    work = list(work)
    if work:
        transaction.on_commit(partial(send, work))


@shared_task(
    base=CalendarTask,
    name="calendar_sync.tasks.sync",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def sync_task(self, source_key, object_id, destination=MEMBER_ROLE, reason=None):
    try:
        reread: list[bool] = []
        state = sync.sync_object(source_key, object_id, destination, reason, reread)
        if reread:  # the write left a meeting being made (Google makes Meet asynchronously): read it shortly
            enqueue_conference(source_key, object_id, destination, 0, meetings.REREAD_DELAYS[0])
        return state
    except TransientError as exc:
        if self.request.is_eager:
            return SyncRecord.State.PENDING  # no background retries in eager mode: the sweeper has it
        if exc.code == "quota":  # nothing was sent: come back when the quota has room, not a failed attempt
            raise self.retry(countdown=quota_delay(exc.retry_after), max_retries=None) from None
        if self.request.retries >= get_setting("MAX_RETRIES"):
            sync.give_up(source_key, object_id, exc, destination)
            return SyncRecord.State.FAILED
        raise self.retry(countdown=backoff(self.request.retries, exc.retry_after)) from None


@shared_task(
    base=CalendarTask, name="calendar_sync.tasks.backfill", acks_late=True, reject_on_worker_lost=True, bulk=True
)
def backfill_task(owner_kind, owner_id, kind="backfill"):
    """`kind`: what the status shows it as ("backfill" on connect, "resync")."""
    counts, later = sync.backfill(Owner(owner_kind, str(owner_id)), kind=kind)
    enqueue_work(later)
    follow_conferences(Owner(owner_kind, str(owner_id)))
    return counts


def follow_conferences(owner):
    """Every pending meeting of an owner's records (after a bulk write): read each again shortly."""
    for source_key, object_id, destination in meetings.pending(owner.lookup()):
        enqueue_conference(source_key, object_id, destination, 0, meetings.REREAD_DELAYS[0])


def enqueue_conference(source_key, object_id, destination, attempt, countdown):
    """Read a pending meeting again after `countdown` seconds. Without a broker (SYNC_MODE "inline")
    nothing can wait: the sweeper reads it again instead (`countdown` None: now)."""
    if countdown and get_setting("SYNC_MODE") == "inline":
        return
    try:
        conference_task.apply_async((source_key, str(object_id), destination, attempt), countdown=countdown)
    except Exception as exc:  # noqa: BLE001 - any broker failure: the next sync of the object reads it again
        logger.warning("calendar meeting read not enqueued for %s:%s (%s)", source_key, object_id, type(exc).__name__)


@shared_task(base=CalendarTask, name="calendar_sync.tasks.conference", acks_late=True, reject_on_worker_lost=True)
def conference_task(source_key, object_id, destination=MEMBER_ROLE, attempt=0):
    """Read a meeting still being made; again later while it stays pending (a bounded number of times)."""
    countdown = meetings.reread(source_key, str(object_id), destination, int(attempt))
    if countdown is not None:
        enqueue_conference(source_key, object_id, destination, int(attempt) + 1, countdown)
    return countdown


@shared_task(
    base=CalendarTask, name="calendar_sync.tasks.move_calendar", acks_late=True, reject_on_worker_lost=True, bulk=True
)
def move_calendar_task(owner_kind, owner_id, old_calendar_id):
    counts, later = sync.move_calendar(Owner(owner_kind, str(owner_id)), old_calendar_id)
    enqueue_work(later)
    follow_conferences(Owner(owner_kind, str(owner_id)))
    return counts


def left_behind(now, limit):
    """Up to `limit` records due again, as (pk, state, source, object_id, destination): pending past
    SWEEP_STALE_AFTER and not waiting for a retry, oldest first; then failed ones whose retry time came.
    Two index range scans (state, updated_at) and (state, retry_at): cheap when nothing is due."""
    stale = now - timezone.timedelta(seconds=get_setting("SWEEP_STALE_AFTER"))
    fields = ("pk", "state", "source", "object_id", "destination")
    pending = SyncRecord.objects.filter(state=SyncRecord.State.PENDING, updated_at__lt=stale).filter(
        Q(retry_at__isnull=True) | Q(retry_at__lte=now)
    )
    rows = list(pending.order_by("updated_at").values_list(*fields)[:limit])
    if len(rows) < limit:
        failed = SyncRecord.objects.filter(state=SyncRecord.State.FAILED, retry_at__lte=now).order_by("retry_at")
        rows += failed.values_list(*fields)[: limit - len(rows)]
    return rows


@shared_task(base=CalendarTask, name="calendar_sync.tasks.move_connection", acks_late=True, reject_on_worker_lost=True)
def move_connection_task(owner_kind, owner_id, old_pk, old_calendar_id):
    counts, later = sync.move_connection(Owner(owner_kind, str(owner_id)), old_pk, old_calendar_id)
    enqueue_work(later)
    follow_conferences(Owner(owner_kind, str(owner_id)))
    return counts


@shared_task(base=CalendarTask, name="calendar_sync.tasks.sweep")
def sweep():
    """Re-enqueue work left behind (broker down at commit, retries exhausted), at most SWEEP_BATCH per run.

    Each is first marked as seen (pending: updated now; failed: retry in SWEEP_STALE_AFTER), so the next run
    takes the next ones instead of the same batch again; the sync itself then updates its record.
    Also reads again video meetings still being made whose read was lost (`meetings.stale_pending`),
    deletes expired OAuth states and a bounded batch of old access-log rows."""
    now = timezone.now()
    rows = left_behind(now, get_setting("SWEEP_BATCH"))
    for state, changes in (
        (SyncRecord.State.PENDING, {"updated_at": now}),
        (SyncRecord.State.FAILED, {"retry_at": now + timezone.timedelta(seconds=get_setting("SWEEP_STALE_AFTER"))}),
    ):
        pks = [row[0] for row in rows if row[1] == state]
        if pks:
            SyncRecord.objects.filter(pk__in=pks, state=state).update(**changes)
    for _pk, _state, source_key, object_id, destination in rows:
        enqueue(source_key, object_id, destination)
    # Meetings still being made whose read again was lost (or never queued: no broker).
    last = len(meetings.REREAD_DELAYS) - 1
    for source_key, object_id, destination, over in meetings.stale_pending(
        now, get_setting("SWEEP_STALE_AFTER"), get_setting("SWEEP_BATCH")
    ):
        enqueue_conference(source_key, object_id, destination, last if over else 0, None)
    OAuthState.objects.filter(created_at__lt=now - timezone.timedelta(seconds=get_setting("STATE_MAX_AGE"))).delete()
    audit.prune()
    if rows:
        logger.info("calendar sweep re-enqueued %s syncs", len(rows))
    return len(rows)


@shared_task(base=CalendarTask, name="calendar_sync.tasks.pull", acks_late=True, reject_on_worker_lost=True, bulk=True)
def pull_task(owner_kind, owner_id, reason=AccessLog.Reason.SCHEDULE):
    """Read one shared calendar's changes into busy blocks."""
    try:
        return reads.pull(Owner(owner_kind, str(owner_id)), reason)
    except Exception as exc:  # noqa: BLE001 - the next pull tries again; the error is logged and audited
        logger.warning(
            "calendar pull of %s:%s failed: %s", owner_kind, owner_id, getattr(exc, "code", type(exc).__name__)
        )
        return None


@shared_task(base=CalendarTask, name="calendar_sync.tasks.pull_all")
def pull_all():
    """Beat: one pull task per connected shared calendar not read lately (see `reads.due_pulls`)."""
    count = 0
    for owner in reads.due_pulls():
        pull_task.delay(owner.kind, owner.id)
        count += 1
    return count


@shared_task(base=CalendarTask, name="calendar_sync.tasks.health", bulk=True)
def health_task(include_recent=False):
    """Beat: refresh idle connections; dead grants become needs_reauth and their owners are told once."""
    return health.check(include_recent)


@shared_task(base=CalendarTask, name="calendar_sync.tasks.renew_push", bulk=True)
def renew_push_task():
    """Beat: give every shared connection a live push channel, renewing those expiring within a day.
    Returns how many channels were made or renewed."""
    return channels.renew_all()


#: What `flows.Task` names: the task each one enqueues ("sync" goes through `enqueue`).
TASKS = {
    "backfill": backfill_task,
    "move_calendar": move_calendar_task,
    "move_connection": move_connection_task,
    "pull": pull_task,
    "renew_push": renew_push_task,
}
