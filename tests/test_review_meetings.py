"""Review of issue #22 (guests, one video link, the member's changes coming back): defects found."""

import pytest
from django.core import mail
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import flows, tasks
from calendar_sync.models import AccessLog, CalendarToken
from calendar_sync.owners import Owner
from tests.helpers import GOOGLE_ACCOUNT, client_for, connect, landing
from tests.test_conference import book, confirm

pytestmark = pytest.mark.django_db
TEAM = "team@group.calendar.google.com"


@pytest.fixture
def member_api(google_connected, api):
    return api


def test_a_pull_racing_a_calendar_change_cancels_nothing(fake_google, booked, member, pull):
    """The member picks another calendar; before the move of their events runs (a bulk task), the
    scheduled pull reads the new calendar, which does not hold the events yet: nothing was deleted."""
    work = flows.change_calendar(Owner.member(member.pk), TEAM)  # the move is queued, not run yet
    assert [t.name for t in work] == ["move_calendar"]
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED
    assert not mail.outbox
    assert not AccessLog.objects.filter(reason="remote_deleted").exists()


def test_a_pull_racing_a_new_write_connection_cancels_nothing(fake_google, booked, member, api, run, pull):
    """The member makes another account their write connection; before the move of their events runs,
    the pull reads the new account's calendar, which does not hold them: nothing was deleted."""
    assert (
        landing(run(connect, api, fake_google, account="second@example.com", add=True))["calendar_sync"] == "connected"
    )
    second = CalendarToken.objects.get(owner_id=str(member.pk), write=False)
    work = flows.make_write(Owner.member(member.pk), second.pk)  # the move is queued, not run yet
    assert "move_connection" in [t.name for t in work]
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED
    assert not mail.outbox
    assert not AccessLog.objects.filter(reason="remote_deleted").exists()


def test_once_moved_to_the_new_calendar_a_deletion_there_is_reported(fake_google, booked, member, run, pull):
    run(tasks.schedule, flows.change_calendar(Owner.member(member.pk), TEAM))  # events.move: same id, new calendar
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED
    fake_google.delete_event(fake_google.default_account, booked.google_calendar_event_id, calendar=TEAM)
    assert pull()["reported"] == 1
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CANCELLED and len(mail.outbox) == 1


def test_a_title_with_a_line_break_still_reaches_the_member(fake_google, member_api, member, make_booking, run, pull):
    """The e-mail's subject names the booking: a title typed with a line break never loses the e-mail
    (nor becomes another header)."""
    booking = make_booking(member, hours_from_now=48, duration=2, title="Deep work\r\nBcc: someone@example.org")
    assert run(member_api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    pull()
    fake_google.delete_event(fake_google.default_account, Booking.objects.get(pk=booking.pk).google_calendar_event_id)
    assert pull()["reported"] == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [member.email] and not message.bcc
    assert "\n" not in message.subject and "\r" not in message.subject
    assert message.message()["Bcc"] is None


def test_a_join_link_that_is_not_https_is_never_kept_nor_passed_on(google_connected, api, workspace, run):
    """The member can rewrite their event's conference data in their own calendar: a link that is not a
    web address (javascript:, data:) never reaches the booking, the room's copy or the iCal feed."""
    booking = book(api, workspace)
    assert confirm(api, run, booking)["join_url"].startswith("https://meet.google.com/")
    hostile = "javascript:alert(document.cookie)//"
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    with google_connected.lock:
        cal = google_connected._calendar_id(GOOGLE_ACCOUNT, "primary")
        stored = google_connected.accounts[GOOGLE_ACCOUNT]["events"][cal][event["id"]]
        stored["_meet"]["uri"] = hostile
        stored["conferenceData"]["entryPoints"][0]["uri"] = hostile
    later = booking.start + timezone.timedelta(days=1)
    change = {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()}
    assert run(api.patch, f"/api/bookings/{booking.pk}/", change, format="json").status_code == 200
    conference = api.get(f"/api/bookings/{booking.pk}/").json()["conference"]
    assert not conference["join_url"].startswith("javascript:")
    assert "javascript:" not in str(Booking.objects.get(pk=booking.pk).conference_info)
    url = api.post("/api/calendar-sync/ical").json()["url"].removeprefix("http://testserver")
    assert b"javascript:" not in client_for(None).get(url).content


def test_our_reschedule_racing_a_pull_is_not_reported_as_the_members_move(
    fake_google, booked, member_api, run, pull, monkeypatch
):
    """The pull reads the calendar; before it looks at what it read, the booking is rescheduled through
    the API and written. What the read saw is our own older write: nothing moves back."""
    from calendar_sync.providers.google import GoogleProvider

    later = booked.start + timezone.timedelta(days=1)
    change = {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=2)).isoformat()}
    read = GoogleProvider.changes

    def read_then_reschedule(self, *args, **kwargs):
        found = read(self, *args, **kwargs)
        monkeypatch.setattr(GoogleProvider, "changes", read)
        assert run(member_api.patch, f"/api/bookings/{booked.pk}/", change, format="json").status_code == 200
        return found

    fake_google.update_event(
        fake_google.default_account, booked.google_calendar_event_id, summary="Renamed"
    )  # a change to read
    monkeypatch.setattr(GoogleProvider, "changes", read_then_reschedule)
    pull()
    booking = Booking.objects.get(pk=booked.pk)
    assert (booking.start, booking.status) == (later, Booking.Status.CONFIRMED)
    assert not AccessLog.objects.filter(reason="remote_moved").exists() and not mail.outbox


