"""Correctness: what outside tests found reading calendars, bounding bookings and addressing owners.

Outside Outlook events are never mistaken for ours; bookings stay within a horizon that room
calendars are always read to; busy windows no calendar can hold are a 400; Graph gets every
booking at its own instant whatever the zone; Google incremental reads repeat the full read's
parameters; one iCal feed per member however many requests race; owner ids are canonical; and
busy answers belong to the connection that read them.
"""

import datetime as dt
import threading
import urllib.parse
import zoneinfo
from zoneinfo import ZoneInfo

import pytest
import requests
from django.core.checks import run_checks
from django.db import connection
from django.utils import timezone
from tzlocal.windows_tz import win_tz

from bookings.models import Booking, Workspace
from calendar_sync import reads, sync
from calendar_sync.conf import get_setting
from calendar_sync.models import BusyBlock, CalendarFeed
from calendar_sync.owners import Owner
from calendar_sync.owners import parse as parse_owner
from calendar_sync.providers.microsoft import MicrosoftProvider
from calendar_sync.types import Event, Operation
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, client_for, connect, connect_room, landing

pytestmark = pytest.mark.django_db
UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def hour_from_now(days):
    return timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(days=days)


def room_owner(staff, fake, workspace, account, run):
    """Staff connect the workspace's room calendar on `fake` (it is read once at once): its Owner."""
    response = run(connect_room, client_for(staff), fake, workspace, account)
    assert "calendar_sync=connected" in response["Location"], response["Location"]
    return Owner("workspace", str(workspace.pk))


def book(api, workspace, start, end):
    return api.post(
        "/api/bookings/",
        {"workspace": workspace.pk, "title": "Desk", "start": start.isoformat(), "end": end.isoformat()},
        format="json",
    )


def window(start, end):
    return "/api/calendar-sync/busy?" + urllib.parse.urlencode({"start": start, "end": end})


@pytest.fixture(params=["google", "microsoft"])
def fake(request, fake_google, fake_microsoft):
    return fake_google if request.param == "google" else fake_microsoft


# --- 1. Outlook: a transactionId is anyone's; only our property (or a stored id) makes an event ours -------
def test_an_outside_outlook_event_with_a_transaction_id_blocks_the_room(
    fake_microsoft, staff, workspace, member, api, make_booking, run
):
    owner = room_owner(staff, fake_microsoft, workspace, "rooms@contoso.com", run)
    booking = make_booking(member, hours_from_now=48, duration=2)
    outside = fake_microsoft.add_event(
        "rooms@contoso.com", booking.start + HOUR, booking.end + HOUR, title="Board meeting"
    )
    fake_microsoft.update_event("rooms@contoso.com", outside, transactionId="d2c5b1a0-7e1f-4c55-9a51-outlook-mobile")
    reads.pull(owner)
    assert BusyBlock.objects.filter(remote_id=outside).exists()
    response = run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert response.status_code == 409 and response.json()["code"] == "overlap", response.content
    # Our own events are still recognised (by the id we stored) and never imported.
    ours = make_booking(member, hours_from_now=24 * 5, duration=1)
    assert run(api.post, f"/api/bookings/{ours.pk}/confirm/").status_code == 200
    reads.pull(owner)
    assert list(BusyBlock.objects.values_list("remote_id", flat=True)) == [outside]


def test_our_outlook_event_read_before_its_id_was_known_never_blocks_its_own_booking(
    fake_microsoft, staff, workspace, member, api, make_booking, run
):
    owner = room_owner(staff, fake_microsoft, workspace, "rooms@contoso.com", run)
    booking = make_booking(member, hours_from_now=48, duration=2)
    fake_microsoft.lose_response()
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")  # the create lands in the room calendar, its answer is lost
    reads.pull(owner)  # delta reads carry no extended property and no id is stored yet: imported
    assert BusyBlock.objects.count() == 1
    sync.sync_object("booking", booking.pk, "workspace")  # the retry finds the event by our property and stores its id
    later = {"start": (booking.start + HOUR).isoformat(), "end": (booking.end + HOUR).isoformat()}
    response = run(api.patch, f"/api/bookings/{booking.pk}/", later, format="json")
    assert response.status_code == 200, response.content  # never in its own way
    reads.pull(owner)
    assert not BusyBlock.objects.exists()


