"""Periodic work stays bounded however large the tables: the sweeper and access-log retention take
at most one batch per run, the next run takes the next batch, and scheduled pulls skip rooms read lately."""

import pytest
from django.utils import timezone

from calendar_sync import audit, reads, tasks
from calendar_sync.models import AccessLog, CalendarToken, SyncRecord

pytestmark = pytest.mark.django_db
AGO = timezone.timedelta
GRANT = {"access_token": "a", "refresh_token": "r"}


def settings_with(settings, **values):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **values}


@pytest.fixture
def left_behind(member, make_booking):
    """25 bookings of a member with no calendar, each with a sync record pending for an hour (oldest first)."""
    bookings = [make_booking(member, hours_from_now=24 + i) for i in range(25)]
    SyncRecord.objects.all().delete()  # whatever saving the bookings recorded: the test sets its own
    now = timezone.now()
    SyncRecord.objects.bulk_create(
        [SyncRecord(source="booking", object_id=str(b.pk), owner_id=str(member.pk)) for b in bookings]
    )
    for i, booking in enumerate(bookings):
        SyncRecord.objects.filter(object_id=str(booking.pk)).update(updated_at=now - AGO(hours=2, minutes=-i))
    return [str(b.pk) for b in bookings]


def pending_ids():
    return set(SyncRecord.objects.filter(state="pending").values_list("object_id", flat=True))


def test_the_sweeper_takes_one_batch_per_run_oldest_first(settings, left_behind):
    settings_with(settings, SWEEP_BATCH=10)
    assert tasks.sweep() == 10
    assert pending_ids() == set(left_behind[10:])  # the ten oldest ran (no calendar: not_connected)
    assert SyncRecord.objects.filter(state="not_connected").count() == 10
    assert tasks.sweep() == 10 and pending_ids() == set(left_behind[20:])
    assert tasks.sweep() == 5 and pending_ids() == set()
    assert tasks.sweep() == 0


def test_a_swept_record_waits_before_it_is_swept_again(settings, left_behind):
    """Marked when enqueued: while its task waits in a long queue the next run takes the next ones."""
    settings_with(settings, SWEEP_BATCH=10, SWEEP_STALE_AFTER=600)
    rows = tasks.left_behind(timezone.now(), 10)
    SyncRecord.objects.filter(pk__in=[r[0] for r in rows]).update(updated_at=timezone.now())  # as sweep marks them
    assert [r[3] for r in tasks.left_behind(timezone.now(), 10)] == left_behind[10:20]


def test_failed_records_due_for_retry_fill_what_the_batch_leaves(settings, left_behind):
    settings_with(settings, SWEEP_BATCH=10)
    SyncRecord.objects.filter(object_id__in=left_behind[:20]).update(state="failed", retry_at=timezone.now() - AGO(1))
    SyncRecord.objects.filter(object_id__in=left_behind[:2]).update(retry_at=timezone.now() + AGO(hours=1))
    rows = tasks.left_behind(timezone.now(), 10)
    assert [r[1] for r in rows] == ["pending"] * 5 + ["failed"] * 5
    assert {r[3] for r in rows} == set(left_behind[20:]) | set(left_behind[2:7])
    assert tasks.sweep() == 10
    failed = set(SyncRecord.objects.filter(state="failed").values_list("object_id", flat=True))
    assert failed == set(left_behind[:2]) | set(left_behind[7:20])  # the rest wait for the next run


def test_retention_deletes_one_batch_per_run_oldest_first(settings, member):
    settings_with(settings, ACCESS_LOG_PRUNE_BATCH=10, ACCESS_LOG_RETENTION_DAYS=30)
    now = timezone.now()
    AccessLog.objects.bulk_create(
        [
            AccessLog(user=member, provider="google", operation="refresh", reason="backfill", created_at=when)
            for when in [now - AGO(days=100 - i) for i in range(25)] + [now - AGO(days=1)] * 3
        ]
    )
    oldest = AccessLog.objects.order_by("created_at")
    ages = list(oldest.values_list("created_at", flat=True))
    assert audit.prune() == 10
    assert list(oldest.values_list("created_at", flat=True)) == ages[10:]
    assert audit.prune() == 10 and audit.prune() == 5 and audit.prune() == 0
    assert AccessLog.objects.count() == 3  # the recent ones stay
    settings_with(settings, ACCESS_LOG_PRUNE_BATCH=10, ACCESS_LOG_RETENTION_DAYS=0)
    assert tasks.sweep() == 0 and AccessLog.objects.count() == 0  # the sweeper prunes as it runs


def test_scheduled_pulls_skip_rooms_read_lately_and_take_members_write_calendars(settings, member):
    """A member's write calendar is pulled for what the member changes in our events; rooms read lately are not."""
    settings_with(settings, PULL_STALE_AFTER=240)
    now = timezone.now()
    rows = {
        "1": (None, "active"),  # never read
        "2": (now - AGO(minutes=10), "active"),  # read before the last tick
        "3": (now - AGO(minutes=1), "active"),  # read lately (a push notification): skipped
        "4": (None, "needs_reauth"),  # cannot be read
    }
    for owner_id, (pulled_at, status) in rows.items():
        CalendarToken.objects.create(
            owner_kind="workspace", owner_id=owner_id, provider="google", pulled_at=pulled_at, status=status, **GRANT
        )
    CalendarToken.objects.create(user=member, provider="google", **GRANT)
    due = sorted((o.kind, o.id) for o in reads.due_pulls())
    assert due == [("user", str(member.pk)), ("workspace", "1"), ("workspace", "2")]
