"""One video link per booking: Meet or Teams made where the calendar allows it, carried by every copy,
kept on reschedule, never made twice, gone with the event; and what each calendar can make."""

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone
from icalendar import Calendar

from bookings.models import Booking
from calendar_sync import sync, tasks
from calendar_sync.api import Owner
from calendar_sync.models import SyncRecord
from calendar_sync.providers.google import GoogleProvider
from managehub.celery import app as celery_app
from tests.helpers import (
    GOOGLE_ACCOUNT,
    MS_ACCOUNT,
    ROOM_ACCOUNT,
    client_for,
    connect,
    connect_room,
    event_key,
    grant,
    landing,
)

pytestmark = pytest.mark.django_db
PERSONAL = "someone@outlook.com"


def book(api, workspace, conference="auto", hours_from_now=24):
    start = timezone.now().replace(microsecond=0) + timezone.timedelta(hours=hours_from_now)
    body = {
        "workspace": str(workspace.pk),
        "title": "Planning",
        "start": start.isoformat(),
        "end": (start + timezone.timedelta(hours=1)).isoformat(),
        "conference": conference,
    }
    response = api.post("/api/bookings/", body, format="json")
    assert response.status_code == 201, response.content
    return Booking.objects.get(pk=response.json()["id"])


def confirm(api, run, booking):
    response = run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert response.status_code == 200, response.content
    return api.get(f"/api/bookings/{booking.pk}/").json()["conference"]


def meet_uri(event):
    return next(p["uri"] for p in event["conferenceData"]["entryPoints"] if p["entryPointType"] == "video")


@pytest.fixture
def room(fake_google, staff, workspace, run):
    """The workspace's room calendar on Google, connected by staff."""
    response = run(connect_room, client_for(staff), fake_google, workspace, ROOM_ACCOUNT)
    assert "calendar_sync=connected" in response["Location"]
    return fake_google


def test_auto_on_google_makes_one_meet_the_room_copy_carries(room, google_connected, api, workspace, run):
    booking = book(api, workspace)
    conference = confirm(api, run, booking)
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    link = meet_uri(event)
    assert link.startswith("https://meet.google.com/")
    assert conference == {"requested": "auto", "type": "google_meet", "join_url": link, "status": "ready"}
    [made] = google_connected.conferences()
    assert made["account"] == GOOGLE_ACCOUNT and made["live"] and made["join_url"] == link
    [room_event] = google_connected.events(ROOM_ACCOUNT).values()
    assert link in room_event["description"] and "conferenceData" not in room_event
    inserts = [c for c in google_connected.calls(GOOGLE_ACCOUNT) if c["method"] == "POST"]
    assert inserts[0]["query"].get("conferenceDataVersion") == "1"
    member_writes = [c for c in google_connected.calls(GOOGLE_ACCOUNT) if c["method"] in ("POST", "PATCH")]
    assert len(member_writes) == 1  # the room's copy was brought up to date; the member's was not written again


def test_google_pending_meeting_becomes_ready(google_connected, api, workspace, run):
    google_connected.conference_pending(2)  # the insert's answer and the first read again say pending
    booking = book(api, workspace, "google_meet")
    conference = confirm(api, run, booking)
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert conference["status"] == "ready" and conference["join_url"] == meet_uri(event)
    reads = [c for c in google_connected.calls(GOOGLE_ACCOUNT) if c["method"] == "GET" and "/events/" in c["path"]]
    assert len(reads) == 2 and len(google_connected.conferences()) == 1
    record = SyncRecord.objects.get(object_id=str(booking.pk), destination="member")
    assert record.written["conference"]["status"] == "ready"


def test_calendar_without_meet_writes_the_event_and_says_why(fake_google, api, workspace, run):
    fake_google.allow_meet(GOOGLE_ACCOUNT, False)
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    booking = book(api, workspace, "auto")
    conference = confirm(api, run, booking)
    assert conference["status"] == "failed" and "Meet" in conference["reason"]
    assert list(fake_google.events(GOOGLE_ACCOUNT)) == [event_key(booking)]
    assert fake_google.conferences() == []
    assert api.get("/api/calendar-sync/capabilities").json() == {"conference": [], "guests": True}