def test_outlook_busy_times_include_outside_events_with_a_transaction_id(fake_microsoft, api, run):
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    start = hour_from_now(2)
    outside = fake_microsoft.add_event(MS_ACCOUNT, start, start + HOUR, title="Dentist")
    fake_microsoft.update_event(MS_ACCOUNT, outside, transactionId="another-clients-transaction")
    busy = api.get(window(start.isoformat(), (start + DAY).isoformat())).json()["busy"]
    assert [dt.datetime.fromisoformat(b["start"]) for b in busy] == [start]


# --- 2. A booking horizon and a maximum length; room calendars read at least that far ahead ----------------
def test_bookings_beyond_the_horizon_or_longer_than_allowed_are_refused(api, workspace, settings):
    assert (settings.BOOKING_HORIZON_DAYS, settings.BOOKING_MAX_HOURS) == (365, 24)  # the documented defaults
    far = hour_from_now(366)
    response = book(api, workspace, far, far + HOUR)
    assert response.status_code == 400 and response.json()["code"] == "invalid" and "start" in response.json(), (
        response.content
    )
    assert "365 days" in response.json()["detail"]
    edge = timezone.now() + dt.timedelta(days=365) - 30 * dt.timedelta(minutes=1)
    response = book(api, workspace, edge, edge + HOUR)  # starts inside the horizon, ends beyond it
    assert response.status_code == 400 and "end" in response.json(), response.content
    century = book(api, workspace, dt.datetime(1900, 1, 1, tzinfo=UTC), dt.datetime(2999, 12, 31, tzinfo=UTC))
    assert century.status_code == 400 and century.json()["code"] == "invalid"
    start = hour_from_now(2)
    response = book(api, workspace, start, start + 25 * HOUR)
    assert response.status_code == 400 and "end" in response.json() and "24 hours" in response.json()["detail"], (
        response.content
    )
    created = book(api, workspace, start, start + 24 * HOUR)
    assert created.status_code == 201, created.content
    path = f"/api/bookings/{created.json()['id']}/"
    response = api.patch(path, {"end": (start + 24 * HOUR + HOUR).isoformat()}, format="json")
    assert response.status_code == 400 and "end" in response.json()
    response = api.patch(path, {"start": far.isoformat(), "end": (far + HOUR).isoformat()}, format="json")
    assert response.status_code == 400 and "start" in response.json()
    assert api.patch(path, {"title": "Renamed"}, format="json").status_code == 200
    assert Booking.objects.get().end == start + 24 * HOUR


def test_the_horizon_and_length_are_settings(api, workspace, settings):
    settings.BOOKING_HORIZON_DAYS, settings.BOOKING_MAX_HOURS = 30, 2
    start = hour_from_now(31)
    assert book(api, workspace, start, start + HOUR).status_code == 400
    start = hour_from_now(1)
    assert book(api, workspace, start, start + 3 * HOUR).status_code == 400
    assert book(api, workspace, start, start + 2 * HOUR).status_code == 201


def test_room_calendars_are_read_as_far_ahead_as_bookings_can_be_made(fake, staff, workspace, api, run, settings):
    assert get_setting("PULL_WINDOW_DAYS") > settings.BOOKING_HORIZON_DAYS
    owner = room_owner(staff, fake, workspace, fake.room_account, run)
    at = hour_from_now(settings.BOOKING_HORIZON_DAYS - 2)
    fake.add_event(fake.room_account, at, at + 2 * HOUR, title="Board meeting")
    reads.pull(owner)
    created = book(api, workspace, at + HOUR, at + 3 * HOUR)
    assert created.status_code == 201, created.content
    response = run(api.post, f"/api/bookings/{created.json()['id']}/confirm/")
    assert response.status_code == 409 and response.json()["code"] == "overlap", response.content


