"""Bookings appear, move and disappear in the member's calendar — exactly once (eager tasks)."""

import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import sync, tasks
from calendar_sync.models import CalendarToken, SyncRecord
from calendar_sync.sources import get_source
from tests.helpers import FRONTEND, GOOGLE_ACCOUNT, client_for, connect, landing

pytestmark = pytest.mark.django_db


def event_id(booking):
    return get_source("booking").event_id(booking.pk)


def test_confirm_creates_exactly_one_event_with_the_right_fields(google_connected, api, member, make_booking, run):
    booking = make_booking(member)
    assert google_connected.calls() == []  # a pending booking costs nothing
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    events = google_connected.events(GOOGLE_ACCOUNT)
    assert list(events) == [event_id(booking)]
    event = events[event_id(booking)]
    assert event["summary"] == "Deep work — The Loft"
    assert event["location"] == "The Loft, 1 Harbour St, Lisbon"
    assert f"{FRONTEND}/bookings/{booking.pk}" in event["description"]
    assert event["start"]["timeZone"] == "Europe/Lisbon"
    assert timezone.datetime.fromisoformat(event["start"]["dateTime"]) == booking.start
    assert timezone.datetime.fromisoformat(event["end"]["dateTime"]) == booking.end
    assert event["extendedProperties"]["private"] == {
        "calendar_sync_source": "booking",
        "calendar_sync_id": str(booking.pk),
    }
    assert event["sendUpdates"] == "none"
    booking.refresh_from_db()
    assert booking.google_calendar_event_id == event_id(booking)
    state = api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]
    assert state["state"] == "synced" and state["event_id"] == event_id(booking) and state["synced_at"]


def test_lifecycle_costs_three_calls_and_reruns_cost_none(google_connected, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    later = booking.start + timezone.timedelta(hours=5)
    run(
        api.patch,
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()},
        format="json",
    )
    moved = google_connected.events(GOOGLE_ACCOUNT)[event_id(booking)]
    assert timezone.datetime.fromisoformat(moved["start"]["dateTime"]) == later
    assert moved["sequence"] == 1  # patched in place, not re-created
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    assert google_connected.events(GOOGLE_ACCOUNT) == {}
    assert [c["method"] for c in google_connected.calls()] == ["POST", "PATCH", "DELETE"]
    booking.refresh_from_db()
    assert booking.google_calendar_event_id is None
    for _ in range(3):
        tasks.sync_task.delay("booking", str(booking.pk))
        sync.sync_object("booking", booking.pk)
    assert len(google_connected.calls()) == 3


def test_saves_that_do_not_change_the_event_cause_no_work(google_connected, api, member, make_booking, run):
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    run(sync.sync_object, "booking", booking.pk)
    calls = len(google_connected.calls())
    version = SyncRecord.objects.get(object_id=str(booking.pk)).version
    booking = Booking.objects.get(pk=booking.pk)
    run(booking.save)
    assert SyncRecord.objects.get(object_id=str(booking.pk)).version == version
    assert len(google_connected.calls()) == calls


def test_member_without_connection_is_not_an_error(fake_google, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert fake_google.calls() == []
    assert api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]["state"] == "not_connected"


def test_existing_event_is_patched_not_duplicated(google_connected, member, make_booking, run):
    """A lost insert response (or a lost record) leaves the event there: a 409 means patch it."""
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    run(sync.sync_object, "booking", booking.pk)
    SyncRecord.objects.all().update(remote_may_exist=False, remote_id="")
    Booking.objects.filter(pk=booking.pk).update(google_calendar_event_id=None, title="Renamed")
    tasks.resync_objects("booking", [Booking.objects.get(pk=booking.pk)])
    events = google_connected.events(GOOGLE_ACCOUNT, include_cancelled=True)
    assert len(events) == 1 and events[event_id(booking)]["summary"].startswith("Renamed")
    assert [c["method"] for c in google_connected.calls()] == ["POST", "POST", "PATCH"]


