"""Recurring events made outside ManageHub count as their occurrences, exceptions included, in busy
times and room pulls, on every provider; the occurrences of a series this app wrote stay ours."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from calendar_sync import flows, reads, tasks
from calendar_sync.models import BusyBlock, SyncRecord
from calendar_sync.owners import Owner
from calendar_sync.providers import get_provider
from calendar_sync.providers.google import MARKER, GoogleProvider
from calendar_sync.providers.ics import credential
from calendar_sync.providers.microsoft import MicrosoftProvider
from tests.caldav_servers import IcsServer, Radicale
from tests.helpers import MS_REDIRECT, REDIRECT, connect, room_on
from tests.test_provider_reads import connected
from tests.test_series import make_series, next_monday

pytestmark = pytest.mark.django_db
UTC, LISBON = dt.UTC, ZoneInfo("Europe/Lisbon")
HOUR = dt.timedelta(hours=1)
#: Mondays at 09:00 Lisbon; Lisbon leaves summer time on 27 October 2030, between the 3rd and 4th.
FIRST = dt.datetime(2030, 10, 7, 9, tzinfo=LISBON)
WINDOW = (FIRST - dt.timedelta(days=1), FIRST + dt.timedelta(weeks=8))


def nth(n, first=FIRST):
    """The n-th occurrence (from 0) of a weekly rule starting at `first`, in wall-clock time."""
    return (first.replace(tzinfo=None) + dt.timedelta(weeks=n)).replace(tzinfo=first.tzinfo)


def outside_series(fake, account, first=FIRST, count=6, calendar=None):
    """A person's weekly event with the 2nd occurrence cancelled and the 3rd moved to 14:00:
    (master id, the expected busy spans in UTC)."""
    master = fake.add_recurring_event(
        account,
        first,
        first + HOUR,
        f"FREQ=WEEKLY;COUNT={count}",
        title="Yoga",
        calendar=calendar,
        time_zone="Europe/Lisbon",
    )
    fake.change_occurrence(account, master, nth(1, first), cancel=True, calendar=calendar)
    moved = nth(2, first) + dt.timedelta(hours=5)
    fake.change_occurrence(account, master, nth(2, first), start=moved, end=moved + HOUR, calendar=calendar)
    spans = [(nth(n, first), nth(n, first) + HOUR) for n in range(count) if n not in (1, 2)] + [(moved, moved + HOUR)]
    return master, sorted((s.astimezone(UTC), e.astimezone(UTC)) for s, e in spans)


def spans(blocks):
    return sorted((b.start, b.end) for b in blocks)


# --- the providers' reads, against both fakes -------------------------------------------------
@pytest.fixture(params=["google", "microsoft"])
def side(request, settings, google_server, microsoft_server):
    """A fake reset with its default account connected (`connected` of the provider read tests)."""
    if request.param == "google":
        return connected(google_server, GoogleProvider(), settings, REDIRECT)
    return connected(microsoft_server, MicrosoftProvider(), settings, MS_REDIRECT)


def test_busy_is_the_occurrences_with_their_exceptions_at_nine_lisbon(side):
    master, expected = outside_series(side.fake, side.account)
    blocks = side.provider.busy(side.token, "primary", *WINDOW)
    assert spans(blocks) == expected and len(blocks) == 5
    assert {b.series_id for b in blocks} == {master} and not any(b.ours for b in blocks)
    assert len({b.remote_id for b in blocks}) == 5  # each occurrence is its own block
    local = sorted(b.start.astimezone(LISBON) for b in blocks)
    assert [t.hour for t in local] == [9, 14, 9, 9, 9] and len({t.utcoffset() for t in local}) == 2
    assert {b.summary for b in blocks} == {"Yoga"}


def test_changes_follow_occurrences_cancelled_and_moved_later(side):
    master, expected = outside_series(side.fake, side.account)
    first = side.provider.changes(side.token, "primary", None, *WINDOW)
    assert first.full and spans(first.blocks) == expected
    ids = {b.start: b.remote_id for b in first.blocks}
    fourth, fifth = nth(3).astimezone(UTC), nth(4).astimezone(UTC)
    side.fake.change_occurrence(side.account, master, nth(3), cancel=True)
    later = nth(4) + dt.timedelta(hours=2)
    side.fake.change_occurrence(side.account, master, nth(4), start=later, end=later + HOUR)
    second = side.provider.changes(side.token, "primary", first.cursor, *WINDOW)
    assert not second.full
    assert ids[fourth] in second.removed
    moved = [b for b in second.blocks if b.remote_id == ids[fifth]]
    assert [(b.start, b.end) for b in moved] == [(later.astimezone(UTC), (later + HOUR).astimezone(UTC))]


def test_google_instances_of_our_recurring_event_are_ours(settings, google_server):
    """Google copies the master's extended properties onto each instance."""
    gside = connected(google_server, GoogleProvider(), settings, REDIRECT)
    master, _ = outside_series(google_server, gside.account)
    google_server.update_event(gside.account, master, extendedProperties={"private": {MARKER: "booking:1"}})
    blocks = gside.provider.busy(gside.token, "primary", *WINDOW)
    assert len(blocks) == 5 and all(b.ours for b in blocks)


