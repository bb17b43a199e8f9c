"""A series is one recurring event per calendar (design decision 22): one create for 52 occurrences,
one call per moved or cancelled occurrence, one per series-wide change, none on a re-run; 09:00 stays
09:00 Lisbon across both daylight-saving changes. Real HTTP against both fakes."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import reads, sync
from calendar_sync.models import BusyBlock, SeriesRecord, SyncRecord
from calendar_sync.owners import Owner
from calendar_sync.providers.google import GoogleProvider
from calendar_sync.reads import external_busy
from tests.helpers import (
    GOOGLE_ACCOUNT,
    LISBON,
    MS_ACCOUNT,
    ROOM_ACCOUNT,
    client_for,
    connect,
    connect_room,
    landing,
    next_monday,
)

pytestmark = pytest.mark.django_db
URL = "/api/bookings/series/"


@pytest.fixture(params=["google", "microsoft"])
def calendar(request, api, run):
    """The member connected to Google or Outlook: (fake, account), the call log empty."""
    fake = request.getfixturevalue("fake_google" if request.param == "google" else "fake_microsoft")
    assert landing(run(connect, api, fake))["calendar_sync"] == "connected"
    fake.reset_log()
    return fake, GOOGLE_ACCOUNT if request.param == "google" else MS_ACCOUNT


def make_series(api, workspace, run, count=52, **extra):
    start = next_monday()
    body = {
        "workspace": workspace.pk,
        "title": "Team room",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "rule": f"FREQ=WEEKLY;COUNT={count}",
        **extra,
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    series = response.json()
    assert run(api.post, f"{URL}{series['id']}/confirm/").status_code == 200
    return series


def move_later(api, run, occurrence, hours):
    """Move one occurrence `hours` later through the API (an hour long); its new start."""
    start = datetime.fromisoformat(occurrence["start"]) + timedelta(hours=hours)
    moved = run(
        api.patch,
        f"/api/bookings/{occurrence['id']}/",
        {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    return start


def writes(fake, account):
    """Calendar writes (reads of instances to find one are lookups, not counted as writes)."""
    return [c for c in fake.calls(account) if c["method"] != "GET"]


def masters(fake, account, calendar=None):
    """The events of a calendar, an exception to a recurring one not counted apart (it is an instance)."""
    events = fake.events(account, calendar)
    return {k: v for k, v in events.items() if not v.get("recurringEventId") and not v.get("seriesMasterId")}


def the_event(fake, account):
    events = masters(fake, account)
    assert len(events) == 1, events
    return next(iter(events))


def local_times(rows):
    return {(s.astimezone(LISBON).strftime("%a %H:%M"), e.astimezone(LISBON).strftime("%H:%M")) for s, e, _ in rows}


def test_a_weekly_series_of_52_is_one_event_at_nine_lisbon_made_by_one_call(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    event_id = the_event(fake, account)
    assert len(writes(fake, account)) == 1  # one create; the other 51 occurrences cost nothing
    rows = fake.expand(account, event_id)
    assert len(rows) == 52
    assert local_times(rows) == {("Mon 09:00", "10:00")}
    assert {s.astimezone(LISBON).utcoffset() for s, _, _ in rows} == {timedelta(0), timedelta(hours=1)}
    assert [s for s, _, _ in rows] == sorted(
        datetime.fromisoformat(b["start"]).astimezone(UTC) for b in series["bookings"]
    )
    assert {title for _, _, title in rows} == {"Team room — The Loft"}
    states = {r.state for r in SyncRecord.objects.filter(destination="member")}
    assert states == {"synced"} and SyncRecord.objects.filter(destination="member").count() == 52


def test_re_running_every_task_calls_nothing(calendar, api, workspace, run):
    fake, account = calendar
    make_series(api, workspace, run)
    fake.reset_log()
    SyncRecord.objects.update(state="pending", version=1000)
    for record in SyncRecord.objects.filter(destination="member"):
        assert sync.sync_object("booking", record.object_id, "member") == "synced"
    assert fake.calls(account) == []


def test_moving_one_occurrence_is_one_write_and_shows_in_the_expansion(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    event_id = the_event(fake, account)
    fake.reset_log()
    tenth = series["bookings"][9]
    start = move_later(api, run, tenth, hours=2)
    assert len(writes(fake, account)) == 1
    rows = fake.expand(account, event_id)
    assert len(rows) == 52 and rows[9][0] == start.astimezone(UTC)
    assert local_times(rows[:9] + rows[10:]) == {("Mon 09:00", "10:00")}
    assert the_event(fake, account) == event_id


def test_cancelling_one_occurrence_is_one_write(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    event_id = the_event(fake, account)
    fake.reset_log()
    eleventh = series["bookings"][10]
    assert run(api.post, f"/api/bookings/{eleventh['id']}/cancel/").status_code == 200
    assert len(writes(fake, account)) == 1
    rows = fake.expand(account, event_id)
    assert len(rows) == 51
    assert datetime.fromisoformat(eleventh["start"]).astimezone(UTC) not in {s for s, _, _ in rows}


def test_retitling_the_series_is_one_write(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    event_id = the_event(fake, account)
    fake.reset_log()
    response = run(api.patch, f"{URL}{series['id']}/", {"title": "Board room"}, format="json")
    assert response.status_code == 200, response.content
    assert len(writes(fake, account)) == 1
    assert {title for _, _, title in fake.expand(account, event_id)} == {"Board room — The Loft"}


def test_a_new_time_of_day_for_the_series_is_one_write(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    event_id = the_event(fake, account)
    fake.reset_log()
    response = run(api.patch, f"{URL}{series['id']}/", {"start_time": "14:00", "end_time": "15:30"}, format="json")
    assert response.status_code == 200, response.content
    assert len(writes(fake, account)) == 1
    rows = fake.expand(account, event_id)
    assert len(rows) == 52 and local_times(rows) == {("Mon 14:00", "15:30")}


def test_cancelling_from_the_fortieth_ends_the_series_in_one_write(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    event_id = the_event(fake, account)
    fake.reset_log()
    fortieth = series["bookings"][39]
    response = run(api.post, f"{URL}{series['id']}/cancel/", {"from": fortieth["id"]}, format="json")
    assert response.status_code == 200, response.content
    assert len(writes(fake, account)) == 1
    rows = fake.expand(account, event_id)
    assert len(rows) == 39
    assert rows[-1][0] == datetime.fromisoformat(series["bookings"][38]["start"]).astimezone(UTC)


def test_cancelling_every_occurrence_deletes_the_event_in_one_write(calendar, api, workspace, run):
    fake, account = calendar
    series = make_series(api, workspace, run)
    fake.reset_log()
    assert run(api.post, f"{URL}{series['id']}/cancel/").status_code == 200
    assert len(writes(fake, account)) == 1
    assert masters(fake, account) == {}
    assert not SeriesRecord.objects.get(destination="member").remote_may_exist


def test_a_lost_answer_to_the_create_still_leaves_one_series(calendar, api, workspace, run):
    fake, account = calendar
    fake.lose_response()  # the series' event is made; the answer never arrives
    make_series(api, workspace, run)
    for record in SyncRecord.objects.filter(state="pending"):  # what the task's retry does
        assert sync.sync_object("booking", record.object_id, "member") == "synced"
    for record in SyncRecord.objects.all():  # and a duplicate delivery of each
        sync.sync_object("booking", record.object_id, "member")
    assert {r.state for r in SyncRecord.objects.filter(destination="member")} == {"synced"}
    assert len(fake.expand(account, the_event(fake, account))) == 52
    creates = [c for c in fake.calls(account) if c["method"] == "POST"]
    assert (
        fake.lost == 0 and len(creates) <= 2
    )  # the lost one, and at most one retried create the service de-duplicated


def test_a_room_calendar_gets_the_series_as_one_event(fake_google, api, staff, workspace, run):
    fake_google.add_account(ROOM_ACCOUNT)
    response = run(connect_room, client_for(staff), fake_google, workspace, ROOM_ACCOUNT)
    assert "calendar_sync=connected" in response["Location"]
    fake_google.reset_log()
    make_series(api, workspace, run)
    rooms = fake_google.events(ROOM_ACCOUNT)
    assert len(rooms) == 1
    rows = fake_google.expand(ROOM_ACCOUNT, next(iter(rooms)))
    assert len(rows) == 52 and local_times(rows) == {("Mon 09:00", "10:00")}
    assert {title for _, _, title in rows} == {"Team room — alice"}
    assert len(writes(fake_google, ROOM_ACCOUNT)) == 1
    # The room's pull never takes the series' own instances for bookings made outside.
    reads.pull(Owner("workspace", workspace.pk))
    assert not BusyBlock.objects.exists()


def test_a_series_in_an_outlook_room_is_one_event_and_never_blocks_the_room(fake_microsoft, api, staff, workspace, run):
    room = "rooms@contoso.com"
    response = run(connect_room, client_for(staff), fake_microsoft, workspace, room)
    assert "calendar_sync=connected" in response["Location"]
    fake_microsoft.reset_log()
    make_series(api, workspace, run)
    events = fake_microsoft.events(room)
    assert len(events) == 1 and len(writes(fake_microsoft, room)) == 1
    rows = fake_microsoft.expand(room, next(iter(events)))
    assert len(rows) == 52 and local_times(rows) == {("Mon 09:00", "10:00")}
    reads.pull(Owner("workspace", workspace.pk))
    assert not external_busy(Owner("workspace", workspace.pk), rows[0][0], rows[-1][1])


def test_a_calendar_move_takes_the_series_along(fake_google, api, workspace, run):
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    make_series(api, workspace, run)
    team = "team@group.calendar.google.com"
    response = run(api.put, "/api/calendar-sync/calendar", {"calendar_id": team}, format="json")
    assert response.status_code == 200, response.content
    assert fake_google.events(GOOGLE_ACCOUNT) == {}
    moved = fake_google.events(GOOGLE_ACCOUNT, team)
    assert len(moved) == 1 and len(fake_google.expand(GOOGLE_ACCOUNT, next(iter(moved)), team)) == 52


def test_occurrences_synced_one_by_one_before_become_the_one_series(fake_google, api, workspace, run, monkeypatch):
    """A calendar that got each occurrence as an event of its own (a provider that writes no series, or
    a release before series) gets the one series on the next sync: each old event deleted once."""
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    monkeypatch.setattr(GoogleProvider, "supports_series", False)
    make_series(api, workspace, run, count=5)
    assert len(fake_google.events(GOOGLE_ACCOUNT)) == 5
    monkeypatch.undo()
    fake_google.reset_log()
    for record in SyncRecord.objects.filter(destination="member"):
        SyncRecord.objects.filter(pk=record.pk).update(version=record.version + 1, state="pending")
        assert sync.sync_object("booking", record.object_id, "member") == "synced"
    events = fake_google.events(GOOGLE_ACCOUNT)
    assert len(events) == 1 and len(fake_google.expand(GOOGLE_ACCOUNT, next(iter(events)))) == 5
    assert sorted(c["method"] for c in writes(fake_google, GOOGLE_ACCOUNT)) == ["DELETE"] * 5 + ["POST"]


def test_dates_left_out_of_a_series_are_cancelled_instances(calendar, api, workspace, run, other):
    fake, account = calendar
    taken = [next_monday() + timedelta(weeks=week) for week in (3, 7)]
    for start in taken:
        Booking.objects.create(
            user=other,
            workspace=workspace,
            title="Theirs",
            start=start,
            end=start + timedelta(hours=1),
            status="confirmed",
        )
    series = make_series(api, workspace, run, skip_conflicts=True)
    assert len(series["bookings"]) == 50
    event_id = the_event(fake, account)
    rows = fake.expand(account, event_id)
    assert len(rows) == 50 and not {t.astimezone(UTC) for t in taken} & {s for s, _, _ in rows}
    assert len(writes(fake, account)) == 3  # the series' event, and each date left out cancelled once
    fake.reset_log()
    SyncRecord.objects.update(state="pending", version=1000)
    for booking in series["bookings"]:
        assert sync.sync_object("booking", booking["id"], "member") == "synced"
    assert fake.calls(account) == []


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_connecting_after_the_series_was_confirmed_writes_it_once(provider, request, api, workspace, run):
    fake = request.getfixturevalue("fake_google" if provider == "google" else "fake_microsoft")
    account = GOOGLE_ACCOUNT if provider == "google" else MS_ACCOUNT
    make_series(api, workspace, run)
    assert landing(run(connect, api, fake))["calendar_sync"] == "connected"  # the backfill
    assert len(writes(fake, account)) == 1
    assert len(fake.expand(account, the_event(fake, account))) == 52
    assert {r.state for r in SyncRecord.objects.filter(destination="member")} == {"synced"}


def test_a_series_event_deleted_in_the_calendar_comes_back_with_the_next_change(calendar, api, workspace, run):
    """A 404 on an instance means the series' event is not as written: it is written again, then the instance."""
    fake, account = calendar
    series = make_series(api, workspace, run)
    fake.delete_event(account, the_event(fake, account))
    fake.reset_log()
    tenth = series["bookings"][9]
    start = move_later(api, run, tenth, hours=2)
    rows = fake.expand(account, the_event(fake, account))
    assert len(rows) == 52 and rows[9][0] == start.astimezone(UTC)
    assert SyncRecord.objects.get(object_id=tenth["id"], destination="member").state == "synced"
    assert len(writes(fake, account)) <= 4  # the refused instance, the series' event again, the instance


