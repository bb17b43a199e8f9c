"""CalDAV on the real stack: a Celery worker process, Redis, PostgreSQL and a real Radicale."""

import re

import pytest

from bookings.models import Booking
from calendar_sync import tasks
from managehub.celery import app as celery_app
from tests.caldav_servers import CountingProxy, Radicale
from tests.helpers import client_for, settled
from tests.stack import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def radicale():
    with Radicale() as server:
        yield server


@pytest.fixture
def caldav_member_on_worker(stack, radicale, member, settings):
    """A member connected to Radicale (through a counting proxy), then a real worker started."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    proxy = CountingProxy(radicale.url)
    api = client_for(member)
    body = {"server_url": proxy.url, "username": radicale.username, "password": radicale.password}
    assert api.post("/api/calendar-sync/connections/caldav", body, format="json").status_code == 201
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    stack.env["CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES"] = "1"
    stack.start()
    yield api, proxy
    proxy.close()
    for obj in radicale.calendar().events():
        obj.delete()


def uids(radicale):
    return [re.search(r"UID:(\S+)", data).group(1) for data in radicale.events()]


def test_duplicate_and_racing_deliveries_leave_one_event_each(caldav_member_on_worker, radicale, member, make_booking):
    api, proxy = caldav_member_on_worker
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(4)]
    for booking in bookings:
        api.post(f"/api/bookings/{booking.pk}/confirm/")
        for _ in range(3):  # the same work asked for again and again, racing on two processes
            tasks.enqueue("booking", booking.pk)
    api.post(f"/api/bookings/{bookings[0].pk}/cancel/")  # and one cancel racing its confirm
    for _ in range(3):
        tasks.enqueue("booking", bookings[0].pk)
    confirmed = Booking.objects.filter(pk__in=[b.pk for b in bookings], status="confirmed")
    wait_until(lambda: settled(bookings) and len(radicale.events()) == confirmed.count(), what="convergence")
    found = uids(radicale)
    assert len(found) == len(set(found)) == 3  # one event per confirmed booking, never a second
    assert not [s for m, _, s in proxy.log if m in ("PUT", "DELETE") and s and s >= 500]
