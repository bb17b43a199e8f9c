"""Video meetings on the real stack: a pending Meet is read again by the worker, later, until ready."""

import pytest

from bookings.models import Booking
from tests.helpers import settled
from tests.stack import ACCOUNT, event_id, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_pending_meet_is_read_again_until_ready(member_on_worker, fake_google, member, make_booking):
    booking = make_booking(member)
    Booking.objects.filter(pk=booking.pk).update(conference="google_meet")
    fake_google.conference_pending(2)  # the insert's answer and the first read again say pending
    member_on_worker.post(f"/api/bookings/{booking.pk}/confirm/")
    wait_until(lambda: event_id(booking) in fake_google.events(ACCOUNT) and settled([booking]), what="the event")

    def ready():
        return (Booking.objects.get(pk=booking.pk).conference_info or {}).get("status") == "ready"

    wait_until(ready, timeout=40, what="the meeting to be ready")
    conference = member_on_worker.get(f"/api/bookings/{booking.pk}/").json()["conference"]
    [made] = fake_google.conferences()
    assert conference["join_url"] == made["join_url"] and made["live"]
    reads = [c for c in fake_google.calls() if c["method"] == "GET" and "/events/" in c["path"]]
    assert len(reads) == 2  # read again twice (pending, then ready), a countdown apart