def test_event_deleted_in_google_is_restored(google_connected, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    # the member deletes it in Google Calendar; an admin resync brings it back under the same id
    google_connected.events(GOOGLE_ACCOUNT)  # present
    with google_connected.lock:
        google_connected.accounts[GOOGLE_ACCOUNT]["events"][GOOGLE_ACCOUNT][event_id(booking)]["status"] = "cancelled"
    tasks.resync_objects("booking", [booking])
    assert google_connected.events(GOOGLE_ACCOUNT)[event_id(booking)]["status"] == "confirmed"
    # hard-deleted (404 on patch): created again under the same id
    with google_connected.lock:
        google_connected.accounts[GOOGLE_ACCOUNT]["events"][GOOGLE_ACCOUNT].clear()
    tasks.resync_objects("booking", [booking])
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [event_id(booking)]


def test_cancel_of_an_event_already_gone_succeeds(google_connected, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    with google_connected.lock:
        google_connected.accounts[GOOGLE_ACCOUNT]["events"][GOOGLE_ACCOUNT][event_id(booking)]["status"] = (
            "cancelled"  # 410 on delete
        )
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    record = SyncRecord.objects.get(object_id=str(booking.pk))
    assert record.state == "synced" and record.last_error == ""
    assert Booking.objects.get(pk=booking.pk).google_calendar_event_id is None


def test_members_never_touch_each_others_calendars(google_connected, api, member, other, make_booking, run, make_user):
    bob_api = client_for(other)
    google_connected.add_account("bob@example.com")
    assert landing(run(connect, bob_api, google_connected, account="bob@example.com"))["calendar_sync"] == "connected"
    alice_booking = make_booking(member, hours_from_now=24)
    bob_booking = make_booking(other, hours_from_now=48)
    run(api.post, f"/api/bookings/{alice_booking.pk}/confirm/")
    run(bob_api.post, f"/api/bookings/{bob_booking.pk}/confirm/")
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [event_id(alice_booking)]
    assert list(google_connected.events("bob@example.com")) == [event_id(bob_booking)]
    # bob cannot see or alter alice's sync state or connection
    assert bob_api.get(f"/api/bookings/{alice_booking.pk}/").status_code == 404
    assert bob_api.get("/api/calendar-sync/status").json()["calendar_id"] == "primary"
    bob_api.delete("/api/calendar-sync/disconnect")
    assert CalendarToken.objects.filter(user=member).exists()


def test_chosen_calendar_receives_the_events(google_connected, api, member, make_booking, run):
    run(api.put, "/api/calendar-sync/calendar", {"calendar_id": "team@group.calendar.google.com"}, format="json")
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert list(google_connected.events(GOOGLE_ACCOUNT, "team@group.calendar.google.com")) == [event_id(booking)]


def test_permanent_failure_is_recorded_and_shown(google_connected, api, member, make_booking, run):
    run(api.put, "/api/calendar-sync/calendar", {"calendar_id": "team@group.calendar.google.com"}, format="json")
    with google_connected.lock:
        del google_connected.accounts[GOOGLE_ACCOUNT]["calendars"][
            "team@group.calendar.google.com"
        ]  # calendar deleted in Google
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    state = api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]
    assert state["state"] == "failed" and "404" in state["last_error"]
    assert api.get("/api/calendar-sync/status").json()["failed_syncs"] == 1


def test_transient_failure_leaves_work_for_the_sweeper(google_connected, api, member, make_booking, run):
    google_connected.inject(503, times=1, retry_after=0)
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    record = SyncRecord.objects.get(object_id=str(booking.pk))
    assert record.state == "pending" and record.attempts == 1 and "503" in record.last_error
    assert google_connected.events(GOOGLE_ACCOUNT) == {}
    SyncRecord.objects.all().update(retry_at=timezone.now(), updated_at=timezone.now() - timezone.timedelta(minutes=5))
    assert tasks.sweep() == 1
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [event_id(booking)]
    assert SyncRecord.objects.get(pk=record.pk).state == "synced"


def test_expired_access_token_is_refreshed_during_sync(google_connected, api, member, make_booking, run):
    google_connected.expire_access_tokens()  # Google says 401 although our expiry looks fine
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert SyncRecord.objects.get().last_error == ""
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [event_id(booking)]
    assert [c["method"] for c in google_connected.calls()] == ["POST", "POST"]  # 401, refresh, retry
    assert CalendarToken.objects.get(user=member).status == "active"


def test_revoked_grant_needs_reauth_and_replays_after_reconnect(google_connected, api, member, make_booking, run):
    first = make_booking(member, hours_from_now=24)
    run(api.post, f"/api/bookings/{first.pk}/confirm/")
    google_connected.revoke_grants(GOOGLE_ACCOUNT)
    second = make_booking(member, hours_from_now=48)
    run(api.post, f"/api/bookings/{second.pk}/confirm/")
    run(api.post, f"/api/bookings/{first.pk}/cancel/")
    status = api.get("/api/calendar-sync/status").json()
    assert status["status"] == "needs_reauth"
    assert api.get(f"/api/bookings/{second.pk}/").json()["calendar_sync"]["state"] == "not_connected"
    calls = len(google_connected.calls())
    for _ in range(3):  # no retry storm: nothing more reaches Google while reauth is needed
        tasks.sweep()
        sync.sync_object("booking", second.pk)
    assert len(google_connected.calls()) == calls
    assert landing(run(connect, api, google_connected))["calendar_sync"] == "connected"
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [event_id(second)]  # the cancel was replayed too
    assert {r.state for r in SyncRecord.objects.all()} == {"synced"}


def test_backfill_uses_batches_within_the_rate_limit(fake_google, api, member, workspace, run, settings):
    quota = {"google": {"connection": "400/second"}}  # a backfill is bulk work: half of it, 200 a second
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "QUOTAS": quota}
    start = timezone.now() + timezone.timedelta(days=1)
    Booking.objects.bulk_create(
        [
            Booking(
                user=member,
                workspace=workspace,
                title=f"B{i}",
                start=start + timezone.timedelta(hours=i),
                end=start + timezone.timedelta(hours=i, minutes=30),
                status="confirmed",
            )
            for i in range(500)
        ]
    )
    Booking.objects.create(
        user=member,
        workspace=workspace,
        title="past",
        start=start - timezone.timedelta(days=3),
        end=start - timezone.timedelta(days=3) + timezone.timedelta(hours=1),
        status="confirmed",
    )
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    assert len(fake_google.events(GOOGLE_ACCOUNT)) == 500
    calendar_http = [r for r in fake_google.http_requests if "calendar" in r["path"]]
    assert len(calendar_http) <= 11
    assert fake_google.max_calls_in_window(GOOGLE_ACCOUNT, 1.0) <= 200
    assert SyncRecord.objects.filter(state="synced").count() == 500
    assert Booking.objects.filter(google_calendar_event_id__isnull=False).count() == 500


