"""Outlook on the real stack: a Celery worker, PostgreSQL, the broker and the fake Microsoft.

What the Google battery proves, for Graph: three calls for a lifecycle, one event per booking
whatever is lost, repeated, raced, throttled or killed, and a revoked grant that waits quietly.
"""

import time

import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import tasks
from calendar_sync.models import CalendarToken, SyncRecord
from tests.helpers import MS_ACCOUNT, connect, landing, settled
from tests.stack import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def keys(fake):
    """Our key of every event in the member's default calendar (one per booking, or a duplicate shows)."""
    return [e["singleValueExtendedProperties"][0]["value"] for e in fake.events(MS_ACCOUNT).values()]


def confirmed_keys(bookings):
    from calendar_sync.sources import get_source

    source = get_source("booking")
    return sorted(
        source.event_id(b.pk) for b in Booking.objects.filter(pk__in=[b.pk for b in bookings], status="confirmed")
    )


def test_lifecycle_costs_three_graph_calls(outlook_member_on_worker, fake_microsoft, member, make_booking):
    booking = make_booking(member)
    outlook_member_on_worker.post(f"/api/bookings/{booking.pk}/confirm/")
    wait_until(lambda: settled([booking]) and len(fake_microsoft.events(MS_ACCOUNT)) == 1, what="the event")
    later = booking.start + timezone.timedelta(days=1)
    outlook_member_on_worker.patch(
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()},
        format="json",
    )
    wait_until(lambda: settled([booking]), what="the move")
    outlook_member_on_worker.post(f"/api/bookings/{booking.pk}/cancel/")
    wait_until(lambda: settled([booking]) and fake_microsoft.events(MS_ACCOUNT) == {}, what="the removal")
    assert [c["method"] for c in fake_microsoft.calls()] == ["POST", "PATCH", "DELETE"]
    for _ in range(5):
        tasks.enqueue("booking", booking.pk)
    time.sleep(1.5)
    assert len(fake_microsoft.calls()) == 3


def test_lost_response_duplicates_and_races_give_one_event_each(
    outlook_member_on_worker, fake_microsoft, member, make_booking
):
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(5)]
    fake_microsoft.lose_response(times=2)
    for b in bookings:
        outlook_member_on_worker.post(f"/api/bookings/{b.pk}/confirm/")
        for _ in range(3):
            tasks.enqueue("booking", b.pk)
    outlook_member_on_worker.post(f"/api/bookings/{bookings[0].pk}/cancel/")
    for _ in range(3):
        tasks.enqueue("booking", bookings[0].pk)
    wait_until(
        lambda: settled(bookings) and sorted(keys(fake_microsoft)) == confirmed_keys(bookings),
        timeout=60,
        what="convergence",
    )
    assert len(keys(fake_microsoft)) == len(set(keys(fake_microsoft))) == 4


def test_worker_killed_mid_create(outlook_member_on_worker, stack, fake_microsoft, member, make_booking):
    fake_microsoft.latency = 1.5
    booking = make_booking(member)
    outlook_member_on_worker.post(f"/api/bookings/{booking.pk}/confirm/")
    wait_until(
        lambda: any(r["path"].startswith("/v1.0/") for r in fake_microsoft.http_requests), what="the task to call Graph"
    )
    stack.kill()
    fake_microsoft.latency = 0
    stack.start()
    tasks.sweep()
    wait_until(lambda: settled([booking]), timeout=40, what="the killed task to be redone")
    assert keys(fake_microsoft) == confirmed_keys([booking])


def test_throttling_bursts_honour_retry_after(outlook_member_on_worker, fake_microsoft, member, make_booking):
    fake_microsoft.inject(503, times=2, retry_after=1)
    fake_microsoft.inject(429, times=2, retry_after=2)
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(3)]
    for b in bookings:
        outlook_member_on_worker.post(f"/api/bookings/{b.pk}/confirm/")
    wait_until(lambda: settled(bookings), timeout=60, what="eventual success")
    assert sorted(keys(fake_microsoft)) == confirmed_keys(bookings)
    calls = fake_microsoft.calls()
    first_fault = min(c["time"] for c in calls if c["status"] in (429, 503))
    for key in confirmed_keys(bookings):  # every booking met a fault first: none was retried sooner than Retry-After
        mine = [c for c in calls if c.get("transactionId") == key or key in str(c.get("query", {}).get("$filter", ""))]
        assert mine and min(c["time"] for c in mine) - first_fault >= 0.95


def test_revoked_grant_waits_then_replays_after_reconnect(
    outlook_member_on_worker, fake_microsoft, member, make_booking
):
    fake_microsoft.revoke_grants(MS_ACCOUNT)
    CalendarToken.objects.update(expires_at=timezone.now())
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(3)]
    for b in bookings:
        outlook_member_on_worker.post(f"/api/bookings/{b.pk}/confirm/")
    wait_until(
        lambda: (
            CalendarToken.objects.get().status == "needs_reauth"
            and SyncRecord.objects.filter(state="not_connected").count() == 3
        ),
        what="needs_reauth",
    )
    time.sleep(1)
    assert len([r for r in fake_microsoft.http_requests if r["path"].endswith("/token")]) == 1  # no retry storm
    assert landing(connect(outlook_member_on_worker, fake_microsoft))["calendar_sync"] == "connected"
    wait_until(lambda: settled(bookings), timeout=30, what="the replay")
    assert sorted(keys(fake_microsoft)) == confirmed_keys(bookings)