@pytest.mark.parametrize(
    "rule, first",
    [
        ("FREQ=WEEKLY;BYDAY=MO,TH;COUNT=20", 0),
        ("FREQ=WEEKLY;INTERVAL=2;UNTIL={until}", 0),
        ("FREQ=DAILY;INTERVAL=3;COUNT=30", 0),
        ("FREQ=MONTHLY;BYDAY=1MO;COUNT=12", "1MO"),
        ("FREQ=MONTHLY;COUNT=12", 0),
    ],
)
def test_every_kind_of_rule_expands_as_the_series_does(calendar, api, workspace, run, rule, first):
    """The rule as each calendar says it (Google's RRULE, Graph's pattern and range) makes exactly the
    occurrences the series made, at their local times."""
    fake, account = calendar
    start = next_monday()
    if first == "1MO":  # the first Monday of a month
        day = start.date().replace(day=1)
        start = datetime.combine(day + timedelta(days=(7 - day.weekday()) % 7), time(9), tzinfo=LISBON)
        if start <= timezone.now():
            day = (start.date().replace(day=28) + timedelta(days=4)).replace(day=1)
            start = datetime.combine(day + timedelta(days=(7 - day.weekday()) % 7), time(9), tzinfo=LISBON)
    until = (start + timedelta(weeks=30)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    body = {
        "workspace": workspace.pk,
        "title": "Team room",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "rule": rule.format(until=until),
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    series = response.json()
    assert run(api.post, f"{URL}{series['id']}/confirm/").status_code == 200
    rows = fake.expand(account, the_event(fake, account))
    assert [s for s, _, _ in rows] == [datetime.fromisoformat(b["start"]).astimezone(UTC) for b in series["bookings"]]
    assert len(writes(fake, account)) == 1
