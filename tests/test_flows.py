"""What a person does to a connection behaves the same from every entry point: the REST API, the
admin's actions and the management commands each run the one flow (disconnect, calendar change,
resync), so the end state at the (fake) provider and here is the same whichever was used.

The scene is a room calendar on Google with a push channel, an outside event read into a busy
block, and a member's booking in it; the member is connected too, and stays untouched."""

import io
from dataclasses import dataclass

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from calendar_sync.models import BusyBlock, CalendarToken, SyncRecord
from tests.helpers import GOOGLE_ACCOUNT, ROOM_ACCOUNT, client_for, connect, connect_room, event_key, landing

pytestmark = pytest.mark.django_db
ENTRY_POINTS = ["api", "admin", "command"]
TEAM = "team@group.calendar.google.com"
CHANGELIST = "/admin/calendar_sync/calendartoken/"
SECRET_WORDS = ("SECRET_KEY", "SALT_KEY", "FALLBACKS", "rotate", "Fernet")  # key management, for operators only


@dataclass
class Scene:
    google: object
    workspace: object
    member_api: object
    staff_api: object
    booking: object
    outside: object  # when the room calendar's own event is (start, end)

    @property
    def owner(self):
        return f"workspace:{self.workspace.pk}"

    @property
    def token(self):
        return (
            CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS)
            .filter(owner_kind="workspace", owner_id=str(self.workspace.pk))
            .first()
        )

    def channel(self, channel_id):
        return self.google.channels[channel_id]

    def blocks(self):
        return list(
            BusyBlock.objects.filter(owner_kind="workspace", owner_id=str(self.workspace.pk)).values_list(
                "start", "end"
            )
        )


