"""Guests on bookings: attendees of the member's event, and invitations exactly when a person would
expect them — one on confirm, one update per change of time, place or guest list, one cancellation —
and nothing on a retitle, retry, resync, sweep, backfill or duplicate delivery. Over real HTTP against
both fakes, which count what each guest was sent as their service would."""

import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import api as calendar_sync
from calendar_sync import tasks
from calendar_sync.models import SyncRecord
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, room_on, settled
from tests.stack import wait_until

pytestmark = pytest.mark.django_db

GUESTS = ["ana@partner.example", "Ben@Partner.Example"]  # the second's domain is lower-cased
STORED = ["ana@partner.example", "Ben@partner.example"]


@pytest.fixture(params=["google", "microsoft"])
def calendar(request, api):
    """(fake, the member's account) with the member connected to it."""
    if request.param == "google":
        return request.getfixturevalue("google_connected"), GOOGLE_ACCOUNT
    return request.getfixturevalue("outlook"), MS_ACCOUNT


def book(api, workspace, guests, hours=24, title="Planning"):
    start = timezone.now().replace(microsecond=0) + timedelta(hours=hours)
    return api.post(
        "/api/bookings/",
        {
            "workspace": workspace.pk,
            "title": title,
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "guests": guests,
        },
        format="json",
    )


def sent(fake):
    """{(guest, kind): how many} of every message guests were sent."""
    return Counter((m["email"], m["kind"]) for m in fake.notifications())


def only_event(fake, account):
    (event,) = fake.events(account).values()
    return event


