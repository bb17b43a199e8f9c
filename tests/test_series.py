"""Recurring bookings: a series is one RRULE expanded in the workspace's zone into ordinary bookings."""

import threading
from datetime import UTC, datetime, time, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from bookings import recurrence
from bookings.models import Booking, Series
from calendar_sync.models import BusyBlock
from tests.helpers import LISBON, ROOM_ACCOUNT, client_for, connect_room, next_monday

pytestmark = pytest.mark.django_db
URL = "/api/bookings/series/"


def body(workspace, rule="FREQ=WEEKLY;COUNT=52", start=None, hours=1, **extra):
    start = start or next_monday()
    return {
        "workspace": workspace.pk,
        "title": "Team room",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=hours)).isoformat(),
        "rule": rule,
        **extra,
    }


def local(value):
    return datetime.fromisoformat(value).astimezone(LISBON)


def make_series(api, workspace, **kwargs):
    response = api.post(URL, body(workspace, **kwargs), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_weekly_series_stays_at_nine_lisbon_across_both_daylight_saving_changes(api, workspace, member):
    series = make_series(api, workspace)
    occurrences = series["bookings"]
    assert series["rule"] == "FREQ=WEEKLY;COUNT=52" and series["skipped"] == []
    assert len(occurrences) == 52 == Booking.objects.filter(series_id=series["id"], user=member).count()
    assert {local(b["start"]).strftime("%a %H:%M") for b in occurrences} == {"Mon 09:00"}
    assert {local(b["end"]).strftime("%H:%M") for b in occurrences} == {"10:00"}
    # Winter (UTC+0) and summer (UTC+1) both occur: the UTC times move, the local time does not.
    offsets = {datetime.fromisoformat(b["start"]).astimezone(LISBON).utcoffset() for b in occurrences}
    assert offsets == {timedelta(0), timedelta(hours=1)}
    assert {datetime.fromisoformat(b["start"]).astimezone(UTC).hour for b in occurrences} == {8, 9}
    assert {b["status"] for b in occurrences} == {"pending"}
    # Each occurrence is an ordinary booking that names its series; its original start is kept.
    booking = api.get(f"/api/bookings/{occurrences[3]['id']}/").json()
    assert booking["series"] == series["id"]
    stored = Booking.objects.get(pk=occurrences[3]["id"])
    assert stored.series_start == stored.start
    assert api.get(URL + f"{series['id']}/").json()["bookings"] == occurrences
    assert api.get(URL + f"{series['id']}/").json()["start_time"] == "09:00"


def test_expansion_reads_missing_and_repeated_local_times_as_rfc_5545_says():
    """01:30 does not exist in Lisbon on 28 March 2027 (01:00 → 02:00): it is read with the winter offset,
    so it falls at 02:30 summer time. On 31 October 01:30 happens twice: the first (summer) one is meant."""
    rule = recurrence.parse("FREQ=DAILY;COUNT=3")
    spring = recurrence.expand(rule, datetime(2027, 3, 27, 1, 30, tzinfo=LISBON), "Europe/Lisbon")
    assert [s.astimezone(LISBON).strftime("%d %H:%M %z") for s in spring] == [
        "27 01:30 +0000",
        "28 02:30 +0100",
        "29 01:30 +0100",
    ]
    autumn = recurrence.expand(rule, datetime(2027, 10, 30, 1, 30, tzinfo=LISBON), "Europe/Lisbon")
    assert [s.astimezone(UTC).strftime("%d %H:%M") for s in autumn] == ["30 00:30", "31 00:30", "01 01:30"]


@pytest.fixture
def room(fake_google, staff, workspace, run, settings):
    """The workspace's room calendar on the fake Google, with one event booked straight in it on occurrence 5."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PUSH_URL": "http://127.0.0.1:9"}
    fake_google.add_account(ROOM_ACCOUNT)
    at = next_monday(time(9, 30)) + timedelta(weeks=4)
    fake_google.add_event(ROOM_ACCOUNT, at, at + timedelta(hours=1), title="Front desk")
    response = run(connect_room, client_for(staff), fake_google, workspace, ROOM_ACCOUNT)
    assert "calendar_sync=connected" in response["Location"]
    assert BusyBlock.objects.count() == 1  # the connect flow read the room calendar
    return fake_google


@pytest.fixture
def taken(room, other, workspace):
    """Three dates of the weekly series taken: the room calendar's event and two confirmed bookings of
    another member (one overlapping by half an hour). A pending booking and a booking after 10:00 take nothing."""

    def book(week, at, hours=1, status=Booking.Status.CONFIRMED):
        start = next_monday(at) + timedelta(weeks=week)
        Booking.objects.create(
            user=other,
            workspace=workspace,
            title="Theirs",
            start=start,
            end=start + timedelta(hours=hours),
            status=status,
        )

    book(9, time(8, 30))
    book(19, time(9))
    book(29, time(9), status=Booking.Status.PENDING)
    book(39, time(10))  # starts when ours ends
    return [(next_monday() + timedelta(weeks=week)).date().isoformat() for week in (4, 9, 19)]


def test_a_series_over_three_taken_dates_is_refused_naming_them(api, workspace, taken):
    before = Booking.objects.count()
    response = api.post(URL, body(workspace), format="json")
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "overlap" and response.json()["dates"] == taken
    assert "detail" in response.json()
    assert Booking.objects.count() == before and not Series.objects.exists()


def test_skip_conflicts_creates_the_other_49(api, workspace, taken):
    series = make_series(api, workspace, skip_conflicts=True)
    assert series["skipped"] == taken
    dates = [local(b["start"]).date().isoformat() for b in series["bookings"]]
    assert len(dates) == 49 and not set(dates) & set(taken)


def test_confirm_confirms_every_pending_occurrence_or_none(api, workspace, other):
    series = make_series(api, workspace, rule="FREQ=WEEKLY;COUNT=6")
    ids = [b["id"] for b in series["bookings"]]
    api.post(f"/api/bookings/{ids[0]}/cancel/")  # one cancelled on its own stays cancelled
    clash = next_monday() + timedelta(weeks=2)
    theirs = Booking.objects.create(
        user=other, workspace=workspace, title="Theirs", start=clash, end=clash + timedelta(hours=1)
    )
    Booking.objects.filter(pk=theirs.pk).update(status=Booking.Status.CONFIRMED)
    refused = api.post(URL + f"{series['id']}/confirm/")
    assert refused.status_code == 409 and refused.json()["dates"] == [clash.date().isoformat()]
    assert set(Booking.objects.filter(series_id=series["id"]).values_list("status", flat=True)) == {
        "pending",
        "cancelled",
    }
    theirs.delete()
    confirmed = api.post(URL + f"{series['id']}/confirm/")
    assert confirmed.status_code == 200
    assert [b["status"] for b in confirmed.json()["bookings"]] == ["cancelled"] + ["confirmed"] * 5
    assert api.post(URL + f"{series['id']}/confirm/").status_code == 200  # again: nothing to do


def test_patch_moves_the_time_of_day_of_every_future_occurrence(api, workspace, other):
    series = make_series(api, workspace, rule="FREQ=WEEKLY;BYDAY=MO,TH;COUNT=40")
    ids = [b["id"] for b in series["bookings"]]
    past = timezone.now() - timedelta(days=3)  # an occurrence already held keeps its time
    Booking.objects.filter(pk=ids[0]).update(start=past, end=past + timedelta(hours=1))
    url = URL + f"{series['id']}/"

    response = api.patch(url, {"start_time": "14:00", "end_time": "15:30", "title": "Planning"}, format="json")
    assert response.status_code == 200, response.content
    moved = response.json()
    assert moved["start_time"] == "14:00" and moved["end_time"] == "15:30" and moved["title"] == "Planning"
    future = moved["bookings"][1:]
    assert {local(b["start"]).strftime("%H:%M") for b in future} == {"14:00"}
    assert {local(b["end"]).strftime("%H:%M") for b in future} == {"15:30"}
    assert {local(b["start"]).strftime("%a") for b in future} == {"Mon", "Thu"}
    assert datetime.fromisoformat(moved["bookings"][0]["start"]) == past
    assert set(Booking.objects.filter(pk__in=ids[1:]).values_list("title", flat=True)) == {"Planning"}
    assert Booking.objects.get(pk=ids[0]).title == "Team room"

    # A new `start` gives its local time; the length stays.
    start = datetime(2030, 1, 1, 8, 15, tzinfo=UTC)  # 08:15 in Lisbon in winter
    again = api.patch(url, {"start": start.isoformat()}, format="json").json()
    assert {
        (local(b["start"]).strftime("%H:%M"), local(b["end"]).strftime("%H:%M")) for b in again["bookings"][1:]
    } == {("08:15", "09:45")}

    # A clash refuses the change, naming the dates, and changes nothing.
    clash = datetime.fromisoformat(future[5]["start"]).astimezone(LISBON).replace(hour=11)
    Booking.objects.create(
        user=other,
        workspace=workspace,
        title="Theirs",
        start=clash,
        end=clash + timedelta(hours=1),
        status=Booking.Status.CONFIRMED,
    )
    refused = api.patch(url, {"start_time": "11:30", "end_time": "12:00"}, format="json")
    assert refused.status_code == 409 and refused.json()["dates"] == [clash.date().isoformat()]
    assert api.get(url).json()["bookings"] == again["bookings"]

    for bad in ({"start_time": "25:00"}, {"start_time": "09:00", "start": start.isoformat()}, {"end_time": "x"}):
        response = api.patch(url, bad, format="json")
        assert response.status_code == 400 and response.json()["code"] == "invalid", (bad, response.content)


def test_one_occurrence_keeps_its_own_endpoints(api, workspace):
    series = make_series(api, workspace, rule="FREQ=DAILY;COUNT=5")
    second = series["bookings"][1]
    later = datetime.fromisoformat(second["start"]) + timedelta(hours=3)
    moved = api.patch(
        f"/api/bookings/{second['id']}/",
        {"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert moved.status_code == 200 and moved.json()["series"] == series["id"]
    stored = Booking.objects.get(pk=second["id"])
    assert stored.start == later and stored.series_start == datetime.fromisoformat(second["start"])
    assert api.post(f"/api/bookings/{series['bookings'][2]['id']}/cancel/").json()["status"] == "cancelled"
    statuses = [b["status"] for b in api.get(URL + f"{series['id']}/").json()["bookings"]]
    assert statuses == ["pending", "pending", "cancelled", "pending", "pending"]


def test_cancel_from_occurrence_40_leaves_the_earlier_ones(api, workspace):
    series = make_series(api, workspace)
    ids = [b["id"] for b in series["bookings"]]
    response = api.post(URL + f"{series['id']}/cancel/", {"from": ids[39]}, format="json")
    assert response.status_code == 200, response.content
    statuses = [b["status"] for b in response.json()["bookings"]]
    assert statuses == ["pending"] * 39 + ["cancelled"] * 13

    everything = api.post(URL + f"{series['id']}/cancel/").json()
    assert {b["status"] for b in everything["bookings"]} == {"cancelled"}
    other = make_series(api, workspace, rule="FREQ=DAILY;COUNT=2")
    wrong = api.post(URL + f"{series['id']}/cancel/", {"from": other["bookings"][0]["id"]}, format="json")
    assert wrong.status_code == 400 and "from" in wrong.json()


@pytest.mark.parametrize(
    "rule, part",
    [
        ("FREQ=DAILY;COUNT=201", "COUNT"),
        ("FREQ=WEEKLY;COUNT=60", "year"),  # 60 weeks
        ("FREQ=DAILY;UNTIL=20991231T000000Z", "UNTIL"),
        ("FREQ=DAILY;UNTIL=20000101", "UNTIL"),
        ("FREQ=DAILY;COUNT=99999999999999999999999999", "COUNT"),
        ("FREQ=DAILY;COUNT=-3", "COUNT"),
        ("FREQ=DAILY;COUNT=0", "COUNT"),
        ("FREQ=SECONDLY;COUNT=3", "FREQ"),
        ("FREQ=YEARLY;COUNT=3", "FREQ"),
        ("FREQ=WEEKLY;COUNT=3;WKST=SU", "WKST"),
        ("FREQ=WEEKLY;COUNT=3;BYSETPOS=1", "BYSETPOS"),
        ("FREQ=WEEKLY", "COUNT"),
        ("FREQ=WEEKLY;COUNT=3;UNTIL=20300101", "COUNT"),
        ("FREQ=WEEKLY;FREQ=DAILY;COUNT=3", "FREQ"),
        ("COUNT=3", "FREQ"),
        ("FREQ=WEEKLY;BYDAY=XX;COUNT=3", "BYDAY"),
        ("FREQ=WEEKLY;BYDAY=1MO;COUNT=3", "BYDAY"),
        ("FREQ=WEEKLY;BYMONTHDAY=3;COUNT=3", "BYMONTHDAY"),
        ("FREQ=MONTHLY;BYMONTHDAY=32;COUNT=3", "BYMONTHDAY"),
        ("FREQ=DAILY;INTERVAL=0;COUNT=3", "INTERVAL"),
        ("FREQ=DAILY;UNTIL=20270231;COUNT=3", "COUNT"),
        ("FREQ=DAILY;UNTIL=2027-02-01", "UNTIL"),
        ("FREQ=WEEKLY;BYDAY=TU;COUNT=3", "first occurrence"),  # the start is a Monday
        ("FREQ=MONTHLY;BYMONTHDAY=31;BYDAY=MO;INTERVAL=12;COUNT=200", "first occurrence"),
        ("garbage", "garbage"),
        ("FREQ=DAILY;COUNT=٣", "COUNT"),
        (";;;=;", "NAME=VALUE"),
        ("RRULE:" + "FREQ=DAILY;" * 40, "FREQ"),
    ],
)
def test_bad_rules_are_a_400_naming_the_part(api, workspace, rule, part):
    response = api.post(URL, body(workspace, rule=rule), format="json")
    assert response.status_code == 400, (rule, response.content)
    answer = response.json()
    assert answer["code"] == "invalid" and part in answer["detail"] and "rule" in answer, answer
    assert not Series.objects.exists()


def test_bounds_the_host_enforces_apply(api, workspace):
    # 200 daily occurrences are allowed; the host's maximum length and horizon still apply.
    assert len(make_series(api, workspace, rule="FREQ=DAILY;COUNT=200")["bookings"]) == 200
    too_long = api.post(URL, body(workspace, rule="FREQ=DAILY;COUNT=2", hours=25), format="json")
    assert too_long.status_code == 400 and "end" in too_long.json()
    late = next_monday() + timedelta(days=300)
    beyond = api.post(URL, body(workspace, rule="FREQ=WEEKLY;COUNT=20", start=late), format="json")
    assert beyond.status_code == 400 and "days ahead" in beyond.json()["detail"]
    for bad in ({"rule": 3}, {"start": "tomorrow"}, {"workspace": 999}, {"skip_conflicts": "maybe"}, {"title": ""}):
        response = api.post(URL, {**body(workspace), **bad}, format="json")
        assert response.status_code == 400 and response.json()["code"] == "invalid", (bad, response.content)


def test_a_member_sees_only_their_own_series(api, workspace, other, staff):
    series = make_series(api, workspace, rule="FREQ=DAILY;COUNT=3")
    url = URL + f"{series['id']}/"
    theirs = client_for(other)
    assert theirs.get(url).status_code == 404
    assert theirs.patch(url, {"title": "Mine now"}, format="json").status_code == 404
    assert theirs.post(url + "confirm/").status_code == 404
    assert theirs.post(url + "cancel/").status_code == 404
    assert client_for(None).get(url).status_code == 401
    assert client_for(staff).get(url).json()["id"] == series["id"]
    assert set(Booking.objects.filter(series_id=series["id"]).values_list("status", flat=True)) == {"pending"}
    assert Series.objects.get().title == "Team room"


def test_the_schema_documents_the_series_endpoints(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    create = paths["/api/bookings/series/"]["post"]
    assert {"201", "400", "409"} <= set(create["responses"])
    for path, method in (
        ("/api/bookings/series/{id}/", "get"),
        ("/api/bookings/series/{id}/", "patch"),
        ("/api/bookings/series/{id}/confirm/", "post"),
        ("/api/bookings/series/{id}/cancel/", "post"),
    ):
        assert "404" in paths[path][method]["responses"], (path, method)
    assert "series" in schema["components"]["schemas"]["Booking"]["properties"]


@pytest.mark.django_db(transaction=True)
def test_a_series_confirm_racing_a_booking_confirm_lets_one_win(make_user, workspace):
    """The series' confirm takes the workspace lock the single-booking confirm takes: never both."""
    alice, bob = make_user("alice3"), make_user("bob3")
    for round_ in range(3):
        start = next_monday() + timedelta(days=round_ * 7 + 1)
        series = make_series(client_for(alice), workspace, rule="FREQ=DAILY;COUNT=5", start=start)
        clash = start + timedelta(days=2, minutes=30)
        theirs = Booking.objects.create(
            user=bob, workspace=workspace, title="B", start=clash, end=clash + timedelta(hours=1)
        )
        results, barrier = {}, threading.Barrier(2)

        def post(user, url, barrier=barrier, results=results):
            barrier.wait()
            try:
                results[user.username] = client_for(user).post(url)
            finally:
                connection.close()

        threads = [
            threading.Thread(target=post, args=(alice, URL + f"{series['id']}/confirm/")),
            threading.Thread(target=post, args=(bob, f"/api/bookings/{theirs.pk}/confirm/")),
        ]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sorted(r.status_code for r in results.values()) == [200, 409], [r.content for r in results.values()]
        confirmed = Booking.objects.filter(status=Booking.Status.CONFIRMED, start__lt=clash + timedelta(hours=1))
        assert confirmed.filter(end__gt=clash).count() == 1


def test_admin_shows_a_series_with_its_occurrences(api, workspace, make_user):
    series = make_series(api, workspace, rule="FREQ=DAILY;COUNT=3")
    url = f"/admin/bookings/series/{series['id']}/change/"
    root, viewer = make_user("root", is_staff=True, is_superuser=True), make_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_series", "view_booking"]))
    for user, editable in ((root, True), (viewer, False)):
        client = Client()
        client.force_login(user)
        page = client.get(url).content.decode()
        assert page.count("/change/") >= 3  # each occurrence links to its booking
        assert ('name="title"' in page) is editable
    client = Client()
    client.force_login(root)
    form = {"title": "Renamed", "bookings-TOTAL_FORMS": "3", "bookings-INITIAL_FORMS": "3"}
    for i, occurrence in enumerate(series["bookings"]):
        form |= {f"bookings-{i}-id": occurrence["id"], f"bookings-{i}-series": series["id"]}
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert set(Booking.objects.filter(series_id=series["id"]).values_list("title", flat=True)) == {"Renamed"}


PART_NAMES = st.sampled_from([*recurrence.PARTS, "WKST", "BYSETPOS", "BYHOUR", "RRULE:FREQ", "", "freq"])
PART_VALUES = st.one_of(
    st.sampled_from(
        ["DAILY", "WEEKLY", "MONTHLY", "SECONDLY", "YEARLY", "MO,TU", "-1FR", "5SU", "20270101", "20991231T000000Z"]
    ),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=12),
)
RULES = st.one_of(
    st.text(max_size=60),
    st.lists(st.tuples(PART_NAMES, PART_VALUES).map("=".join), max_size=7).map(";".join),
)


@settings(max_examples=300, deadline=None)
@given(text=RULES, days=st.integers(0, 400), minutes=st.integers(0, 24 * 60))
def test_any_rule_expands_within_the_bounds_or_is_refused(text, days, minutes):
    """Whatever the text, the rule either expands into at most 200 starts within a year, the first being
    `start`, or is a RuleError — never another exception."""
    start = datetime(2027, 1, 1, tzinfo=LISBON) + timedelta(days=days, minutes=minutes)
    try:
        starts = recurrence.expand(recurrence.parse(text), start, "Europe/Lisbon")
    except recurrence.RuleError as exc:
        assert str(exc)
        return
    assert 1 <= len(starts) <= recurrence.MAX_OCCURRENCES and starts[0] == start
    assert starts == sorted(starts) and starts[-1] - start <= timedelta(days=367)