def admin_client(make_user):
    root = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def scene(fake_google, staff, workspace, member, make_booking, run, settings):
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "PUSH_URL": "http://127.0.0.1:9",
    }  # Google does not call back when watching
    fake_google.add_account(ROOM_ACCOUNT)
    at = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
    fake_google.add_event(ROOM_ACCOUNT, at, at + timezone.timedelta(hours=1), title="Booked at the front desk")
    staff_api = client_for(staff)
    assert "calendar_sync=connected" in run(connect_room, staff_api, fake_google, workspace, ROOM_ACCOUNT)["Location"]
    member_api = client_for(member)
    assert landing(run(connect, member_api, fake_google))["calendar_sync"] == "connected"
    booking = make_booking(member)
    assert run(member_api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    scene = Scene(fake_google, workspace, member_api, staff_api, booking, (at, at + timezone.timedelta(hours=1)))
    # the connect flow read the room calendar and watches it
    assert scene.blocks() == [scene.outside]
    assert scene.token.push_channel and not scene.channel(scene.token.push_channel)["stopped"]
    assert event_key(booking, "workspace") in fake_google.events(ROOM_ACCOUNT)
    assert event_key(booking) in fake_google.events(GOOGLE_ACCOUNT)
    fake_google.reset_log()
    return scene


def room_grants(google):
    return [g for g in google.grants.values() if g["account"] == ROOM_ACCOUNT]


# --- disconnect ----------------------------------------------------------------------------------
def disconnect(entry, scene, run, make_user):
    if entry == "api":
        return run(scene.staff_api.delete, f"/api/calendar-sync/shared/workspace/{scene.workspace.pk}/disconnect")
    if entry == "admin":
        client = admin_client(make_user)
        return run(
            client.post, CHANGELIST, {"action": "disconnect", "_selected_action": [str(scene.token.pk)]}, follow=True
        )
    out = io.StringIO()
    run(call_command, "calendar_sync_disconnect", "--owner", scene.owner, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_disconnect_stops_the_channel_revokes_forgets_and_marks(entry, scene, run, make_user, make_booking, member):
    channel = scene.token.push_channel
    waiting = make_booking(member, hours_from_now=72)
    run(scene.member_api.post, f"/api/bookings/{waiting.pk}/confirm/")
    SyncRecord.objects.filter(object_id=str(waiting.pk), destination="workspace").update(state=SyncRecord.State.FAILED)
    clash = make_booking(member, hours_from_now=0, duration=1)
    clash.start, clash.end = scene.outside
    clash.save()
    assert (
        run(scene.member_api.post, f"/api/bookings/{clash.pk}/confirm/").status_code == 409
    )  # the room calendar has it

    response = disconnect(entry, scene, run, make_user)

    if entry == "api":
        assert response.status_code == 204
    elif entry == "admin":
        assert response.status_code == 200 and "disconnected" in response.content.decode()
    else:
        assert "disconnected and revoked" in response
    assert scene.token is None
    assert scene.channel(channel)["stopped"]  # stopped at Google
    assert room_grants(scene.google) == []  # revoked at Google
    assert scene.blocks() == []
    records = {r.object_id: r.state for r in SyncRecord.objects.filter(destination="workspace")}
    assert records == {str(scene.booking.pk): "synced", str(waiting.pk): "not_connected"}
    assert run(scene.member_api.post, f"/api/bookings/{clash.pk}/confirm/").status_code == 200  # no longer blocked
    # the member's own connection is another connection: untouched
    assert CalendarToken.objects.filter(owner_kind="user").exists()
    assert {r.state for r in SyncRecord.objects.filter(destination="member")} == {"synced"}


# --- calendar change -------------------------------------------------------------------------------
def change_calendar(entry, scene, run, make_user, calendar_id):
    if entry == "api":
        return run(
            scene.staff_api.put,
            f"/api/calendar-sync/shared/workspace/{scene.workspace.pk}/calendar",
            {"calendar_id": calendar_id},
            format="json",
        )
    if entry == "admin":
        client = admin_client(make_user)
        data = {"action": "change_calendar", "calendar_id": calendar_id, "_selected_action": [str(scene.token.pk)]}
        return run(client.post, CHANGELIST, data, follow=True)
    out = io.StringIO()
    run(call_command, "calendar_sync_change_calendar", "--owner", scene.owner, calendar_id, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_calendar_change_moves_events_and_replaces_the_channel(entry, scene, run, make_user):
    old_channel = scene.token.push_channel
    at = scene.outside[0] + timezone.timedelta(days=1)
    scene.google.add_event(ROOM_ACCOUNT, at, at + timezone.timedelta(hours=2), title="Team offsite", calendar=TEAM)
    key = event_key(scene.booking, "workspace")

    response = change_calendar(entry, scene, run, make_user, TEAM)

    if entry == "api":
        assert response.status_code == 200 and response.json()["calendar_id"] == TEAM
    elif entry == "admin":
        assert response.status_code == 200 and f"events go to {TEAM}" in response.content.decode()
    else:
        assert f"events go to {TEAM}" in response
    token = scene.token
    assert token.calendar_id == TEAM
    assert key not in scene.google.events(ROOM_ACCOUNT)  # moved out of the old calendar
    assert key in scene.google.events(ROOM_ACCOUNT, TEAM)  # into the new one
    assert len(scene.google.events(ROOM_ACCOUNT)) == 1  # the outside event stays where it was
    assert scene.channel(old_channel)["stopped"]
    assert token.push_channel not in ("", old_channel)
    new = scene.channel(token.push_channel)
    assert new["calendar_id"] == TEAM and not new["stopped"]
    assert scene.blocks() == [
        (at, at + timezone.timedelta(hours=2))
    ]  # the old calendar's forgotten, the new one's read
    assert SyncRecord.objects.get(destination="workspace").state == "synced"
    assert list(scene.google.events(GOOGLE_ACCOUNT)) == [event_key(scene.booking)]  # the member's calendar: untouched


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_choosing_the_same_calendar_changes_nothing(entry, scene, run, make_user):
    channel = scene.token.push_channel
    change_calendar(entry, scene, run, make_user, ROOM_ACCOUNT)  # the primary calendar's own id: "primary" already
    assert scene.token.calendar_id == "primary" and scene.token.push_channel == channel
    assert scene.blocks() == [scene.outside]
    assert [c["method"] for c in scene.google.calls(ROOM_ACCOUNT)] == [
        "GET"
    ]  # the calendar list; nothing moved, no channel made


# --- resync ---------------------------------------------------------------------------------------
def resync(entry, scene, run, make_user):
    if entry == "api":
        return run(scene.staff_api.post, f"/api/calendar-sync/shared/workspace/{scene.workspace.pk}/resync")
    if entry == "admin":
        client = admin_client(make_user)
        return run(
            client.post, CHANGELIST, {"action": "resync", "_selected_action": [str(scene.token.pk)]}, follow=True
        )
    out = io.StringIO()
    run(call_command, "calendar_sync_resync", "--owner", scene.owner, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_resync_puts_every_event_back(entry, scene, run, make_user, make_booking, member):
    failed = make_booking(member, hours_from_now=72)
    run(scene.member_api.post, f"/api/bookings/{failed.pk}/confirm/")
    SyncRecord.objects.filter(object_id=str(failed.pk), destination="workspace").update(
        state=SyncRecord.State.FAILED, last_error="x"
    )
    with scene.google.lock:
        scene.google.accounts[ROOM_ACCOUNT]["events"][ROOM_ACCOUNT].clear()  # someone emptied the room calendar
    channel = scene.token.push_channel
    scene.google.reset_log()

    response = resync(entry, scene, run, make_user)

    if entry == "api":
        assert response.status_code == 202
    elif entry == "admin":
        assert response.status_code == 200 and "Queued a full resync for 1 connection" in response.content.decode()
    else:
        assert "Queued a full resync for 1 connection" in response
    assert sorted(scene.google.events(ROOM_ACCOUNT)) == sorted(
        [event_key(scene.booking, "workspace"), event_key(failed, "workspace")]
    )
    assert {r.state for r in SyncRecord.objects.filter(destination="workspace")} == {"synced"}
    assert scene.token.push_channel == channel and scene.blocks() == [scene.outside]  # nothing else changed
    assert not scene.google.calls(GOOGLE_ACCOUNT)  # the member's calendar was not touched


# --- a key rotated without keeping the old key --------------------------------------------------------
def drop_the_key(settings):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-without-the-old-one-" + "x" * 20, []


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_disconnect_works_when_the_secrets_cannot_be_decrypted(entry, scene, run, make_user, settings):
    channel = scene.token.push_channel
    drop_the_key(settings)
    with pytest.raises(Exception):  # noqa: B017 - the control: the stored tokens are unreadable now
        CalendarToken.objects.get(owner_kind="workspace").refresh_token  # noqa: B018

    response = disconnect(entry, scene, run, make_user)

    if entry == "api":
        assert response.status_code == 200
        assert response.json() == {"disconnected": True, "revoked": False, "reason": "undecryptable"}
    elif entry == "admin":
        page = response.content.decode()
        assert response.status_code == 200 and "disconnected (not revoked: undecryptable)" in page
    else:
        assert "disconnected, not revoked (undecryptable)" in response
    assert scene.token is None and scene.blocks() == []
    assert CalendarToken.objects.filter(owner_kind="user").count() == 1  # the member's own: still there
    assert not scene.channel(channel)["stopped"]  # nothing can be sent without the grant: it expires on its own
    assert SyncRecord.objects.get(destination="workspace").state == "synced"


def test_a_member_sees_no_key_management_details(scene, settings, run):
    drop_the_key(settings)
    api = scene.member_api
    for response in (api.get("/api/calendar-sync/calendars"), api.post("/api/calendar-sync/test")):
        assert response.status_code == 503 and response.json()["code"] == "unavailable"
        assert not any(word.lower() in response.content.decode().lower() for word in SECRET_WORDS), response.content
    response = run(api.delete, "/api/calendar-sync/disconnect")
    assert response.status_code == 200 and response.json() == {
        "disconnected": True,
        "revoked": False,
        "reason": "undecryptable",
    }
    assert api.get("/api/calendar-sync/status").json()["connected"] is False
    assert run(api.delete, "/api/calendar-sync/disconnect").status_code == 404


def test_a_sync_that_cannot_read_the_secrets_names_no_internals(scene, settings, run, make_booking, member):
    drop_the_key(settings)
    booking = make_booking(member, hours_from_now=72)
    assert run(scene.member_api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    shown = scene.member_api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]
    assert shown["member"]["state"] == "failed" and shown["member"]["last_error"], shown
    assert not any(word.lower() in str(shown).lower() for word in SECRET_WORDS), shown


def test_view_only_staff_cannot_run_the_connection_actions(scene, run, make_user):
    from django.contrib.auth.models import Permission

    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_calendartoken"))
    client = Client()
    client.force_login(viewer)
    assert client.get(CHANGELIST).status_code == 200
    token = scene.token
    for action in ("change_calendar", "resync"):
        response = run(
            client.post,
            CHANGELIST,
            {"action": action, "calendar_id": TEAM, "_selected_action": [str(token.pk)]},
            follow=True,
        )
        assert response.status_code == 200, action  # the changelist again: no action is offered to this user
        assert f'value="{action}"' not in response.content.decode(), action
    assert scene.token.calendar_id == "primary" and scene.token.push_channel == token.push_channel
    assert scene.google.calls() == []