def test_booking_list_has_no_n_plus_one(
    google_connected, api, member, make_booking, run, django_assert_max_num_queries
):
    for i in range(3):
        run(api.post, f"/api/bookings/{make_booking(member, hours_from_now=24 + 3 * i).pk}/confirm/")
    with django_assert_max_num_queries(3) as few:
        api.get("/api/bookings/")
    for i in range(20):
        make_booking(member, hours_from_now=100 + 3 * i)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = api.get("/api/bookings/")
    assert response.json()["count"] == 23


def test_changing_calendar_moves_the_events(google_connected, api, member, make_booking, run):
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(3)]
    for b in bookings:
        run(api.post, f"/api/bookings/{b.pk}/confirm/")
    run(api.post, f"/api/bookings/{bookings[2].pk}/cancel/")
    assert len(google_connected.events(GOOGLE_ACCOUNT)) == 2
    run(api.put, "/api/calendar-sync/calendar", {"calendar_id": "team@group.calendar.google.com"}, format="json")
    assert google_connected.events(GOOGLE_ACCOUNT) == {}  # nothing left behind in the old calendar
    assert set(google_connected.events(GOOGLE_ACCOUNT, "team@group.calendar.google.com")) == {
        event_id(b) for b in bookings[:2]
    }
    assert {r.state for r in SyncRecord.objects.all()} == {"synced"}
