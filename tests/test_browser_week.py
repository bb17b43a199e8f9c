"""A member with two calendars books from the members' page and sees the week, in headless Chromium
against the fake Google and the fake Microsoft: Google is where bookings go, an Outlook account is
added beside it ("Add another calendar"), an event in that Outlook shows as busy in the week grid
next to the booking, and Confirm asks before confirming over it.

The browser runs in another time zone than the workspace (America/New_York vs Europe/Lisbon): the page
shows and takes the browser's local times. Screenshots of the week go to $BROWSER_SCREENSHOTS (default
artifacts/screenshots/); their paths are printed, so a CI run's output names them.

Needs Debian's `chromium` (`.ci/run` installs it). Locally without it the test is skipped; in CI it fails.
"""

import datetime as dt
import json
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model

from bookings.models import Booking, Workspace
from calendar_sync.models import CalendarToken
from calendar_sync.sources import get_source
from tests.browser import open_page, said
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT
from tests.test_browser import sign_in

ZONE = "America/New_York"
SCREENSHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", "artifacts/screenshots"))


@pytest.fixture
def page(live_server, fake_google, fake_microsoft, settings, monkeypatch):
    with open_page(
        live_server, settings, monkeypatch, timezone_id=ZONE, locale="en-GB", viewport={"width": 1280, "height": 1000}
    ) as page:
        yield page


@pytest.fixture
def screenshot(capsys):
    """Save a screenshot and name it in the run's output (past pytest's capture), so CI's log points at it."""

    def save(target, name, **options):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        target.screenshot(path=str(path), **options)
        with capsys.disabled():
            print(f"\nscreenshot: {path.resolve()}")

    return save


def next_wednesday():
    """A day of next week in the browser's zone: always in the future, and a week of its own."""
    today = dt.datetime.now(ZoneInfo(ZONE)).date()
    return today + dt.timedelta(days=7 - today.weekday() + 2)


