"""What the member changes in their own calendar comes back, for Google and for Microsoft.

The member deletes a booking's event → the booking is cancelled and they get one e-mail; moves it to
a free slot → the booking moves; to a taken one → the event goes back and one e-mail says why; a
guest answers → the booking shows it. Our own writes never come back as the member's changes. All
over real HTTP against the fakes, through the same pull the schedule and push notifications run."""

import io
import re

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from bookings.calendar import BookingSource
from bookings.models import Booking
from calendar_sync import channels, flows, reads
from calendar_sync.models import AccessLog, CalendarToken, SyncRecord
from calendar_sync.owners import Owner
from tests.helpers import client_for, connect, landing, set_push_url

pytestmark = pytest.mark.django_db
HOUR = timezone.timedelta(hours=1)
REMOTE_REASONS = ("remote_deleted", "remote_moved", "responses")
GUEST = "guest@example.org"


@pytest.fixture(params=["google", "microsoft"])
def fake(request, fake_google, fake_microsoft):
    return fake_google if request.param == "google" else fake_microsoft


@pytest.fixture
def member_api(fake, api, run, member):
    assert landing(run(connect, api, fake, account=fake.default_account))["calendar_sync"] == "connected"
    fake.reset_log()
    return api


def event_id(booking):
    return Booking.objects.get(pk=booking.pk).google_calendar_event_id


def agenda_of(fake, booking):
    return next(e for e in fake.agenda(fake.default_account) if e["id"] == event_id(booking))


def activity(reason):
    return list(AccessLog.objects.filter(reason=reason).values_list("outcome", "object_ref"))


def add_guest(fake, booking, email=GUEST):
    """The booking's guest on its event, as the guests feature writes it (not answered yet)."""
    Booking.objects.filter(pk=booking.pk).update(guests=[{"email": email, "response": "needsAction"}])
    if fake.provider == "google":
        attendees = [{"email": email, "responseStatus": "needsAction"}]
    else:
        attendees = [
            {"type": "required", "emailAddress": {"address": email, "name": ""}, "status": {"response": "none"}}
        ]
    fake.update_event(fake.default_account, event_id(booking), attendees=attendees)


# --- deleted -------------------------------------------------------------------------------------------
def test_deleting_the_event_cancels_the_booking_and_tells_the_member_once(fake, booked, member, pull, member_api):
    fake.delete_event(fake.default_account, event_id(booked))
    assert pull()["reported"] == 1
    booking = Booking.objects.get(pk=booked.pk)
    assert booking.status == Booking.Status.CANCELLED and booking.google_calendar_event_id is None
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [member.email]
    assert "cancelled" in mail.outbox[0].subject.lower() and str(booked.pk) in mail.outbox[0].body
    assert activity("remote_deleted") == [("cancelled", f"booking:{booked.pk}")]
    rows = member_api.get("/api/calendar-sync/activity").json()["results"]
    row = next(r for r in rows if r["reason"] == "remote_deleted")  # in the member's activity
    assert (row["outcome"], row["object_ref"], row["operation"]) == (
        "cancelled",
        f"booking:{booked.pk}",
        "pull_changes",
    )
    assert SyncRecord.objects.get(object_id=str(booked.pk), destination="member").state == "synced"
    assert pull()["reported"] == 0 and len(mail.outbox) == 1  # nothing reported twice


def test_a_deletion_before_the_first_pull_is_found_by_the_full_read(fake, member_api, member, make_booking, run, pull):
    booking = make_booking(member, hours_from_now=30, duration=1)
    run(member_api.post, f"/api/bookings/{booking.pk}/confirm/")
    fake.delete_event(fake.default_account, event_id(booking))
    assert pull()["full"] is True
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CANCELLED and len(mail.outbox) == 1


def test_an_event_no_longer_listed_but_still_there_is_not_deleted(fake, booked, pull):
    """Moved far ahead (out of the read's window) or marked free: still the booking's event."""
    far = timezone.now().replace(microsecond=0) + timezone.timedelta(days=200)
    fake.move_event(fake.default_account, event_id(booked), far, far + 2 * HOUR)
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED
    assert not activity("remote_deleted")
    fake.set_busy(fake.default_account, event_id(booked), False)
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED and not activity("remote_deleted")


def test_a_failed_read_of_the_event_deletes_nothing(fake, booked, pull):
    fake.delete_event(fake.default_account, event_id(booked))
    one_event = r"/calendar/v3/calendars/[^/]+/events/[^/]+" if fake.provider == "google" else r"/v1\.0/me/events/[^/]+"
    fake.inject(503, times=5, path=re.compile(one_event))
    assert pull() is None  # the changes were read; the event's own read failed: the pull fails, nothing stored
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED and not mail.outbox
    fake.clear_faults()
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CANCELLED and len(mail.outbox) == 1


