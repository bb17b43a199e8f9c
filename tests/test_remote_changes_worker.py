"""What the member changes in their calendar comes back on the real stack: a Celery worker process,
the broker and PostgreSQL, both fakes. The pull runs in the worker, as beat or a notification sends it."""

import time

import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import tasks
from calendar_sync.models import AccessLog, CalendarToken
from tests.helpers import settled
from tests.stack import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
HOUR = timezone.timedelta(hours=1)


@pytest.fixture(params=["google", "microsoft"])
def on_worker(request, fake_google, fake_microsoft):
    """(the member's API client, the fake their write calendar is on), a worker running."""
    if request.param == "google":
        return request.getfixturevalue("member_on_worker"), fake_google
    return request.getfixturevalue("outlook_member_on_worker"), fake_microsoft


def pulled_after(member, moment):
    token = CalendarToken.objects.get(user=member, write=True)
    return token.pulled_at is not None and token.pulled_at > moment


def pull_on_worker(member):
    """Enqueue the pull of the member's write calendar twice at once (a notification racing beat) and
    wait for the worker to finish it (results are not kept: the connection says when it was read)."""
    asked = timezone.now()
    for _ in range(2):
        tasks.pull_task.delay("user", str(member.pk))
    wait_until(lambda: pulled_after(member, asked), what="the pull")
    time.sleep(0.5)  # the racing one too


def test_deleted_and_moved_in_the_calendar_reach_the_bookings_through_the_worker(on_worker, member, make_booking):
    api, fake = on_worker
    gone, moving = make_booking(member, hours_from_now=30), make_booking(member, hours_from_now=40)
    for booking in (gone, moving):
        assert api.post(f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    wait_until(lambda: settled([gone, moving]), what="both bookings in the calendar")
    pull_on_worker(member)  # the cursor
    ids = {b.pk: Booking.objects.get(pk=b.pk).google_calendar_event_id for b in (gone, moving)}
    fake.delete_event(fake.default_account, ids[gone.pk])
    start = moving.start + 4 * HOUR
    fake.move_event(fake.default_account, ids[moving.pk], start, start + HOUR)
    pull_on_worker(member)
    assert Booking.objects.get(pk=gone.pk).status == Booking.Status.CANCELLED
    moved = Booking.objects.get(pk=moving.pk)
    assert (moved.start, moved.end, moved.status) == (start, start + HOUR, Booking.Status.CONFIRMED)
    reported = AccessLog.objects.filter(reason__in=["remote_deleted", "remote_moved"])
    assert sorted(reported.values_list("outcome", flat=True)) == ["cancelled", "rescheduled"]  # once each
    wait_until(lambda: settled([gone, moving]), what="the rescheduled booking written back")
    pull_on_worker(member)
    assert reported.count() == 2  # our writes stay ours
    event = next(e for e in fake.agenda(fake.default_account) if e["id"] == ids[moving.pk])
    assert (event["start"], event["end"]) == (start, start + HOUR)
