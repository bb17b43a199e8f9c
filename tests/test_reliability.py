"""The sync's guarantees on the real stack, one at a time and measured exactly (calls, messages, refreshes).

Mixed workloads under faults — bursts, expiry, revocation, a killed worker, the broker cut —
are in test_faults.py, judged by comparing the whole calendar with the bookings.
"""

import time

import pytest
from django.utils import timezone

from calendar_sync import tasks
from calendar_sync.models import CalendarToken, SyncRecord
from managehub.celery import app as celery_app
from tests.helpers import client_for, connect, landing, settled
from tests.stack import ACCOUNT, event_id, matches, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_lifecycle_through_a_real_worker(member_on_worker, fake_google, member, make_booking):
    booking = make_booking(member)
    member_on_worker.post(f"/api/bookings/{booking.pk}/confirm/")
    wait_until(lambda: event_id(booking) in fake_google.events(ACCOUNT) and settled([booking]), what="the event")
    later = booking.start + timezone.timedelta(days=1)
    member_on_worker.patch(
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()},
        format="json",
    )
    wait_until(
        lambda: (
            fake_google.events(ACCOUNT)[event_id(booking)]["start"]["dateTime"].startswith(
                later.astimezone(timezone.get_default_timezone()).date().isoformat()
            )
            and settled([booking])
        ),
        what="the move",
    )
    assert timezone.datetime.fromisoformat(fake_google.events(ACCOUNT)[event_id(booking)]["start"]["dateTime"]) == later
    member_on_worker.post(f"/api/bookings/{booking.pk}/cancel/")
    wait_until(lambda: fake_google.events(ACCOUNT) == {} and settled([booking]), what="the removal")
    assert [c["method"] for c in fake_google.calls()] == ["POST", "PATCH", "DELETE"]
    # the same task delivered again, many times, changes nothing
    for _ in range(5):
        tasks.enqueue("booking", booking.pk)
    time.sleep(1.5)
    assert len(fake_google.calls()) == 3


def test_duplicate_and_racing_deliveries(member_on_worker, fake_google, member, make_booking):
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(6)]
    for b in bookings:
        member_on_worker.post(f"/api/bookings/{b.pk}/confirm/")
        for _ in range(4):  # the same work asked for again and again, racing on two processes
            tasks.enqueue("booking", b.pk)
    member_on_worker.post(f"/api/bookings/{bookings[0].pk}/cancel/")  # and one cancel racing its confirm
    for _ in range(4):
        tasks.enqueue("booking", bookings[0].pk)
    try:
        wait_until(lambda: settled(bookings) and matches(fake_google, bookings), what="convergence")
    except AssertionError:
        print(
            list(SyncRecord.objects.values("object_id", "state", "version", "synced_version", "last_error")),
            [str(b.pk) for b in bookings],
            list(fake_google.events(ACCOUNT)),
            [event_id(b) for b in bookings],
        )
        raise
    inserts = [c for c in fake_google.calls() if c["method"] == "POST"]
    assert len(fake_google.events(ACCOUNT, include_cancelled=True)) <= 6  # never a second event for one booking
    assert len(fake_google.events(ACCOUNT)) == 5
    assert inserts  # they were really sent


def test_task_messages_carry_no_secrets(member_on_worker, fake_google, member, make_booking, broker_url):
    """Look at what actually reaches the broker (Redis or RabbitMQ): primary keys only."""
    token = CalendarToken.objects.get()
    secrets = {token.access_token, token.refresh_token}
    booking = make_booking(member)
    with celery_app.connection_for_write() as conn:
        # publish real sync messages exactly as enqueue() does, to a queue nobody consumes, and read the raw bytes back
        producer = conn.Producer(serializer="json")
        tasks.sync_task.apply_async(("booking", str(booking.pk)), producer=producer, queue="secrets-probe")
        tasks.sync_task.apply_async(
            ("booking", str(booking.pk)),
            {"destination": "workspace", "reason": "resync"},
            producer=producer,
            queue="secrets-probe",
        )
        probe = conn.SimpleQueue("secrets-probe")
        seen = []
        for _ in range(2):
            message = probe.get(timeout=5)
            seen.append(message.body if isinstance(message.body, str) else message.body.decode())
            message.ack()
        probe.close()
        conn.default_channel.queue_delete("secrets-probe")
    member_on_worker.post(f"/api/bookings/{booking.pk}/confirm/")
    wait_until(lambda: settled([booking]), what="sync")
    assert str(booking.pk) in seen[0] and "workspace" in seen[1]
    for raw in seen:
        for secret in secrets:
            assert secret not in raw


def test_concurrent_refresh_happens_once(broker_url, fake_google, member):
    """Several workers find the token expiring at the same moment: one refresh, all get its result."""
    import threading

    from django.db import connection as main_connection

    from calendar_sync import tokens

    assert landing(connect(client_for(member), fake_google))["calendar_sync"] == "connected"
    CalendarToken.objects.update(expires_at=timezone.now())
    fake_google.latency = 0.3
    refreshes_before = sum(1 for r in fake_google.http_requests if r["path"] == "/token")
    results, barrier = [], threading.Barrier(4)

    def worker_thread():
        from django.db import connection

        try:
            token = CalendarToken.objects.get(user=member)
            barrier.wait()
            results.append(tokens.access_token(token))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    fake_google.latency = 0
    assert main_connection.vendor in ("postgresql", "mysql")  # row locks: SQLite would serialize the threads anyway
    assert len(results) == 4 and len(set(results)) == 1
    assert sum(1 for r in fake_google.http_requests if r["path"] == "/token") == refreshes_before + 1
    assert CalendarToken.objects.get().access_token == results[0]