@pytest.mark.django_db(transaction=True)
def test_member_adds_a_calendar_books_and_is_warned_over_a_busy_time(
    page, live_server, fake_google, fake_microsoft, screenshot
):
    get_user_model().objects.create_user("demo", password="demo-password")
    Workspace.objects.create(name="The Loft", address="1 Harbour St", time_zone="Europe/Lisbon")
    Workspace.objects.create(name="Studio B", address="2 Quay Rd", time_zone="Europe/Lisbon")
    day = next_wednesday()
    local = ZoneInfo(ZONE)
    # Something in the member's Outlook that ManageHub did not put there: 11:00–12:00 New York time.
    fake_microsoft.add_event(
        MS_ACCOUNT,
        dt.datetime.combine(day, dt.time(11), local).astimezone(dt.UTC),
        dt.datetime.combine(day, dt.time(12), local).astimezone(dt.UTC),
        title="Dentist",
    )
    fake_google.add_account("personal@example.com")
    sign_in(page, live_server)

    # Google first: where bookings go.
    page.click("#connect-google")
    page.wait_for_selector("#allow")
    page.select_option("select[name=account]", GOOGLE_ACCOUNT)
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=active]")
    assert page.locator("#connection-list .connection").count() == 1

    # "Add another calendar" → Outlook (auth/microsoft?add=1) → the fake's consent page, which offers accounts.
    page.click("#add-microsoft")
    page.wait_for_selector("#allow")
    page.select_option("select[name=login_hint]", MS_ACCOUNT)
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_function("document.querySelectorAll('#connection-list .connection').length === 2")
    said(page, "Outlook Calendar is added")
    # And a second Google account, offered by the fake Google's consent page.
    page.click("#add-google")
    page.wait_for_selector("#allow")
    page.select_option("select[name=account]", "personal@example.com")
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_function("document.querySelectorAll('#connection-list .connection').length === 3")
    said(page, "Google Calendar is added")
    google, outlook, personal = CalendarToken.objects.order_by("created_at")
    assert (google.provider, google.write, outlook.provider, outlook.write) == ("google", True, "microsoft", False)
    assert (personal.provider, personal.write, personal.account) == ("google", False, "personal@example.com")
    assert "personal@example.com" in page.text_content(f"#connection-{personal.pk}")
    outlook_card = page.locator(f"#connection-{outlook.pk}")
    assert "Outlook Calendar" in outlook_card.text_content()
    assert page.is_checked(f"#connection-{google.pk} .toggle-write")
    assert not page.is_checked(f"#connection-{outlook.pk} .toggle-write")
    assert page.is_checked(f"#connection-{outlook.pk} .toggle-conflicts")
    assert page.get_attribute("#add-ics", "id") and page.get_attribute("#caldav-form input[value=icloud]", "type")

    # Book from the form, in the browser's local time: 10:00–11:30 New York time.
    page.select_option("#booking-form select[name=workspace]", label="Studio B")
    page.fill("#booking-form input[name=title]", "Deep work")
    page.fill("#booking-form input[name=date]", day.isoformat())
    page.fill("#booking-form input[name=start]", "10:00")
    page.fill("#booking-form input[name=end]", "11:30")
    page.click("#book-submit")
    page.wait_for_function("document.getElementById('booking-outcome').textContent.includes('Booked')")
    booking = Booking.objects.get(title="Deep work")
    assert booking.workspace.name == "Studio B" and booking.status == Booking.Status.PENDING
    assert booking.start == dt.datetime.combine(day, dt.time(10), local)
    assert booking.end == dt.datetime.combine(day, dt.time(11, 30), local)

    # The week of the booking: the booking, the Outlook event as busy, and the overlap, in New York time.
    block = page.locator(f"#week-grid .event.booking[data-booking='{booking.pk}']")
    block.wait_for()
    busy = page.locator(f"#week-grid .event.busy[data-connection='{outlook.pk}']")
    busy.wait_for()
    assert ZONE in page.text_content("#week .week-nav")
    assert "10:00–11:30" in block.text_content() and "Deep work" in block.text_content()
    assert "11:00–12:00" in busy.text_content() and MS_ACCOUNT in busy.text_content()
    assert "conflict" in block.get_attribute("class")
    assert "Overlaps 11:00–12:00 in Outlook Calendar" in block.text_content()
    assert "“Deep work”" in page.text_content("#week-conflicts") and MS_ACCOUNT in page.text_content("#week-conflicts")
    day_column = page.locator("#week-grid ul.day").nth(2)  # Wednesday
    assert day_column.locator(".event").count() == 2
    screenshot(page.locator("#week"), "week-view-overlap.png")
    screenshot(page, "members-page.png", full_page=True)

    # Navigation by week: the booking is not in the week before, and is back a week later; one busy read a week shown.
    busy_reads = []
    page.on(
        "request", lambda request: busy_reads.append(request.url) if "/calendar-sync/busy?" in request.url else None
    )
    page.click("#week-prev")
    page.wait_for_function("!document.querySelector('#week-grid .event')")
    page.click("#week-next")
    block.wait_for()
    page.click("#week-today")
    page.wait_for_function("!document.querySelector('#week-grid .event')")
    page.click("#week-next")
    block.wait_for()
    assert len(busy_reads) == 4, busy_reads

    # Confirm asks first: "Go back" confirms nothing; "Confirm anyway" confirms, and only Google gets it.
    confirm = f"#booking-{booking.pk} button[data-action=confirm]"
    page.click(confirm)
    page.wait_for_selector("#overlap-ask[open]")
    question = page.text_content("#overlap-question")
    assert "Deep work" in question and "11:00–12:00" in question and "Outlook Calendar" in question
    assert question.endswith("confirm anyway?")
    screenshot(page, "confirm-anyway.png")
    page.click("#overlap-back")
    assert page.is_hidden("#overlap-ask")
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING

    page.click(confirm)
    page.wait_for_selector("#overlap-ask[open]")
    page.click("#overlap-confirm")
    page.wait_for_selector(f"#booking-{booking.pk} .sync-state[data-state=synced]")
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED
    assert list(fake_google.events(GOOGLE_ACCOUNT)) == [get_source("booking").event_id(booking.pk)]
    assert not fake_google.events("personal@example.com")
    assert [e["subject"] for e in fake_microsoft.events(MS_ACCOUNT).values()] == ["Dentist"]

    # "Counts for conflicts" off: the Outlook event leaves the week; Disconnect removes the card.
    page.click("#week-next")
    block.wait_for()
    busy.wait_for()
    page.click(f"#connection-{outlook.pk} .toggle-conflicts")
    busy.wait_for(state="detached")
    assert not CalendarToken.objects.get(pk=outlook.pk).conflicts
    assert "conflict" not in block.get_attribute("class") and not page.text_content("#week-conflicts")
    page.click(f"#connection-{outlook.pk} .disconnect-one")
    page.click(f"#connection-{outlook.pk} .disconnect-one-confirm")
    page.locator(f"#connection-{outlook.pk}").wait_for(state="detached")
    assert list(CalendarToken.objects.order_by("created_at").values_list("provider", flat=True)) == ["google", "google"]
    screenshot(page.locator("#week"), "week-view-confirmed.png")


