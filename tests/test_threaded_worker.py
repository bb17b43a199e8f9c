"""One worker process with a pool of threads (the documented production worker) hides the
provider's latency: while one sync waits on Google, the others run — each thread with its own
database connection, advisory lock session and HTTP connection — and every booking still ends
with exactly one event, at its latest version."""

import time
from datetime import datetime

import pytest
from django.utils import timezone

from bookings import services
from managehub.celery import app as celery_app
from tests.helpers import client_for, connect, landing, settled
from tests.stack import ACCOUNT, calendar_report, event_id, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
LATENCY = 0.3


def test_a_pool_of_threads_overlaps_the_waits_on_google(stack, fake_google, member, make_booking):
    assert landing(connect(client_for(member), fake_google))["calendar_sync"] == "connected"
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    bookings = [make_booking(member, hours_from_now=24 + 3 * i, title=f"Desk {i}") for i in range(24)]
    for booking in bookings:
        services.confirm_booking(booking)
    for booking in bookings[::3]:  # changed again before any sync: the same objects queued twice
        later = booking.start + timezone.timedelta(minutes=30)
        services.update_booking(booking, start=later, end=later + timezone.timedelta(hours=2))
    fake_google.reset_log()
    fake_google.latency = LATENCY
    stack.pool, stack.concurrency = "threads", 8
    stack.start()
    started = time.monotonic()
    wait_until(lambda: settled(bookings), timeout=60, what="every sync settled")
    elapsed = time.monotonic() - started
    fake_google.latency = 0
    report = calendar_report(fake_google, bookings)
    assert {k: report[k] for k in ("missing", "extra", "duplicated")} == {"missing": 0, "extra": 0, "duplicated": 0}
    assert report["events"] == 24
    events = fake_google.events(ACCOUNT)
    for booking in bookings:
        booking.refresh_from_db()
        start = datetime.fromisoformat(events[event_id(booking)]["start"]["dateTime"])
        assert start == booking.start  # the moved ones at their new time
    # One call at a time would leave at most one call in any 300 ms; the threads overlap them.
    assert fake_google.max_calls_in_window(ACCOUNT, LATENCY) >= 4
    assert elapsed < 24 * LATENCY / 2, elapsed  # one at a time: at least 7.2 s