def test_meet_turned_off_after_connecting_still_writes_the_event(google_connected, api, workspace, run):
    assert api.get("/api/calendar-sync/capabilities").json()["conference"] == ["google_meet"]
    google_connected.allow_meet(GOOGLE_ACCOUNT, False)  # an administrator turns Meet off: what we read is stale
    booking = book(api, workspace, "google_meet")
    conference = confirm(api, run, booking)
    assert conference["status"] == "failed" and "doesn't allow Google Meet" in conference["reason"]
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [event_key(booking)]
    assert google_connected.conferences() == []
    assert [c["method"] for c in google_connected.calls(GOOGLE_ACCOUNT)][-2:] == [
        "POST",
        "POST",
    ]  # refused, then without


def test_reschedule_keeps_the_link_and_cancel_removes_it(google_connected, api, workspace, run):
    booking = book(api, workspace)
    link = confirm(api, run, booking)["join_url"]
    later = booking.start + timezone.timedelta(days=1)
    change = {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()}
    assert run(api.patch, f"/api/bookings/{booking.pk}/", change, format="json").status_code == 200
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert meet_uri(event) == link and api.get(f"/api/bookings/{booking.pk}/").json()["conference"]["join_url"] == link
    patches = [c for c in google_connected.calls(GOOGLE_ACCOUNT) if c["method"] == "PATCH"]
    assert patches and len(google_connected.conferences()) == 1
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    assert google_connected.events(GOOGLE_ACCOUNT) == {}
    assert [m["live"] for m in google_connected.conferences()] == [False]
    assert api.get(f"/api/bookings/{booking.pk}/").json()["conference"]["status"] == "none"


def test_retried_create_after_a_lost_answer_makes_one_meeting(google_connected, api, workspace, run):
    booking = book(api, workspace)
    link = confirm(api, run, booking)["join_url"]
    # The insert's answer was lost: nothing here knows the event (or its meeting) exists.
    SyncRecord.objects.update(remote_may_exist=False, remote_id="", written={})
    Booking.objects.filter(pk=booking.pk).update(google_calendar_event_id=None)
    tasks.resync_objects("booking", [booking])  # the retry: insert → 409 duplicate → patch, same requestId
    assert [c["method"] for c in google_connected.calls(GOOGLE_ACCOUNT)][-2:] == ["POST", "PATCH"]
    assert len(google_connected.events(GOOGLE_ACCOUNT)) == 1
    [made] = google_connected.conferences()
    assert made["live"] and made["join_url"] == link
    assert Booking.objects.get(pk=booking.pk).conference_info["join_url"] == link


def test_teams_on_a_microsoft_work_account(outlook, api, workspace, run):
    assert api.get("/api/calendar-sync/capabilities").json() == {"conference": ["teams"], "guests": True}
    booking = book(api, workspace, "auto")
    conference = confirm(api, run, booking)
    [event] = outlook.events(MS_ACCOUNT).values()
    assert event["isOnlineMeeting"] and event["onlineMeetingProvider"] == "teamsForBusiness"
    assert conference == {
        "requested": "auto",
        "type": "teams",
        "join_url": event["onlineMeeting"]["joinUrl"],
        "status": "ready",
    }
    later = booking.start + timezone.timedelta(hours=3)
    change = {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()}
    run(api.patch, f"/api/bookings/{booking.pk}/", change, format="json")
    [event] = outlook.events(MS_ACCOUNT).values()
    assert event["onlineMeeting"]["joinUrl"] == conference["join_url"] and len(outlook.conferences()) == 1


def test_lost_teams_create_answer_still_one_meeting(outlook, api, workspace, run):
    booking = book(api, workspace, "teams")
    outlook.lose_response()
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")  # the create lands, its answer is lost
    sync.sync_object("booking", booking.pk)  # the retry finds it by transactionId
    [made] = outlook.conferences()
    assert made["live"] and len(outlook.events(MS_ACCOUNT)) == 1
    assert api.get(f"/api/bookings/{booking.pk}/").json()["conference"]["join_url"] == made["join_url"]


