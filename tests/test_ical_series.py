"""The iCal feed holds a series as one recurring VEVENT: RRULE in the workspace's zone with its VTIMEZONE,
EXDATE for cancelled occurrences, RECURRENCE-ID overrides for moved or retitled ones."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events
from icalendar import Calendar

from bookings.models import Booking
from calendar_sync.models import CalendarFeed
from tests.helpers import client_for
from tests.test_series import URL, make_series, next_monday

pytestmark = pytest.mark.django_db
LISBON = ZoneInfo("Europe/Lisbon")


@pytest.fixture
def feed(api):
    return api.post("/api/calendar-sync/ical").json()["url"].removeprefix("http://testserver")


@pytest.fixture
def series(api, workspace):
    made = make_series(api, workspace, start=next_monday())  # weekly, 52 times, 09:00–10:00 Lisbon
    assert api.post(URL + f"{made['id']}/confirm/").status_code == 200
    return made


def read(path):
    response = client_for(None).get(path)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    return response, Calendar.from_ical(response.content)


def expand(cal):
    """Every occurrence of the feed, as a calendar app shows them."""
    start = datetime.now(UTC) - timedelta(days=1)
    return sorted(
        recurring_ical_events.of(cal).between(start, start + timedelta(days=800)), key=lambda e: e.decoded("DTSTART")
    )


def masters(cal):
    return [event for event in cal.walk("VEVENT") if "RRULE" in event]


def test_a_weekly_series_is_one_recurring_event_at_nine_lisbon_across_daylight_saving(feed, series):
    response, cal = read(feed)
    assert len(cal.walk("VEVENT")) == 1
    (master,) = masters(cal)
    assert master["DTSTART"].params["TZID"] == "Europe/Lisbon" and master["DTEND"].params["TZID"] == "Europe/Lisbon"
    assert master["RRULE"].to_ical() == b"FREQ=WEEKLY;COUNT=52"
    assert "EXDATE" not in master and str(master["SUMMARY"]) == "Team room — The Loft"
    # Google and Apple read the zone from a VTIMEZONE the feed carries, with both of Lisbon's offsets.
    (zone,) = cal.walk("VTIMEZONE")
    assert str(zone["TZID"]) == "Europe/Lisbon"
    assert {str(sub["TZNAME"]) for sub in zone.subcomponents} >= {"WET", "WEST"}
    occurrences = expand(cal)
    assert len(occurrences) == 52
    local = [e.decoded("DTSTART").astimezone(LISBON) for e in occurrences]
    assert {(t.time(), t.weekday()) for t in local} == {(time(9), 0)}
    assert {e.decoded("DTEND").astimezone(LISBON).time() for e in occurrences} == {time(10)}
    assert len({t.utcoffset() for t in local}) == 2  # it does cross the daylight-saving changes
    bookings = Booking.objects.filter(series_id=series["id"]).order_by("start")
    assert [e.decoded("DTSTART") for e in occurrences] == [b.start for b in bookings]
    # the UID is the series', the same on every render
    assert str(master["UID"]).endswith("@calendar-sync")
    assert str(read(feed)[1].walk("VEVENT")[0]["UID"]) == str(master["UID"])


def test_cancelled_and_moved_occurrences_are_exdate_and_recurrence_id(api, feed, series):
    ids = [b["id"] for b in series["bookings"]]
    first, _ = read(feed)
    assert api.post(f"/api/bookings/{ids[10]}/cancel/").status_code == 200  # occurrence 11
    cancelled, cal = read(feed)
    assert cancelled["ETag"] != first["ETag"]
    (master,) = masters(cal)
    eleventh = Booking.objects.get(pk=ids[10]).series_start
    assert [d.dt for d in master["EXDATE"].dts] == [eleventh.astimezone(LISBON)]
    assert master["EXDATE"].params["TZID"] == "Europe/Lisbon"
    assert len(expand(cal)) == 51 and eleventh not in [e.decoded("DTSTART") for e in expand(cal)]

    tenth = Booking.objects.get(pk=ids[9])
    moved_to = tenth.start + timedelta(hours=5)  # 14:00–15:00 the same day
    response = api.patch(
        f"/api/bookings/{ids[9]}/",
        {"start": moved_to.isoformat(), "end": (moved_to + timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert response.status_code == 200, response.content
    moved, cal = read(feed)
    assert moved["ETag"] != cancelled["ETag"]
    assert len(masters(cal)) == 1 and len({str(e["UID"]) for e in cal.walk("VEVENT")}) == 1
    (override,) = [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" in e]
    assert override.decoded("RECURRENCE-ID") == tenth.series_start
    assert override["RECURRENCE-ID"].params["TZID"] == "Europe/Lisbon"
    assert override.decoded("DTSTART") == moved_to and override.decoded("DTSTART").astimezone(LISBON).hour == 14
    occurrences = expand(cal)
    assert len(occurrences) == 51
    starts = [e.decoded("DTSTART") for e in occurrences]
    assert moved_to in starts and tenth.series_start not in starts

    # cancelling from occurrence 40: the expansion ends at 39
    assert api.post(URL + f"{series['id']}/cancel/", {"from": ids[39]}, format="json").status_code == 200
    _, cal = read(feed)
    occurrences = expand(cal)
    assert len(occurrences) == 38  # 39 less the cancelled 11th
    last = Booking.objects.get(pk=ids[38])
    assert occurrences[-1].decoded("DTSTART") == last.start
    assert "UNTIL" in masters(cal)[0]["RRULE"] and "COUNT" not in masters(cal)[0]["RRULE"]


def test_a_retitled_occurrence_is_an_override_and_a_series_retitle_is_the_master(api, feed, series):
    ids = [b["id"] for b in series["bookings"]]
    Booking.objects.filter(pk=ids[3]).update(title="Board meeting")  # one occurrence retitled (no sync needed)
    _, cal = read(feed)
    (override,) = [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" in e]
    assert str(override["SUMMARY"]) == "Board meeting — The Loft"
    assert override.decoded("RECURRENCE-ID") == override.decoded("DTSTART")
    assert len(expand(cal)) == 52
    assert api.patch(URL + f"{series['id']}/", {"title": "Standup"}, format="json").status_code == 200
    _, cal = read(feed)
    assert [str(e["SUMMARY"]) for e in cal.walk("VEVENT")] == ["Standup — The Loft"]
    assert {str(e["SUMMARY"]) for e in expand(cal)} == {"Standup — The Loft"}


def test_series_and_single_bookings_share_the_feed_and_it_stays_valid(api, feed, series, member, make_booking):
    single = make_booking(member, hours_from_now=3, status=Booking.Status.CONFIRMED)
    response, cal = read(feed)
    events = cal.walk("VEVENT")
    assert len(events) == 2 and len(masters(cal)) == 1
    (one,) = [e for e in events if "RRULE" not in e]
    assert one.decoded("DTSTART") == single.start and "TZID" not in one["DTSTART"].params  # as before: UTC
    assert Calendar.from_ical(cal.to_ical()).to_ical() == cal.to_ical()  # parses back to the same
    assert len(expand(cal)) == 53
    feed_row = CalendarFeed.objects.get()
    assert feed_row.content_hash and response["ETag"] == f'"{feed_row.content_hash}"'
    # nothing changed: the same ETag, a 304
    assert client_for(None).get(feed, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_the_feed_of_a_series_takes_no_query_per_occurrence(feed, series, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):  # feed lookup, events, their sync records, content-changed update
        assert len(expand(read(feed)[1])) == 52


def test_an_unconfirmed_series_is_not_in_the_feed(api, feed, workspace):
    make_series(api, workspace, rule="FREQ=DAILY;COUNT=3")
    _, cal = read(feed)
    assert cal.walk("VEVENT") == [] and cal.walk("VTIMEZONE") == []


def test_a_series_whose_time_of_day_changed_still_shows_each_occurrence_once(api, feed, series):
    """After a series-wide move the rule starts at the new time of day (`BookingSource.series`: DTSTART
    follows the series' time), so the series stays one recurring event, each occurrence once."""
    moved = api.patch(URL + f"{series['id']}/", {"start_time": "11:00", "end_time": "12:00"}, format="json")
    assert moved.status_code == 200, moved.content
    _, cal = read(feed)
    occurrences = expand(cal)
    assert len(occurrences) == 52
    assert {e.decoded("DTSTART").astimezone(LISBON).time() for e in occurrences} == {time(11)}
    assert len(masters(cal)) == 1  # the rule now makes them at 11:00: still one recurring event
    starts = sorted(b.start for b in Booking.objects.filter(series_id=series["id"]))
    assert [e.decoded("DTSTART") for e in occurrences] == starts
