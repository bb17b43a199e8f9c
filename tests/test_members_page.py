"""The members' page's server side, without a browser: what it renders (connection cards, the add
forms, the booking form, the week view's frame and its script), the pieces its script fetches, and no secret."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from bookings.models import Booking
from calendar_sync.models import CalendarToken
from tests.helpers import connect

PAGE = "/integrations/calendar"


@pytest.fixture
def browser(member):
    client = Client()
    client.force_login(member)
    return client


@pytest.fixture
def two_calendars(fake_google, fake_microsoft, api, run):
    """The member's Google (where bookings go) and an Outlook added beside it."""
    assert "calendar_sync=connected" in run(connect, api, fake_google)["Location"]
    assert "calendar_sync=connected" in run(connect, api, fake_microsoft, add=True)["Location"]
    return list(CalendarToken.objects.order_by("created_at"))


def test_the_page_has_the_cards_forms_and_week(browser, two_calendars, workspace):
    google, outlook = two_calendars
    html = browser.get(PAGE).content.decode()
    for connection, label in ((google, "Google Calendar"), (outlook, "Outlook Calendar")):
        assert f'id="connection-{connection.pk}"' in html
        assert label in html and connection.account in html
    card = html[html.index(f'id="connection-{google.pk}"') :]
    assert card.index("checked disabled") < card.index("Bookings go here")  # the write one: its toggle is set
    for needed in (
        'id="caldav-form"',
        'value="icloud"',
        "app-specific password",
        'id="ics-form"',
        'id="booking-form"',
        f'<option value="{workspace.pk}">The Loft</option>',
        'type="date" name="date"',
        'id="week-prev"',
        'id="week-next"',
        'id="week-today"',
        'id="week-grid"',
        'id="overlap-ask"',
        "/static/bookings/week.js",
    ):
        assert needed in html, needed
    assert "https://" not in html.split('id="week"')[1].split("</section>")[0]  # no CDN: everything is served here
    assert finders.find("bookings/week.js")


def test_no_secret_reaches_the_page(browser, two_calendars):
    for token in two_calendars:
        body = browser.get(PAGE).content.decode() + browser.get(PAGE + "?part=connections").content.decode()
        for field in CalendarToken.SECRET_FIELDS:
            value = getattr(token, field, None)
            if isinstance(value, str) and len(value) > 8:
                assert value not in body, field


def test_the_connections_piece_follows_a_change(browser, two_calendars, api):
    google, outlook = two_calendars
    assert (
        api.patch(f"/api/calendar-sync/connections/{outlook.pk}/", {"conflicts": False}, format="json").status_code
        == 200
    )
    piece = browser.get(PAGE + "?part=connections").content.decode()
    card = piece[piece.index(f'id="connection-{outlook.pk}"') :]
    assert card.index('class="toggle-conflicts" name="conflicts">') < card.index(
        "Counts for conflicts"
    )  # unchecked now
    assert api.delete(f"/api/calendar-sync/connections/{outlook.pk}/").status_code in (200, 204)
    piece = browser.get(PAGE + "?part=connections").content.decode()
    assert f"connection-{outlook.pk}" not in piece and f"connection-{google.pk}" in piece


def test_the_week_piece_lists_the_members_bookings_in_the_window(browser, member, other, make_booking):
    inside = make_booking(member, hours_from_now=24, title="Inside")
    make_booking(member, hours_from_now=24 * 10, title="Later")
    make_booking(member, hours_from_now=30, title="Cancelled", status=Booking.Status.CANCELLED)
    make_booking(other, hours_from_now=25, title="Someone else's")
    now = timezone.now()
    window = {"start": now.isoformat(), "end": (now + timezone.timedelta(days=7)).isoformat()}
    answer = browser.get(PAGE, {"part": "week", **window})
    assert answer.status_code == 200
    assert json.loads(answer.content)["bookings"] == [
        {
            "id": str(inside.pk),
            "title": "Inside",
            "workspace": "The Loft",
            "start": inside.start.isoformat(),
            "end": inside.end.isoformat(),
            "status": "pending",
        }
    ]


@pytest.mark.parametrize(
    "window",
    [
        {},
        {"start": "yesterday", "end": "today"},
        {"start": "2026-01-05T00:00:00", "end": "2026-01-12T00:00:00"},  # no offset
        {"start": "2026-01-12T00:00:00Z", "end": "2026-01-05T00:00:00Z"},
        {"start": "2026-01-05T00:00:00Z", "end": "2026-03-05T00:00:00Z"},
    ],
)
def test_a_bad_week_window_is_a_400_with_a_code(browser, window):
    answer = browser.get(PAGE, {"part": "week", **window})
    assert answer.status_code == 400
    assert json.loads(answer.content)["code"] == "invalid"


def test_signed_out_the_page_and_its_pieces_ask_for_sign_in(db):
    for url in (PAGE, PAGE + "?part=week", PAGE + "?part=connections"):
        answer = Client().get(url)
        assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")


def _day():
    return (timezone.now() + timezone.timedelta(days=3)).date()


@pytest.mark.parametrize(("zone", "read_in"), [("America/New_York", "America/New_York"), ("", "Europe/Lisbon")])
def test_the_booking_form_books_without_javascript(browser, member, workspace, zone, read_in):
    """The script names the browser's zone; without it the times are the workspace's (Europe/Lisbon)."""
    form = {"workspace": workspace.pk, "title": "Focus", "date": _day().isoformat(), "start": "09:30", "end": "11:00"}
    answer = browser.post(PAGE + "/bookings/new", {**form, "zone": zone}, follow=True)
    booking = Booking.objects.get(user=member)
    assert booking.start == dt.datetime.combine(_day(), dt.time(9, 30), ZoneInfo(read_in))
    assert booking.end == dt.datetime.combine(_day(), dt.time(11), ZoneInfo(read_in))
    assert booking.status == Booking.Status.PENDING
    assert f"({read_in} time)" in answer.content.decode()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"end": "08:00"}, "Not booked: "),  # before the start: the bookings' own rule
        ({"workspace": "999999"}, "Not booked: workspace"),
        ({"date": "someday"}, "Not booked: date"),
        ({"zone": "Mars/Olympus"}, None),  # an unknown zone is not trusted: the workspace's is used
    ],
)
def test_the_booking_form_refuses_bad_input_in_words(browser, member, workspace, change, said):
    form = {"workspace": workspace.pk, "title": "Focus", "date": _day().isoformat(), "start": "09:30", "end": "11:00"}
    answer = browser.post(PAGE + "/bookings/new", {**form, **change}, follow=True)
    assert answer.status_code == 200
    if said is None:
        assert Booking.objects.get(user=member).start.utcoffset() is not None
        assert "(Europe/Lisbon time)" in answer.content.decode()
    else:
        assert said in answer.content.decode() and not Booking.objects.exists()