def test_personal_microsoft_account_makes_no_teams_meeting(fake_microsoft, api, workspace, run):
    fake_microsoft.add_account(PERSONAL, personal=True)
    assert landing(run(connect, api, fake_microsoft, account=PERSONAL))["calendar_sync"] == "connected"
    assert api.get("/api/calendar-sync/capabilities").json() == {"conference": [], "guests": True}
    booking = book(api, workspace, "teams")
    conference = confirm(api, run, booking)
    assert conference["status"] == "failed" and "personal Microsoft accounts" in conference["reason"]
    assert len(fake_microsoft.events(PERSONAL)) == 1 and fake_microsoft.conferences() == []


def test_capabilities(google_connected, api, make_user, staff, workspace, fake_google, run):
    assert api.get("/api/calendar-sync/capabilities").json() == {"conference": ["google_meet"], "guests": True}
    stranger = client_for(make_user("carol"))
    assert stranger.get("/api/calendar-sync/capabilities").json() == {"conference": [], "guests": False}
    shared = f"/api/calendar-sync/shared/workspace/{workspace.pk}/capabilities"
    assert api.get(shared).status_code == 403
    assert client_for(staff).get(shared).json() == {"conference": [], "guests": False}
    run(connect_room, client_for(staff), fake_google, workspace, ROOM_ACCOUNT)
    assert client_for(staff).get(shared).json() == {"conference": ["google_meet"], "guests": True}


def test_room_makes_the_meeting_when_the_member_has_no_calendar(room, api, workspace, run):
    booking = book(api, workspace, "google_meet")
    conference = confirm(api, run, booking)
    [room_event] = room.events(ROOM_ACCOUNT).values()
    assert conference["status"] == "ready" and conference["join_url"] == meet_uri(room_event)
    assert [m["account"] for m in room.conferences()] == [ROOM_ACCOUNT]