def test_the_docs_name_the_migration_and_the_event_fields_as_they_are():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    migrations = {p.stem for p in (root / "calendar_sync" / "migrations").glob("0*.py")}
    for doc in ("README.md", "CHANGELOG.md"):
        for name in re.findall(r"`(\d{4}_remote\w+)`", (root / doc).read_text()):
            assert name in migrations, (doc, name)
    rows = [
        line
        for line in (root / "docs" / "integration.md").read_text().splitlines()
        if line.startswith("| `event(obj, destination)`")
    ]
    assert len(rows) == 1 and "attendees=()" in rows[0] and 'join_url=""' in rows[0]


def test_answers_stored_from_a_stale_read_never_drop_a_guest_added_meanwhile(member, make_booking):
    """A pull reports answers for the booking as it read it; the member added a guest in between: the
    answers are stored, and the new guest stays (else the next write would uninvite them)."""
    from bookings import remote, services
    from calendar_sync.api import Guest

    booking = make_booking(member, hours_from_now=48, status=Booking.Status.CONFIRMED)
    booking = services.update_booking(booking, guests=["ana@partner.example"])
    stale = Booking.objects.get(pk=booking.pk)
    services.update_booking(booking, guests=["ana@partner.example", "bo@partner.example"])
    assert remote.answered(stale, [Guest("ana@partner.example", "accepted")]) == "stored"
    assert Booking.objects.get(pk=booking.pk).guests == [
        {"email": "ana@partner.example", "response": "accepted"},
        {"email": "bo@partner.example", "response": "needsAction"},
    ]


def test_reconnecting_with_another_account_cancels_nothing(fake_google, booked, member, api, run, pull):
    """The member connects again, choosing another Google account: the bookings' events are in the
    first account's calendar, and a read of the new one says nothing of them."""
    assert landing(run(connect, api, fake_google, account="second@example.com"))["calendar_sync"] == "connected"
    pull()
    assert Booking.objects.get(pk=booked.pk).status == Booking.Status.CONFIRMED
    assert not mail.outbox
    assert not AccessLog.objects.filter(reason="remote_deleted").exists()


def test_connecting_after_the_room_made_the_meeting_makes_no_second_one(fake_google, staff, api, workspace, run):
    """Booked with a video link before the member connected a calendar: the room's calendar made it.
    Connecting then carries that link into the member's event; it makes no second meeting."""
    from tests.helpers import ROOM_ACCOUNT, connect_room

    run(connect_room, client_for(staff), fake_google, workspace, ROOM_ACCOUNT)
    booking = book(api, workspace, "auto")
    link = confirm(api, run, booking)["join_url"]
    assert link.startswith("https://") and [m["account"] for m in fake_google.conferences()] == [ROOM_ACCOUNT]
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    assert len(fake_google.conferences()) == 1
    assert api.get(f"/api/bookings/{booking.pk}/").json()["conference"]["join_url"] == link
    [mine] = fake_google.events(GOOGLE_ACCOUNT).values()
    assert link in mine["description"]