@pytest.mark.django_db(transaction=True)
def test_the_caldav_and_ics_forms_send_the_documented_bodies(page, live_server, fake_google, fake_microsoft):
    """The page's side of `POST connections/caldav` and `POST connections/ics` (docs/rest.md): the iCloud
    preset sends `preset` instead of `server_url`, another server sends its address, an ICS link its
    URL; a 400 is said in words. The browser's requests to these two addresses only are answered
    here with the documented refusal, so this holds whether or not this server offers them."""
    get_user_model().objects.create_user("demo", password="demo-password")
    sent = []

    def refuse(route):
        sent.append((route.request.url.rsplit("/", 1)[1], route.request.post_data_json))
        detail = "password: The server refused this user name and password."
        route.fulfill(
            status=400,
            content_type="application/json",
            body=json.dumps({"code": "invalid_credentials", "detail": detail}),
        )

    page.route("**/api/calendar-sync/connections/caldav", refuse)
    page.route("**/api/calendar-sync/connections/ics", refuse)
    sign_in(page, live_server)

    def submit(form, count):
        page.evaluate("document.getElementById('outcome').textContent = ''")
        page.click(f"{form} button[type=submit]")
        page.wait_for_function("document.getElementById('outcome').textContent.includes('refused')")
        assert len(sent) == count and page.get_attribute("#outcome", "class") == "error"

    page.click("#add-caldav summary")
    assert page.is_hidden("#server-url-field")  # the iCloud preset needs no address
    assert "app-specific password" in page.text_content("#caldav-hint")
    page.fill("#caldav-form input[name=username]", "someone@icloud.com")
    page.fill("#caldav-form input[name=password]", "abcd-efgh-ijkl-mnop")
    submit("#caldav-form", 1)
    page.check("#caldav-form input[name=preset][value='']")
    assert page.is_visible("#server-url-field")
    page.fill("#caldav-form input[name=server_url]", "https://caldav.fastmail.com/")
    submit("#caldav-form", 2)
    page.click("#add-ics summary")
    page.fill("#ics-form input[name=url]", "webcal://p01-calendars.icloud.com/published/2/secret")
    submit("#ics-form", 3)
    assert sent == [
        ("caldav", {"username": "someone@icloud.com", "password": "abcd-efgh-ijkl-mnop", "preset": "icloud"}),
        (
            "caldav",
            {
                "username": "someone@icloud.com",
                "password": "abcd-efgh-ijkl-mnop",
                "server_url": "https://caldav.fastmail.com/",
            },
        ),
        ("ics", {"url": "webcal://p01-calendars.icloud.com/published/2/secret"}),
    ]


@pytest.mark.django_db(transaction=True)
def test_member_adds_a_caldav_calendar_and_an_ics_link_and_sees_their_busy_times(
    page, live_server, fake_google, fake_microsoft, settings, screenshot
):
    """A real Radicale server (CalDAV, as iCloud speaks it) and an ICS feed on loopback, connected from
    the page's forms: their outside events show as busy in the week. Runs where the server offers the
    CalDAV and ICS connections (their test servers are in tests/caldav_servers.py)."""
    servers = pytest.importorskip("tests.caldav_servers", reason="needs the CalDAV and ICS connections")
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}  # loopback servers
    get_user_model().objects.create_user("demo", password="demo-password")
    Workspace.objects.create(name="The Loft", address="1 Harbour St", time_zone="Europe/Lisbon")
    day, local = next_wednesday(), ZoneInfo(ZONE)
    at = lambda hour: dt.datetime.combine(day, dt.time(hour), local).astimezone(dt.UTC)  # noqa: E731
    stamp = lambda when: when.strftime("%Y%m%dT%H%M%SZ")  # noqa: E731
    event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{title}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    feed = servers.IcsServer(event.format(uid="gym@feed", start=stamp(at(15)), end=stamp(at(16)), title="Gym").encode())
    with servers.Radicale() as radicale:
        radicale.calendar().save_event(
            event.format(uid="dentist@phone", start=stamp(at(9)), end=stamp(at(10)), title="Dentist")
        )
        sign_in(page, live_server)
        page.click("#add-caldav summary")
        page.check("#caldav-form input[name=preset][value='']")
        page.fill("#caldav-form input[name=server_url]", radicale.url)
        page.fill("#caldav-form input[name=username]", radicale.username)
        page.fill("#caldav-form input[name=password]", radicale.password)
        page.click("#caldav-form button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#connection-list .connection').length === 1")
        page.click("#add-ics summary")
        page.fill("#ics-form input[name=url]", feed.url)
        page.click("#ics-form button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#connection-list .connection').length === 2")
        caldav, ics = CalendarToken.objects.order_by("created_at")
        assert (caldav.provider, ics.provider) == ("caldav", "ics")
        assert feed.url not in page.content() and radicale.password not in page.content()  # secrets never shown

        page.click("#week-next")
        page.locator(f"#week-grid .event.busy[data-connection='{caldav.pk}']").wait_for()
        page.locator(f"#week-grid .event.busy[data-connection='{ics.pk}']").wait_for()
        assert "09:00–10:00" in page.text_content(f"#week-grid .event.busy[data-connection='{caldav.pk}']")
        assert "15:00–16:00" in page.text_content(f"#week-grid .event.busy[data-connection='{ics.pk}']")
        screenshot(page.locator("#week"), "week-view-caldav-ics.png")
    feed.close()