def test_a_pull_whose_window_falls_short_reads_everything_again(fake, staff, workspace, run, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PULL_WINDOW_DAYS": 30}
    owner = room_owner(staff, fake, workspace, fake.room_account, run)  # a full read, 30 days ahead and a margin
    at = hour_from_now(60)
    fake.add_event(fake.room_account, at, at + HOUR, title="Board meeting")
    assert reads.pull(owner)["full"] is False and not BusyBlock.objects.exists()
    # Time passing (or a longer window) leaves the round's reach behind: a new full read, not changes.
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PULL_WINDOW_DAYS": 90}
    assert reads.pull(owner)["full"] is True
    assert BusyBlock.objects.filter(start=at).count() == 1
    assert reads.pull(owner)["full"] is False  # and incremental again after it


def test_a_pull_window_shorter_than_the_booking_horizon_fails_the_checks(settings):
    def ids():
        return {m.id for m in run_checks()}

    assert "bookings.E001" not in ids()
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PULL_WINDOW_DAYS": 180}
    assert "bookings.E001" in ids()
    settings.BOOKING_HORIZON_DAYS = 90
    assert "bookings.E001" not in ids()


# --- 3. Busy windows no calendar can hold are a 400 naming the field ---------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("0001-01-01T00:30:00+01:00", "0001-01-01T05:00:00+01:00", "start"),  # overflows going to UTC
        (
            "0001-01-01T00:00:00Z",
            "0001-01-02T00:00:00Z",
            "start",
        ),  # a year-1 UTC window: refused here, not by the provider
        ("9999-12-31T20:00:00-05:00", "9999-12-31T22:00:00-05:00", "start"),
        ("2030-01-01T00:00:00Z", "9999-12-31T23:30:00-01:00", "end"),
        ("9999-12-31T10:00:00+14:00", "9999-12-31T11:00:00+14:00", "start"),
        ("1899-12-31T23:00:00Z", "1900-01-01T01:00:00Z", "start"),
    ],
)
def test_busy_windows_no_calendar_can_hold_are_refused(google_connected, api, start, end, field):
    response = api.get(window(start, end))
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and field in body and body["detail"], body
    assert google_connected.calls() == []


def test_booking_dates_with_offsets_that_overflow_are_refused(api, workspace):
    for start, end in (
        ("0001-01-01T00:30:00+01:00", "0001-01-01T02:00:00+01:00"),
        ("9999-12-31T20:00:00-05:00", "9999-12-31T22:00:00-05:00"),
    ):
        response = api.post(
            "/api/bookings/", {"workspace": workspace.pk, "title": "x", "start": start, "end": end}, format="json"
        )
        assert response.status_code == 400 and response.json()["code"] == "invalid" and "start" in response.json(), (
            response.content
        )
    assert not Booking.objects.exists()


# --- 4. Graph time zones: never a local time Graph would read as another instant ---------------------------
def graph_instants(value):
    """Every instant Graph could read from a dateTimeTimeZone: the Windows zone's rules are those of
    its CLDR territory-001 zone (the zone CLDR maps the Windows name back to)."""
    name = value["timeZone"]
    local = dt.datetime.fromisoformat(value["dateTime"])
    rules = UTC if name == "UTC" else ZoneInfo(win_tz[name])
    return {local.replace(tzinfo=rules, fold=fold).astimezone(UTC) for fold in (0, 1)}


def test_graph_reads_every_booking_at_its_instant_in_every_zone():
    provider = MicrosoftProvider()
    first = timezone.now().replace(minute=0, second=0, microsecond=0)
    instants = [
        first + dt.timedelta(days=7 * week, hours=week) for week in range(53)
    ]  # a year, weekly, at shifting hours
    utc_zones = set()
    for zone in sorted(zoneinfo.available_timezones()):
        for start in instants:
            event = Event(summary="Desk", start=start, end=start + 2 * HOUR, time_zone=zone)
            body = provider.event_body(Operation(key="k" * 20, event=event, object_ref="booking:1"))
            for field, instant in (("start", event.start), ("end", event.end)):
                assert body[field]["timeZone"] == "UTC" or body[field]["timeZone"] in win_tz, (zone, body[field])
                assert graph_instants(body[field]) == {instant}, (zone, start, body[field])
            assert body["start"]["timeZone"] == body["end"]["timeZone"]
            if body["start"]["timeZone"] == "UTC":
                utc_zones.add(zone)
    assert {"America/Scoresbysund", "Antarctica/Casey", "Antarctica/Vostok"} <= utc_zones
    assert (
        not {"Europe/Lisbon", "America/New_York", "Asia/Kolkata", "Australia/Sydney"} & utc_zones
    )  # Windows names where they agree


def test_an_outlook_booking_in_scoresbysund_lands_at_its_instant(fake_microsoft, api, member, run):
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    workspace = Workspace.objects.create(name="Ittoqqortoormiit", time_zone="America/Scoresbysund")
    start = hour_from_now(3)
    booking = Booking.objects.create(user=member, workspace=workspace, title="Desk", start=start, end=start + HOUR)
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    [event] = fake_microsoft.events(MS_ACCOUNT).values()
    assert graph_instants(event["start"]) == {start} and graph_instants(event["end"]) == {start + HOUR}


# --- 5. Google incremental reads repeat the initial full read's parameters ---------------------------------
PAGING = {"syncToken", "pageToken", "timeMin", "timeMax"}


