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

from . import audit, channels, flows, health, reads, sync
from .conf import get_setting
from .exceptions import TransientError
from .models import AccessLog, OAuthState, SyncRecord
from .owners import Owner

logger = logging.getLogger(__name__)
MEMBER_ROLE = sync.MEMBER_ROLE


class CalendarTask(Task):
    """Every task of the app. With CALENDAR_SYNC["SYNC_MODE"] = "inline" a call runs here and now, in the
    process that asked (the web request, after its commit), instead of going to a broker: for hosts
    without Celery workers. A transient failure then stays pending for the sweeper (no countdowns)."""

    def apply_async(self, args=None, kwargs=None, task_id=None, *rest, **options):
        if get_setting("SYNC_MODE") == "inline":
            return self.apply(args, kwargs, task_id=task_id)
        return super().apply_async(args, kwargs, task_id, *rest, **options)


def backoff(retries, retry_after=None):
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    base = min(get_setting("RETRY_BACKOFF_MAX"), get_setting("RETRY_BACKOFF") * 2**retries)
    return max(retry_after or 0, random.uniform(base / 2, base))


def quota_delay(retry_after):
    """When to try a sync the quota governor held back: once there is room, spread over a tenth more."""
    wait = max(retry_after or 0.0, 0.1)
    return wait + random.uniform(0, wait / 10)


def enqueue(source_key, object_id, destination=MEMBER_ROLE, countdown=None, reason=None):
    """Ask for a sync; if the broker is down the SyncRecord stays and the sweeper retries."""
    kwargs = {
        k: v
        for k, v in (("destination", destination), ("reason", reason))
        if v and (k, v) != ("destination", MEMBER_ROLE)
    }
    try:
        sync_task.apply_async((source_key, str(object_id)), kwargs or None, countdown=countdown)
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
    for item in work:
        enqueue(item.source, item.object_id, item.destination, countdown=item.countdown, reason=item.reason)


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
    """Enqueue what a flow returned, now. A broker failure is logged: sync records stay for the sweeper."""
    for item in work:
        if item.name == "sync":
            source_key, object_id, destination, reason = item.args
            enqueue(source_key, object_id, destination, reason=reason)
            continue
        try:
            TASKS[item.name].delay(*item.args)
        except Exception as exc:  # noqa: BLE001 - any broker failure
            logger.warning("calendar task %s%s not enqueued (%s)", item.name, item.args, type(exc).__name__)


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
        return sync.sync_object(source_key, object_id, destination, reason)
    except TransientError as exc:
        if self.request.is_eager:
            return SyncRecord.State.PENDING  # no background retries in eager mode: the sweeper has it
        if exc.code == "quota":  # nothing was sent: come back when the quota has room, not a failed attempt
            raise self.retry(countdown=quota_delay(exc.retry_after), max_retries=None) from None
        if self.request.retries >= get_setting("MAX_RETRIES"):
            sync.give_up(source_key, object_id, exc, destination)
            return SyncRecord.State.FAILED
        raise self.retry(countdown=backoff(self.request.retries, exc.retry_after)) from None


@shared_task(base=CalendarTask, name="calendar_sync.tasks.backfill", acks_late=True, reject_on_worker_lost=True)
def backfill_task(owner_kind, owner_id):
    counts, later = sync.backfill(Owner(owner_kind, str(owner_id)))
    enqueue_work(later)
    return counts


@shared_task(base=CalendarTask, name="calendar_sync.tasks.move_calendar", acks_late=True, reject_on_worker_lost=True)
def move_calendar_task(owner_kind, owner_id, old_calendar_id):
    counts, later = sync.move_calendar(Owner(owner_kind, str(owner_id)), old_calendar_id)
    enqueue_work(later)
    return counts


@shared_task(base=CalendarTask, name="calendar_sync.tasks.sweep")
def sweep():
    """Re-enqueue work left behind (broker down at commit, retries exhausted), bounded per run."""
    now = timezone.now()
    stale = now - timezone.timedelta(seconds=get_setting("SWEEP_STALE_AFTER"))
    due = Q(retry_at__isnull=True) | Q(retry_at__lte=now)
    left = (
        SyncRecord.objects.filter(
            (Q(state=SyncRecord.State.PENDING, updated_at__lt=stale) & due)
            | Q(state=SyncRecord.State.FAILED, retry_at__lte=now)
        )
        .order_by("updated_at")
        .values_list("source", "object_id", "destination")[: get_setting("SWEEP_BATCH")]
    )
    count = 0
    for source_key, object_id, destination in left:
        enqueue(source_key, object_id, destination)
        count += 1
    OAuthState.objects.filter(created_at__lt=now - timezone.timedelta(seconds=get_setting("STATE_MAX_AGE"))).delete()
    audit.prune()
    if count:
        logger.info("calendar sweep re-enqueued %s syncs", count)
    return count


@shared_task(base=CalendarTask, name="calendar_sync.tasks.pull", acks_late=True, reject_on_worker_lost=True)
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
    """Beat: one pull task per connected shared calendar."""
    owners = reads.shared_owners()
    for owner in owners:
        pull_task.delay(owner.kind, owner.id)
    return len(owners)


@shared_task(base=CalendarTask, name="calendar_sync.tasks.health")
def health_task(include_recent=False):
    """Beat: refresh idle connections; dead grants become needs_reauth and their owners are told once."""
    return health.check(include_recent)


@shared_task(base=CalendarTask, name="calendar_sync.tasks.renew_push")
def renew_push_task():
    """Beat: give every shared connection a live push channel, renewing those expiring within a day."""
    return channels.renew_all()


#: What `flows.Task` names: the task each one enqueues ("sync" goes through `enqueue`).
TASKS = {
    "backfill": backfill_task,
    "move_calendar": move_calendar_task,
    "pull": pull_task,
    "renew_push": renew_push_task,
}