# --- moved ---------------------------------------------------------------------------------------------
def test_moving_the_event_to_a_free_slot_moves_the_booking(fake, booked, pull):
    start = booked.start + 3 * HOUR
    fake.move_event(fake.default_account, event_id(booked), start, start + HOUR)
    assert pull()["reported"] == 1
    booking = Booking.objects.get(pk=booked.pk)
    assert (booking.start, booking.end, booking.status) == (start, start + HOUR, Booking.Status.CONFIRMED)
    event = agenda_of(fake, booked)
    assert (event["start"], event["end"]) == (start, start + HOUR)
    assert activity("remote_moved") == [("rescheduled", f"booking:{booked.pk}")] and not mail.outbox
    assert pull()["reported"] == 0  # our write of the new time does not come back


def test_moving_the_event_to_a_taken_slot_puts_it_back_and_says_why(
    fake, booked, pull, other, make_booking, run, workspace
):
    taken = make_booking(other, hours_from_now=60, duration=2, title="Board meeting")
    Booking.objects.filter(pk=taken.pk).update(status=Booking.Status.CONFIRMED)
    fake.move_event(fake.default_account, event_id(booked), taken.start, taken.end)
    assert pull()["reported"] == 1
    booking = Booking.objects.get(pk=booked.pk)
    assert (booking.start, booking.end) == (booked.start, booked.end)
    event = agenda_of(fake, booked)
    assert (event["start"], event["end"]) == (booked.start, booked.end)  # back at the booking's time
    assert len(mail.outbox) == 1 and "already booked" in mail.outbox[0].body and workspace.name in mail.outbox[0].body
    assert activity("remote_moved") == [("put_back", f"booking:{booked.pk}")]
    assert pull()["reported"] == 0 and len(mail.outbox) == 1


# --- guests' answers -----------------------------------------------------------------------------------
def test_a_guest_declining_shows_on_the_booking_without_a_write(fake, booked, pull, member_api):
    add_guest(fake, booked)
    pull()
    assert Booking.objects.get(pk=booked.pk).guests == [{"email": GUEST, "response": "needsAction"}]
    fake.reset_log()
    fake.respond(fake.default_account, event_id(booked), GUEST, "declined")
    assert pull()["reported"] == 1
    assert Booking.objects.get(pk=booked.pk).guests == [{"email": GUEST, "response": "declined"}]
    assert [c["method"] for c in fake.calls()] == ["GET"]  # the read; nothing written back
    assert ("stored", f"booking:{booked.pk}") in activity("responses") and not mail.outbox
    fake.respond(fake.default_account, event_id(booked), GUEST, "tentative")
    pull()
    assert Booking.objects.get(pk=booked.pk).guests == [{"email": GUEST, "response": "tentative"}]


