"""Room calendars: a workspace's shared Google or Outlook calendar gets every booking of that room."""

import urllib.parse

import pytest
from django.utils import timezone

from bookings.models import Booking, Workspace
from calendar_sync.models import CalendarToken, OAuthState, SyncRecord
from tests.helpers import MS_ACCOUNT, ROOM_ACCOUNT, client_for, connect, connect_room, event_key, landing

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_api(staff):
    return client_for(staff)


@pytest.fixture
def room(fake_google, staff_api, workspace, run):
    """The workspace's room calendar connected (Google), the fake's call log empty."""
    fake_google.add_account(ROOM_ACCOUNT)
    response = run(connect_room, staff_api, fake_google, workspace, ROOM_ACCOUNT)
    assert response.status_code == 302 and "calendar_sync=connected" in response["Location"], response["Location"]
    fake_google.reset_log()
    return fake_google


@pytest.fixture
def member_connected(fake_google, api, run):
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    fake_google.reset_log()
    return api


def test_lifecycle_reaches_both_calendars_in_six_calls(room, member_connected, member, make_booking, run):
    api = member_connected
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    mine, rooms = room.events("member@example.com"), room.events(ROOM_ACCOUNT)
    assert list(mine) == [event_key(booking)] and list(rooms) == [event_key(booking, "workspace")]
    room_event = rooms[event_key(booking, "workspace")]
    assert room_event["summary"] == "Deep work — alice"  # the member's display name
    assert "/admin/bookings/booking/" in room_event["description"]
    assert len(room.calls()) == 2
    later = booking.start + timezone.timedelta(days=1)
    run(
        api.patch,
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert (
        timezone.datetime.fromisoformat(room.events(ROOM_ACCOUNT)[event_key(booking, "workspace")]["start"]["dateTime"])
        == later
    )
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    assert room.events("member@example.com") == {} and room.events(ROOM_ACCOUNT) == {}
    assert len(room.calls()) == 6
    states = api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]
    assert states["member"]["state"] == "synced" and states["workspace"]["state"] == "synced"