# --- busy times and room pulls: ours known by the series' master -----------------------------
@pytest.fixture(params=["google", "microsoft"])
def fake(request, fake_google, fake_microsoft):
    return fake_google if request.param == "google" else fake_microsoft


def written_by_us(owner, remote_id, destination="workspace"):
    """The sync record this app keeps for an event it wrote (here: a series' recurring event)."""
    SyncRecord.objects.create(
        source="booking",
        object_id="00000000-0000-0000-0000-000000000001",
        destination=destination,
        remote_id=remote_id,
        **owner.lookup(),
    )


def test_a_room_pull_stores_each_occurrence_and_leaves_our_series_out(fake, staff, workspace, run):
    room = room_on(fake, staff, workspace)
    owner = Owner("workspace", str(workspace.pk))
    first = next_monday()
    account = fake.room_account
    theirs, expected = outside_series(fake, account, first=first, count=30)  # across March's clock change
    ours = fake.add_recurring_event(account, first + 3 * HOUR, first + 4 * HOUR, "FREQ=DAILY;COUNT=20", title="Ours")
    written_by_us(owner, ours)
    assert room.token.is_active
    result = reads.pull(owner)
    assert result["full"] and result["blocks"] == len(expected) == 29
    stored = BusyBlock.objects.filter(**owner.lookup())
    assert sorted((b.start, b.end) for b in stored) == expected
    assert {b.start.astimezone(LISBON).hour for b in stored} == {9, 14}
    window = (first - dt.timedelta(days=1), first + dt.timedelta(days=400))
    assert [(b.start, b.end) for b in reads.external_busy(owner, *window)] == expected
    # a later occurrence cancelled in the room's calendar frees that day here
    fake.change_occurrence(account, theirs, nth(5, first), cancel=True)
    assert reads.pull(owner)["full"] is False
    assert len(reads.external_busy(owner, *window)) == 28


def test_a_members_busy_times_show_an_outside_series_but_not_ours(fake, api, member, run):
    connect(api, fake)
    first = next_monday()
    account = fake.default_account
    _, expected = outside_series(fake, account, first=first, count=4)
    ours = fake.add_recurring_event(account, first + 3 * HOUR, first + 4 * HOUR, "FREQ=DAILY;COUNT=5", title="Ours")
    written_by_us(Owner.member(member.pk), ours, destination="member")
    window = {"start": (first - dt.timedelta(days=1)).isoformat(), "end": (first + dt.timedelta(weeks=5)).isoformat()}
    response = api.get("/api/calendar-sync/busy", window)
    assert response.status_code == 200, response.content
    busy = [
        (dt.datetime.fromisoformat(b["start"]), dt.datetime.fromisoformat(b["end"])) for b in response.json()["busy"]
    ]
    assert sorted(busy) == expected