def test_a_meeting_tells_each_guest_exactly_when_they_would_expect(calendar, api, member, workspace, staff, run):
    fake, account = calendar
    room_on(fake, staff, workspace)
    created = book(api, workspace, [*GUESTS, " ana@PARTNER.example "])  # a duplicate in another spelling
    assert created.status_code == 201, created.content
    booking = created.json()
    assert booking["guests"] == [{"email": e, "response": "needsAction"} for e in STORED]
    url = f"/api/bookings/{booking['id']}/"
    assert fake.notifications() == []  # a pending booking is no meeting yet

    run(api.post, url + "confirm/")
    event = only_event(fake, account)
    assert sorted(a["email"].lower() for a in fake.attendees(event)) == sorted(e.lower() for e in STORED)
    assert fake.attendees(only_event(fake, fake.room_account)) == []  # the room's copy invites nobody
    guests = [e.lower() for e in STORED]
    assert sent(fake) == {(g, "invitation"): 1 for g in guests}

    later = timezone.now().replace(microsecond=0) + timedelta(hours=30)
    run(api.patch, url, {"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}, format="json")
    assert sent(fake) == {**{(g, "invitation"): 1 for g in guests}, **{(g, "update"): 1 for g in guests}}

    before = sent(fake)
    run(api.patch, url, {"title": "Planning, again"}, format="json")  # only the member sees the title
    assert sent(fake) == before

    # Retried, resynced, swept, backfilled and duplicated deliveries: nobody hears a thing.
    obj = Booking.objects.get(pk=booking["id"])
    run(tasks.sync_task.delay, "booking", str(obj.pk))  # a duplicate delivery
    run(calendar_sync.resync, "booking", [obj])
    run(tasks.backfill_task.delay, "user", str(member.pk))
    SyncRecord.objects.update(state="pending", version=F("version") + 1, updated_at=timezone.now() - timedelta(hours=1))
    run(tasks.sweep.delay)
    assert sent(fake) == before
    assert set(SyncRecord.objects.values_list("state", flat=True)) == {"synced"}

    run(api.post, url + "cancel/")
    assert sent(fake) == {**before, **{(g, "cancellation"): 1 for g in guests}}
    assert fake.events(account) == {}


def test_the_guest_list_changing_tells_who_it_concerns(calendar, api, workspace, run):
    fake, account = calendar
    booking = book(api, workspace, ["ana@partner.example", "ben@partner.example"]).json()
    url = f"/api/bookings/{booking['id']}/"
    run(api.post, url + "confirm/")
    answer = run(api.patch, url, {"guests": ["ben@partner.example", "cleo@partner.example"]}, format="json")
    assert answer.status_code == 200, answer.content
    assert [g["email"] for g in answer.json()["guests"]] == ["ben@partner.example", "cleo@partner.example"]
    assert sorted(a["email"] for a in fake.attendees(only_event(fake, account))) == [
        "ben@partner.example",
        "cleo@partner.example",
    ]
    assert sent(fake) == {
        ("ana@partner.example", "invitation"): 1,
        ("ana@partner.example", "cancellation"): 1,  # taken off the list
        ("ben@partner.example", "invitation"): 1,
        ("ben@partner.example", "update"): 1,  # the list changed
        ("cleo@partner.example", "invitation"): 1,
    }


def test_a_guest_kept_on_the_list_keeps_their_answer(google_connected, api, workspace, run):
    booking = book(api, workspace, ["ana@partner.example"]).json()
    url = f"/api/bookings/{booking['id']}/"
    run(api.post, url + "confirm/")
    Booking.objects.filter(pk=booking["id"]).update(guests=[{"email": "ana@partner.example", "response": "accepted"}])
    answer = api.patch(url, {"guests": ["ana@partner.example", "ben@partner.example"]}, format="json").json()
    assert answer["guests"] == [
        {"email": "ana@partner.example", "response": "accepted"},
        {"email": "ben@partner.example", "response": "needsAction"},
    ]


def test_without_guests_no_one_is_told_and_unchanged_events_cost_no_call(calendar, api, member, workspace, run):
    fake, account = calendar
    booking = book(api, workspace, []).json()
    run(api.post, f"/api/bookings/{booking['id']}/confirm/")
    assert fake.attendees(only_event(fake, account)) == []
    calls = len(fake.calls())
    run(tasks.backfill_task.delay, "user", str(member.pk))  # everything is there already
    run(tasks.sync_task.delay, "booking", booking["id"])
    assert len(fake.calls()) == calls
    run(api.post, f"/api/bookings/{booking['id']}/cancel/")
    assert fake.notifications() == []


def test_google_writes_ask_for_updates_only_when_guests_should_hear(google_connected, api, workspace, run):
    booking = book(api, workspace, ["ana@partner.example"]).json()
    url = f"/api/bookings/{booking['id']}/"
    run(api.post, url + "confirm/")
    assert only_event(google_connected, GOOGLE_ACCOUNT)["sendUpdates"] == "all"
    run(api.patch, url, {"title": "Renamed"}, format="json")
    event = only_event(google_connected, GOOGLE_ACCOUNT)
    assert event["sendUpdates"] == "none" and event["summary"].startswith("Renamed")  # written, silently


def test_graph_is_not_sent_a_change_its_guests_cannot_see(outlook, api, workspace, run):
    booking = book(api, workspace, ["ana@partner.example"]).json()
    url = f"/api/bookings/{booking['id']}/"
    run(api.post, url + "confirm/")
    calls = len(outlook.calls())
    run(api.patch, url, {"title": "Renamed"}, format="json")
    assert len(outlook.calls()) == calls  # Graph would have told every guest: the title waits
    later = timezone.now().replace(microsecond=0) + timedelta(hours=40)
    run(api.patch, url, {"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}, format="json")
    assert only_event(outlook, MS_ACCOUNT)["subject"].startswith("Renamed")  # it went with the next change
    assert sent(outlook) == {("ana@partner.example", "invitation"): 1, ("ana@partner.example", "update"): 1}


def test_a_calendar_change_moves_google_events_and_tells_nobody(google_connected, api, workspace, run):
    booking = book(api, workspace, GUESTS).json()
    run(api.post, f"/api/bookings/{booking['id']}/confirm/")
    assert api.get("/api/calendar-sync/status").json()["resend_invitations"] == 0
    before, team = sent(google_connected), "team@group.calendar.google.com"
    google_connected.reset_log()
    answer = run(api.put, "/api/calendar-sync/calendar", {"calendar_id": team}, format="json")
    assert answer.status_code == 200
    assert google_connected.events(GOOGLE_ACCOUNT) == {}
    (moved,) = google_connected.events(GOOGLE_ACCOUNT, team).values()
    assert len(google_connected.attendees(moved)) == 2
    assert sent(google_connected) == before
    assert [c["method"] for c in google_connected.calls() if "/events" in c["path"]] == ["POST"]  # one events.move


def test_outlook_says_how_many_bookings_a_calendar_change_sends_again(outlook, api, workspace, run):
    with_guests = book(api, workspace, ["ana@partner.example"]).json()
    without = book(api, workspace, [], hours=30).json()
    for booking in (with_guests, without):
        run(api.post, f"/api/bookings/{booking['id']}/confirm/")
    assert api.get("/api/calendar-sync/status").json()["resend_invitations"] == 1
    other = outlook.calendar_id(MS_ACCOUNT, "Team")
    answer = run(api.put, "/api/calendar-sync/calendar", {"calendar_id": other}, format="json")
    assert answer.status_code == 200
    assert len(outlook.events(MS_ACCOUNT, other)) == 2
    assert sent(outlook) == {
        ("ana@partner.example", "invitation"): 2,  # what the member was told before changing
        ("ana@partner.example", "cancellation"): 1,
    }


# --- the API refuses bad guest lists, and saves nothing --------------------------------------------
@pytest.mark.parametrize(
    "guests",
    [
        [f"guest{i}@partner.example" for i in range(51)],
        ["not an address"],
        ["ana@partner.example", "ana@"],
        ["ALICE@example.com"],  # the member themself
        "ana@partner.example",
        [{"name": "Ana"}],
        [42],
    ],
)
def test_bad_guests_are_refused(api, member, workspace, make_booking, guests):
    answer = book(api, workspace, guests)
    assert answer.status_code == 400, answer.content
    body = answer.json()
    assert body["code"] == "invalid" and body["detail"] and "guests" in body
    assert not Booking.objects.exists()
    booking = make_booking(member)
    answer = api.patch(f"/api/bookings/{booking.pk}/", {"guests": guests}, format="json")
    assert answer.status_code == 400 and answer.json()["code"] == "invalid"
    assert Booking.objects.get(pk=booking.pk).guests == []


def test_fifty_guests_and_duplicates_are_fine(api, workspace):
    guests = [f"guest{i}@partner.example" for i in range(50)]
    answer = book(api, workspace, [*guests[:49], "GUEST0@partner.example", guests[49]][:50])
    assert answer.status_code == 201, answer.content
    assert len(answer.json()["guests"]) == 49  # the duplicate went
    assert len(book(api, workspace, guests, hours=30).json()["guests"]) == 50


def test_a_write_the_service_refused_is_announced_when_it_goes_through(calendar, api, workspace, run):
    fake, account = calendar
    booking = book(api, workspace, ["ana@partner.example"]).json()
    fake.inject(503, times=1)  # the insert (Google) / create (Graph) answered 503: nothing made
    run(api.post, f"/api/bookings/{booking['id']}/confirm/")
    assert fake.events(account) == {} and fake.notifications() == []
    SyncRecord.objects.update(updated_at=timezone.now() - timedelta(hours=1), retry_at=None)
    run(tasks.sweep.delay)  # the sweeper takes it up again
    assert len(fake.events(account)) == 1
    assert sent(fake) == {("ana@partner.example", "invitation"): 1}


def test_guests_stored_by_other_means_never_break_reading_or_syncing(google_connected, api, member, workspace, run):
    booking = book(api, workspace, []).json()
    Booking.objects.filter(pk=booking["id"]).update(
        guests=["ana@partner.example", {"name": "x"}, {"email": "b@p.example"}]
    )
    assert api.get(f"/api/bookings/{booking['id']}/").json()["guests"] == [
        {"email": "b@p.example", "response": "needsAction"}
    ]
    run(api.post, f"/api/bookings/{booking['id']}/confirm/")
    assert [a["email"] for a in google_connected.attendees(only_event(google_connected, GOOGLE_ACCOUNT))] == [
        "b@p.example"
    ]


# --- the real stack: a Celery worker process, racing deliveries, a killed worker ---------------------
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_racing_deliveries_and_a_killed_worker_tell_each_guest_once(worker, member_on_worker, fake_google, workspace):
    api = member_on_worker
    booking = book(api, workspace, GUESTS).json()
    url = f"/api/bookings/{booking['id']}/"
    fake_google.latency = 1.5
    api.post(url + "confirm/")
    for _ in range(4):  # the same work asked for again, racing on two processes
        tasks.enqueue("booking", booking["id"])
    wait_until(
        lambda: any(r["method"] == "POST" and r["path"].startswith("/calendar/") for r in fake_google.http_requests),
        what="the insert on its way",
    )
    worker.kill()  # while Google works on the insert: its answer is never read
    fake_google.latency = 0
    time.sleep(2)  # the insert lands, guests invited
    worker.start()
    obj = Booking.objects.get(pk=booking["id"])
    wait_until(lambda: settled([obj]), timeout=60, what="the sync settled after the restart")
    guests = [e.lower() for e in STORED]
    assert sent(fake_google) == {(g, "invitation"): 1 for g in guests}  # redelivered: never announced twice
    assert len(fake_google.events(GOOGLE_ACCOUNT)) == 1

    later = timezone.now().replace(microsecond=0) + timedelta(hours=50)
    api.patch(url, {"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}, format="json")
    for _ in range(4):
        tasks.enqueue("booking", booking["id"])
    wait_until(
        lambda: (
            settled([obj])
            and datetime.fromisoformat(only_event(fake_google, GOOGLE_ACCOUNT)["start"]["dateTime"]) == later
        ),
        timeout=60,
        what="the reschedule",
    )
    time.sleep(1)  # any straggling duplicate has run
    assert sent(fake_google) == {**{(g, "invitation"): 1 for g in guests}, **{(g, "update"): 1 for g in guests}}