def test_owner_name_can_be_left_out(room, member_connected, member, make_booking, run, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SHARED_SHOW_OWNER": False}
    booking = make_booking(member)
    run(member_connected.post, f"/api/bookings/{booking.pk}/confirm/")
    assert room.events(ROOM_ACCOUNT)[event_key(booking, "workspace")]["summary"] == "Deep work"


def test_a_failing_room_calendar_never_holds_up_the_member(
    room, member_connected, staff_api, workspace, member, make_booking, run
):
    team = "team@group.calendar.google.com"  # the room's events go there; the member's to their primary
    assert (
        staff_api.put(
            f"/api/calendar-sync/shared/workspace/{workspace.pk}/calendar", {"calendar_id": team}, format="json"
        ).status_code
        == 200
    )
    room.inject(503, times=10, retry_after=5, path=f"/calendar/v3/calendars/{urllib.parse.quote(team)}")
    booking = make_booking(member)
    run(member_connected.post, f"/api/bookings/{booking.pk}/confirm/")
    assert list(room.events("member@example.com")) == [event_key(booking)]
    assert room.events(ROOM_ACCOUNT, team) == {}
    records = {r.destination: r for r in SyncRecord.objects.filter(object_id=str(booking.pk))}
    assert (
        records["member"].state == "synced"
        and records["workspace"].state == "pending"
        and records["workspace"].retry_at
    )


def test_connection_outlives_the_staff_member_who_made_it(room, member_connected, member, make_booking, run, staff):
    staff.delete()
    token = CalendarToken.objects.get(owner_kind="workspace")
    assert token.connected_by is None
    booking = make_booking(member)
    run(member_connected.post, f"/api/bookings/{booking.pk}/confirm/")
    assert list(room.events(ROOM_ACCOUNT)) == [event_key(booking, "workspace")]


def test_members_get_403_everywhere_shared(fake_google, api, workspace, room):
    paths = [
        "",
        f"workspace/{workspace.pk}/status",
        f"workspace/{workspace.pk}/calendars",
        f"workspace/{workspace.pk}/auth/google",
    ]
    for path in paths:
        response = api.get(f"/api/calendar-sync/shared/{path}")
        assert response.status_code == 403, path
    assert (
        api.put(
            f"/api/calendar-sync/shared/workspace/{workspace.pk}/calendar", {"calendar_id": "x"}, format="json"
        ).status_code
        == 403
    )
    assert api.delete(f"/api/calendar-sync/shared/workspace/{workspace.pk}/disconnect").status_code == 403
    assert api.get("/api/calendar-sync/status").json()["connected"] is False  # a member never sees a shared connection
    assert CalendarToken.objects.filter(owner_kind="workspace").exists()


def test_staff_see_every_shared_connection(room, staff_api, workspace, staff):
    listing = staff_api.get("/api/calendar-sync/shared/").json()
    assert len(listing) == 1
    row = listing[0]
    assert (
        row["owner_kind"] == "workspace"
        and row["owner_id"] == str(workspace.pk)
        and row["owner_label"] == workspace.name
    )
    assert row["provider"] == "google" and row["status"] == "active" and row["connected_by"] == staff.username
    for field in ("calendar_id", "last_error", "pending_syncs", "failed_syncs", "connected_at"):
        assert field in row
    status = staff_api.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/status").json()
    assert status["connected"] is True and status["connected_by"] == staff.username
    assert staff_api.get("/api/calendar-sync/shared/workspace/999999/status").status_code == 404
    assert staff_api.get("/api/calendar-sync/shared/nothing/1/status").status_code == 404
    assert staff_api.get("/api/calendar-sync/shared/workspace/not-a-number/status").status_code == 404
    calendars = staff_api.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/calendars").json()
    assert {c["id"] for c in calendars} == {ROOM_ACCOUNT, "team@group.calendar.google.com"}


def test_connecting_a_room_backfills_its_bookings_in_batches(
    fake_google, staff_api, workspace, member, other, make_booking, run, api
):
    run(connect, api, fake_google)  # the member is connected too: their calendar must not be touched
    elsewhere = Workspace.objects.create(name="Elsewhere", time_zone="UTC")
    bookings = [
        make_booking(member if i % 2 else other, hours_from_now=24 + 3 * i, status=Booking.Status.CONFIRMED)
        for i in range(60)
    ]
    make_booking(member, hours_from_now=30, status=Booking.Status.CONFIRMED, ws=elsewhere)
    make_booking(member, hours_from_now=-30, status=Booking.Status.CONFIRMED)  # past
    fake_google.add_account(ROOM_ACCOUNT)
    fake_google.reset_log()
    run(connect_room, staff_api, fake_google, workspace, ROOM_ACCOUNT)
    assert set(fake_google.events(ROOM_ACCOUNT)) == {event_key(b, "workspace") for b in bookings}
    calendar_requests = [r for r in fake_google.http_requests if r["path"].startswith(("/calendar/", "/batch/"))]
    assert len(calendar_requests) <= 3
    assert {c["account"] for c in fake_google.calls()} == {ROOM_ACCOUNT}


def test_disconnecting_a_room_stops_its_sync_and_spares_the_member(
    room, member_connected, staff_api, workspace, member, make_booking, run
):
    response = staff_api.delete(f"/api/calendar-sync/shared/workspace/{workspace.pk}/disconnect")
    assert response.status_code == 204
    booking = make_booking(member)
    run(member_connected.post, f"/api/bookings/{booking.pk}/confirm/")
    assert list(room.events("member@example.com")) == [event_key(booking)]
    assert room.events(ROOM_ACCOUNT) == {}
    assert CalendarToken.objects.filter(owner_kind="user").exists()


def test_room_calendar_on_outlook_and_calendar_change(
    fake_microsoft, staff_api, workspace, member, make_booking, run, api
):
    fake_microsoft.add_account("room@contoso.com")
    response = run(connect_room, staff_api, fake_microsoft, workspace, "room@contoso.com")
    assert "calendar_sync=connected" in response["Location"]
    booking = make_booking(member, status=Booking.Status.PENDING)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert len(fake_microsoft.events("room@contoso.com")) == 1 and fake_microsoft.events(MS_ACCOUNT) == {}
    team = fake_microsoft.calendar_id("room@contoso.com", "Team")
    run(
        staff_api.put,
        f"/api/calendar-sync/shared/workspace/{workspace.pk}/calendar",
        {"calendar_id": team},
        format="json",
    )
    assert fake_microsoft.events("room@contoso.com") == {}
    assert len(fake_microsoft.events("room@contoso.com", team)) == 1


def test_callback_returns_staff_to_the_rooms_page(fake_google, staff_api, workspace, settings):
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "SHARED_FRONTEND_URL": "https://app.example.com/integrations/rooms",
    }
    fake_google.add_account(ROOM_ACCOUNT)
    response = connect_room(staff_api, fake_google, workspace, ROOM_ACCOUNT)
    assert response["Location"].startswith("https://app.example.com/integrations/rooms?")
    assert f"owner=workspace%3A{workspace.pk}" in response["Location"]
    denied = connect_room(staff_api, fake_google, workspace, ROOM_ACCOUNT, allow=False)
    assert (
        denied["Location"].startswith("https://app.example.com/integrations/rooms?")
        and "calendar_sync=error" in denied["Location"]
    )


def test_resync_of_a_room(room, staff_api, workspace, member, make_booking, run, member_connected):
    booking = make_booking(member)
    run(member_connected.post, f"/api/bookings/{booking.pk}/confirm/")
    with room.lock:
        room.accounts[ROOM_ACCOUNT]["events"][ROOM_ACCOUNT].clear()  # someone emptied the room calendar
    response = run(staff_api.post, f"/api/calendar-sync/shared/workspace/{workspace.pk}/resync")
    assert response.status_code == 202, response.content
    assert list(room.events(ROOM_ACCOUNT)) == [event_key(booking, "workspace")]


def test_a_room_connection_needs_a_workspace_that_exists(fake_google, staff_api):
    assert staff_api.get("/api/calendar-sync/shared/workspace/424242/auth/google").status_code == 404
    assert not OAuthState.objects.exists()