# --- CalDAV (Radicale) and ICS links: expanded here, ours by UID -------------------------------
OUTSIDE_SERIES = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//phone//EN
BEGIN:VTIMEZONE
TZID:Europe/Lisbon
BEGIN:STANDARD
DTSTART:19961027T020000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZOFFSETFROM:+0100
TZOFFSETTO:+0000
TZNAME:WET
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19960331T010000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZOFFSETFROM:+0000
TZOFFSETTO:+0100
TZNAME:WEST
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Lisbon:{first}
DTEND;TZID=Europe/Lisbon:{first_end}
RRULE:FREQ=WEEKLY;COUNT={count}
EXDATE;TZID=Europe/Lisbon:{cancelled}
SUMMARY:{title}
END:VEVENT
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Lisbon:{original}
DTSTART;TZID=Europe/Lisbon:{moved}
DTEND;TZID=Europe/Lisbon:{moved_end}
SUMMARY:{title}
END:VEVENT
END:VCALENDAR
"""


def ics_series(first, count, uid, title="Yoga"):
    """The same series as `outside_series` written as iCalendar: (text, expected busy spans in UTC)."""

    def local(moment):
        return moment.astimezone(LISBON).strftime("%Y%m%dT%H%M%S")

    moved = nth(2, first) + dt.timedelta(hours=5)
    text = OUTSIDE_SERIES.format(
        uid=uid,
        title=title,
        count=count,
        first=local(first),
        first_end=local(first + HOUR),
        cancelled=local(nth(1, first)),
        original=local(nth(2, first)),
        moved=local(moved),
        moved_end=local(moved + HOUR),
    )
    spans_ = [(nth(n, first), nth(n, first) + HOUR) for n in range(count) if n not in (1, 2)] + [(moved, moved + HOUR)]
    return text, sorted((s.astimezone(UTC), e.astimezone(UTC)) for s, e in spans_)


@pytest.fixture(scope="module")
def radicale():
    with Radicale() as running:
        yield running


@pytest.fixture
def private_ok(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}


def test_a_caldav_room_pull_expands_an_outside_series_and_knows_ours(radicale, private_ok, staff, workspace, run):
    first = next_monday()
    theirs, expected = ics_series(first, 30, "yoga-1@phone")
    ours, _ = ics_series(first + 3 * HOUR, 10, "k3ys0fours3r13s@calendar-sync", title="Ours")
    calendar = radicale.calendar()
    try:
        calendar.save_event(theirs)
        calendar.save_event(ours)
        owner = Owner("workspace", str(workspace.pk))
        token, work = flows.connect_caldav(owner, staff, radicale.url, radicale.username, radicale.password)
        run(tasks.schedule, work)
        window = (first - dt.timedelta(days=1), first + dt.timedelta(days=400))
        assert [(b.start, b.end) for b in reads.external_busy(owner, *window)] == expected
        blocks = get_provider("caldav").busy(token.access_token, token.calendar_id, *window)
        assert {b.summary for b in blocks if b.ours} == {"Ours"} and len([b for b in blocks if b.ours]) == 9
        # the phone cancels one more occurrence: the next (incremental) pull frees that day
        stamp = nth(5, first).astimezone(LISBON).strftime("%Y%m%dT%H%M%S")
        event = calendar.event_by_uid("yoga-1@phone")
        event.data = event.data.replace("EXDATE;TZID=Europe/Lisbon:", f"EXDATE;TZID=Europe/Lisbon:{stamp},")
        event.save()
        assert reads.pull(owner)["full"] is False
        later = [(b.start, b.end) for b in reads.external_busy(owner, *window)]
        assert len(later) == 28 and nth(5, first).astimezone(UTC) not in [s for s, _ in later]
    finally:
        for obj in calendar.events():
            obj.delete()


def test_an_ics_link_expands_a_series_with_its_exceptions(private_ok):
    theirs, expected = ics_series(FIRST, 6, "yoga-1@phone")
    feed = IcsServer(theirs.encode())
    try:
        blocks = get_provider("ics").busy(credential(feed.url), "primary", *WINDOW)
    finally:
        feed.close()
    assert spans(blocks) == expected and not any(b.ours for b in blocks)


def test_a_members_own_feed_subscribed_as_an_ics_link_is_all_ours(api, workspace, private_ok):
    """The iCal feed's recurring event, read back as an ICS link, never counts against its member."""
    series = make_series(api, workspace, rule="FREQ=WEEKLY;COUNT=10")
    assert api.post(f"/api/bookings/series/{series['id']}/confirm/").status_code == 200
    path = api.post("/api/calendar-sync/ical").json()["url"].removeprefix("http://testserver")
    body = api.get(path).content
    feed = IcsServer(body)
    try:
        now = timezone.now()
        blocks = get_provider("ics").busy(credential(feed.url), "primary", now, now + dt.timedelta(weeks=12))
    finally:
        feed.close()
    assert len(blocks) == 10 and all(b.ours for b in blocks)


def test_occurrences_pulled_before_our_series_id_was_known_never_block_the_room(fake_microsoft, staff, workspace):
    """A lost answer to the create of a series: the next pull imports its occurrences as someone
    else's; once the series' id is recorded they no longer count, before any other pull."""
    room_on(fake_microsoft, staff, workspace)
    owner = Owner("workspace", str(workspace.pk))
    first = next_monday()
    ours = fake_microsoft.add_recurring_event(
        fake_microsoft.room_account, first, first + HOUR, "FREQ=DAILY;COUNT=5", title="Ours"
    )
    assert reads.pull(owner)["blocks"] == 5
    window = (first - dt.timedelta(days=1), first + dt.timedelta(days=10))
    assert len(reads.external_busy(owner, *window)) == 5
    assert set(BusyBlock.objects.values_list("series_id", flat=True)) == {ours}
    written_by_us(owner, ours)
    assert reads.external_busy(owner, *window) == []
    assert reads.pull(owner)["full"] is False and reads.external_busy(owner, *window) == []