@pytest.mark.parametrize("value", ["zoom", "", 7, None])
def test_an_unknown_conference_is_a_400(api, workspace, value):
    start = timezone.now() + timezone.timedelta(days=1)
    body = {
        "workspace": str(workspace.pk),
        "title": "x",
        "start": start.isoformat(),
        "end": (start + timezone.timedelta(hours=1)).isoformat(),
        "conference": value,
    }
    response = api.post("/api/bookings/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] and response.json()["detail"] and "conference" in response.json()
    assert not Booking.objects.exists()


def test_no_conference_asks_for_none(google_connected, api, workspace, run):
    booking = book(api, workspace, "none")
    assert confirm(api, run, booking) == {"requested": "none", "type": "", "join_url": "", "status": "none"}
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert "conferenceData" not in event
    assert all("conferenceDataVersion" not in c["query"] for c in google_connected.calls())


def test_the_ical_feed_carries_the_link(google_connected, api, workspace, run):
    booking = book(api, workspace)
    link = confirm(api, run, booking)["join_url"]
    url = api.post("/api/calendar-sync/ical").json()["url"].removeprefix("http://testserver")
    [item] = Calendar.from_ical(client_for(None).get(url).content).walk("VEVENT")
    assert link in str(item["description"]) and str(item["conference"]) == link


def test_a_pending_meeting_reaches_the_room_copy_once_ready(room, google_connected, api, workspace, run):
    google_connected.conference_pending(1)
    booking = book(api, workspace, "google_meet")
    link = confirm(api, run, booking)["join_url"]
    [room_event] = google_connected.events(ROOM_ACCOUNT).values()
    assert link and link in room_event["description"]
    assert len(google_connected.conferences()) == 1


def test_resync_backfill_and_duplicate_deliveries_make_no_second_meeting(google_connected, api, workspace, run):
    booking = book(api, workspace)
    link = confirm(api, run, booking)["join_url"]
    tasks.resync_objects("booking", [booking])
    for _ in range(3):
        tasks.sync_task.delay("booking", str(booking.pk))
    sync.backfill(Owner("user", str(booking.user_id)))
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert meet_uri(event) == link
    assert [m["join_url"] for m in google_connected.conferences()] == [link]


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_connecting_backfills_each_booking_with_its_own_meeting(
    provider, fake_google, fake_microsoft, api, member, make_booking, run
):
    fake = fake_google if provider == "google" else fake_microsoft
    bookings = [make_booking(member, hours_from_now=24 * (n + 1), status=Booking.Status.CONFIRMED) for n in range(3)]
    Booking.objects.update(conference="auto")
    assert landing(run(connect, api, fake))["calendar_sync"] == "connected"
    made = fake.conferences()
    assert len(made) == 3 and len({m["join_url"] for m in made}) == 3
    links = {Booking.objects.get(pk=b.pk).conference_info["join_url"] for b in bookings}
    assert links == {m["join_url"] for m in made}


def test_an_event_made_again_gets_a_meeting_again(google_connected, api, workspace, run):
    booking = book(api, workspace)
    old = confirm(api, run, booking)["join_url"]
    with google_connected.lock:  # hard-deleted in Google: a patch answers 404, so it is made again
        google_connected.accounts[GOOGLE_ACCOUNT]["events"][GOOGLE_ACCOUNT].clear()
    tasks.resync_objects("booking", [booking])
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    new = meet_uri(event)
    assert new != old and api.get(f"/api/bookings/{booking.pk}/").json()["conference"]["join_url"] == new
    assert [m["live"] for m in google_connected.conferences()] == [False, True]


def test_auto_falls_to_the_room_when_the_members_calendar_cannot(room, fake_microsoft, api, workspace, run):
    fake_microsoft.add_account(PERSONAL, personal=True)
    assert landing(run(connect, api, fake_microsoft, account=PERSONAL))["calendar_sync"] == "connected"
    booking = book(api, workspace, "auto")
    conference = confirm(api, run, booking)
    [room_event] = room.events(ROOM_ACCOUNT).values()
    link = meet_uri(room_event)  # the room's Google calendar made it: the first that can
    assert conference == {"requested": "auto", "type": "google_meet", "join_url": link, "status": "ready"}
    [mine] = fake_microsoft.events(PERSONAL).values()
    assert link in mine["body"]["content"] and not mine["isOnlineMeeting"]  # the member's copy carries it
    assert len(room.conferences()) == 1 and fake_microsoft.conferences() == []


@pytest.fixture
def no_worker(settings):
    """A host without Celery workers (SYNC_MODE "inline"): nothing can wait for a countdown."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SYNC_MODE": "inline"}
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = True


def test_without_a_broker_the_sweep_reads_a_pending_meeting_again(google_connected, no_worker, api, workspace, run):
    google_connected.conference_pending(1)
    booking = book(api, workspace, "google_meet")
    assert confirm(api, run, booking)["status"] == "pending"  # nothing is read again in the request
    SyncRecord.objects.update(updated_at=timezone.now() - timezone.timedelta(minutes=5))
    call_command("calendar_sync_sweep")  # what cron runs where there is no beat
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert api.get(f"/api/bookings/{booking.pk}/").json()["conference"]["join_url"] == meet_uri(event)


def test_a_meeting_never_made_ready_fails_at_last(google_connected, no_worker, api, workspace, run):
    google_connected.conference_pending(100)
    booking = book(api, workspace, "google_meet")
    confirm(api, run, booking)
    SyncRecord.objects.update(updated_at=timezone.now() - timezone.timedelta(hours=1))
    call_command("calendar_sync_sweep")
    conference = api.get(f"/api/bookings/{booking.pk}/").json()["conference"]
    assert conference["status"] == "failed" and conference["reason"]


def test_the_fake_google_reads_conference_data_only_with_its_version(fake_google):
    access = grant(fake_google, GoogleProvider()).access_token
    url = f"{fake_google.url}calendar/v3/calendars/primary/events"
    start = timezone.now().replace(microsecond=0) + timezone.timedelta(days=1)
    body = {
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timezone.timedelta(hours=1)).isoformat()},
        "conferenceData": {"createRequest": {"requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}},
    }
    headers = {"Authorization": f"Bearer {access}"}
    assert "conferenceData" not in requests.post(url, json=body, headers=headers, timeout=10).json()
    made = requests.post(f"{url}?conferenceDataVersion=1", json=body, headers=headers, timeout=10).json()
    assert made["conferenceData"]["createRequest"]["status"]["statusCode"] == "success"
    fake_google.allow_meet(GOOGLE_ACCOUNT, False)
    refused = requests.post(f"{url}?conferenceDataVersion=1", json=body, headers=headers, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["message"] == "Invalid conference type value."
    assert len(fake_google.conferences()) == 1