# --- our own writes ------------------------------------------------------------------------------------
def test_our_own_writes_never_come_back(fake, booked, pull, member_api, run):
    start = booked.start + 5 * HOUR
    response = run(
        member_api.patch,
        f"/api/bookings/{booked.pk}/",
        {"start": start.isoformat(), "end": (start + HOUR).isoformat()},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert pull()["reported"] == 0
    record = SyncRecord.objects.get(object_id=str(booked.pk), destination="member")
    assert record.written["version"]  # the version our write left
    assert run(member_api.post, f"/api/bookings/{booked.pk}/cancel/").status_code == 200
    assert pull()["reported"] == 0
    assert not AccessLog.objects.filter(reason__in=REMOTE_REASONS).exists() and not mail.outbox
    booking = Booking.objects.get(pk=booked.pk)
    assert (booking.start, booking.status) == (start, Booking.Status.CANCELLED)


def test_the_version_of_each_write_is_kept(fake, booked):
    record = SyncRecord.objects.get(object_id=str(booked.pk), destination="member")
    event = fake.events(fake.default_account)[event_id(booked)]
    assert record.written["version"] == (event["etag"] if fake.provider == "google" else event["changeKey"])


# --- when the pull runs ----------------------------------------------------------------------------------
def test_the_scheduled_pull_reads_the_members_write_calendar(fake, booked, member):
    assert Owner("user", str(member.pk)) not in list(reads.due_pulls())  # just pulled
    CalendarToken.objects.update(pulled_at=None)
    assert Owner("user", str(member.pk)) in list(reads.due_pulls())


@pytest.mark.django_db(transaction=True)
def test_a_push_notification_for_the_members_calendar_pulls_it(fake, member, make_booking, live_server, settings):
    set_push_url(settings, live_server.url)
    api = client_for(member)
    assert landing(connect(api, fake, account=fake.default_account))["calendar_sync"] == "connected"
    token = CalendarToken.objects.get(user=member)
    assert token.push_channel  # connecting watched it (the renew task it enqueued)
    channel = fake.push_channels()[token.push_channel]
    assert channel["account"] == fake.default_account and not channel["stopped"]
    booking = make_booking(member, hours_from_now=50, duration=1)
    assert api.post(f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    reads.pull(Owner("user", str(member.pk)))  # the cursor
    mail.outbox.clear()
    fake.delete_event(fake.default_account, event_id(booking))
    response = fake.notify(token.push_channel, event_id(booking))
    assert response.status_code in (200, 202), response.text
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CANCELLED  # pulled by the webhook
    assert len(mail.outbox) == 1
    assert channels.renew_all() == 0  # the member's channel is live: kept


def test_another_write_connection_stops_the_old_watch(fake, member_api, member, settings):
    set_push_url(settings, "http://127.0.0.1:9")
    token = CalendarToken.objects.get(user=member)
    assert channels.ensure_watch(token) and token.push_channel
    other = CalendarToken.objects.create(
        user=member, owner_kind="user", provider=fake.provider, access_token="a", refresh_token="r", write=False
    )
    assert channels.ensure_watch(other) is False  # only the write connection is watched
    flows.make_write(Owner("user", str(member.pk)), other.pk)
    assert fake.push_channels()[token.push_channel]["stopped"]
    assert CalendarToken.objects.get(pk=token.pk).push_channel == ""


def test_the_pull_command_reads_a_members_calendar(fake, booked, member):
    fake.delete_event(fake.default_account, event_id(booked))
    out = io.StringIO()
    call_command("calendar_sync_pull", "--user", member.username, stdout=out)
    assert "1 change(s) to our events reported" in out.getvalue()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CANCELLED
    out = io.StringIO()
    call_command("calendar_sync_pull", stdout=out)  # every watched calendar: the member's among them
    assert f"user:{member.pk}: changes, 0 change(s)" in out.getvalue()


def test_writes_sent_in_a_batch_keep_their_versions_too(fake, api, member, make_booking, run):
    bookings = [make_booking(member, hours_from_now=24 + 3 * i, status=Booking.Status.CONFIRMED) for i in range(3)]
    assert landing(run(connect, api, fake, account=fake.default_account))["calendar_sync"] == "connected"  # backfill
    events = fake.events(fake.default_account)
    for booking in bookings:
        record = SyncRecord.objects.get(object_id=str(booking.pk), destination="member")
        event = events[record.remote_id]
        assert record.written["version"] == (event["etag"] if fake.provider == "google" else event["changeKey"])


def test_tidying_away_a_booking_already_over_changes_nothing(fake, member_api, member, make_booking, run, pull):
    booking = make_booking(member, hours_from_now=-3, duration=1)
    assert run(member_api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    pull()
    fake.delete_event(fake.default_account, event_id(booking))
    pull()
    assert Booking.objects.get(pk=booking.pk).status == Booking.Status.CONFIRMED and not mail.outbox
    assert activity("remote_deleted") == [("past", f"booking:{booking.pk}")]


class FailingSource(BookingSource):
    """The host's rule for a deleted event fails."""

    def remote_deleted(self, obj, destination):
        raise RuntimeError("the host's rule broke")


def test_a_host_rule_that_fails_is_logged_and_the_pull_goes_on(fake, booked, pull, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SOURCES": {"booking": f"{__name__}.FailingSource"}}
    fake.delete_event(fake.default_account, event_id(booked))
    result = pull()
    assert result["reported"] == 1 and CalendarToken.objects.get(user=booked.user).pull_cursor  # the cursor moved on
    assert activity("remote_deleted") == [("error", f"booking:{booked.pk}")]
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED and not mail.outbox


@pytest.mark.django_db(transaction=True)
def test_with_auto_notify_the_members_move_reaches_the_booking_by_push_alone(
    fake, member, make_booking, live_server, settings
):
    set_push_url(settings, live_server.url)
    api = client_for(member)
    assert landing(connect(api, fake, account=fake.default_account))["calendar_sync"] == "connected"
    booking = make_booking(member, hours_from_now=52, duration=1)
    assert api.post(f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    reads.pull(Owner("user", str(member.pk)))  # the cursor
    fake.auto_notify = True  # the fake notifies the member's channel as the service would
    start = booking.start + 2 * HOUR
    fake.move_event(fake.default_account, event_id(booking), start, start + HOUR)
    moved = Booking.objects.get(pk=booking.pk)  # no pull was asked for here: the notification did it
    assert (moved.start, moved.end) == (start, start + HOUR)