def test_google_incremental_reads_send_the_full_reads_parameters(fake_google, staff, workspace, run):
    owner = room_owner(staff, fake_google, workspace, "rooms@example.com", run)  # the initial full read
    at = hour_from_now(3)
    outside = fake_google.add_event("rooms@example.com", at, at + HOUR)
    assert reads.pull(owner)["full"] is False
    assert BusyBlock.objects.get().remote_id == outside
    fake_google.delete_event("rooms@example.com", outside)
    assert reads.pull(owner)["full"] is False and not BusyBlock.objects.exists()
    full, *incremental = (c["query"] for c in fake_google.calls("rooms@example.com") if c["path"].endswith("/events"))
    assert "syncToken" not in full and len(incremental) == 2
    for query in incremental:
        assert "syncToken" in query
        assert {k: v for k, v in query.items() if k not in PAGING} == {k: v for k, v in full.items() if k not in PAGING}


def test_fake_google_refuses_an_incremental_read_whose_parameters_differ(fake_google, api, run):
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    access = next(token for token, info in fake_google.access_tokens.items() if info["account"] == GOOGLE_ACCOUNT)
    url = f"{fake_google.url}calendar/v3/calendars/primary/events"

    def get(**params):
        return requests.get(url, params=params, headers={"Authorization": f"Bearer {access}"}, timeout=10)

    first = get(timeMin="2030-01-01T00:00:00Z", singleEvents="true", showDeleted="false", maxResults="10").json()
    sync = first["nextSyncToken"]
    for changed in (
        {"showDeleted": "true", "singleEvents": "true"},
        {"singleEvents": "false"},
        {},
        {"singleEvents": "true", "showHiddenInvitations": "true"},
    ):
        answer = get(syncToken=sync, **changed)
        assert answer.status_code == 400 and answer.json()["error"]["errors"][0]["reason"] == "invalid", (
            changed,
            answer.text,
        )
    same = get(syncToken=sync, singleEvents="true", showDeleted="false")  # "false" is refused alongside a syncToken
    assert same.status_code == 400
    both = get(timeMin="2030-01-01T00:00:00Z", singleEvents="true", showDeleted="true").json()["nextSyncToken"]
    assert get(syncToken=both, singleEvents="true", showDeleted="true", maxResults="5").status_code == 200


# --- 6. One iCal feed per member, however many requests race -----------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_parallel_feed_creations_give_one_feed_and_one_url(member):
    answers, barrier = [], threading.Barrier(6)

    def create():
        barrier.wait()
        try:
            answers.append(client_for(member).post("/api/calendar-sync/ical"))
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.content for a in answers]
    urls = {a.json()["url"] for a in answers}
    assert len(urls) == 1 and CalendarFeed.objects.filter(user=member).count() == 1
    assert client_for(None).get(urls.pop().removeprefix("http://testserver")).status_code == 200


# --- 7. Owner ids are canonical ----------------------------------------------------------------------------
def test_only_the_owners_own_id_addresses_it(staff, workspace):
    staff_api = client_for(staff)
    pk = str(workspace.pk)
    assert staff_api.get(f"/api/calendar-sync/shared/workspace/{pk}/status").status_code == 200
    for alias in (f"0{pk}", f"00{pk}", f"0_{pk}", f"0_0{pk}"):
        for path in ("status", "calendars", "auth/google"):
            response = staff_api.get(f"/api/calendar-sync/shared/workspace/{alias}/{path}")
            assert response.status_code == 404, (alias, path, response.content)
        assert staff_api.post(f"/api/calendar-sync/shared/workspace/{alias}/resync").status_code == 404
    with pytest.raises(ValueError):
        parse_owner(f"workspace:0{pk}")


# --- 8. Busy answers belong to the connection that read them -----------------------------------------------
def test_busy_answers_are_never_served_from_a_previous_connection(fake_google, api, run):
    fake_google.add_account("second@example.com")
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    start = hour_from_now(2)
    fake_google.add_event(GOOGLE_ACCOUNT, start, start + HOUR, title="Old account's meeting")
    query = window(start.isoformat(), (start + DAY).isoformat())
    assert len(api.get(query).json()["busy"]) == 1
    assert api.delete("/api/calendar-sync/disconnect").status_code in (200, 204)
    assert landing(run(connect, api, fake_google, account="second@example.com"))["calendar_sync"] == "connected"
    assert api.get(query).json()["busy"] == []
    # Reconnecting to another account without disconnecting first: a new grant, a fresh read too.
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    assert len(api.get(query).json()["busy"]) == 1
