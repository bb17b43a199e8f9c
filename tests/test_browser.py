"""A member clicks through the calendar page, and staff through the room calendars page, in headless
Chromium against the fake Google and the fake Microsoft (both configured, so the pages offer both).

Needs Debian's `chromium` (`.ci/run` installs it). Locally without it the test is skipped;
in CI it fails instead.
"""

import os

import pytest
from django.contrib.auth import get_user_model

from bookings.models import Booking, Workspace
from calendar_sync.models import CalendarToken
from calendar_sync.sources import get_source
from tests.browser import open_page


@pytest.fixture
def page(live_server, fake_google, fake_microsoft, settings, monkeypatch):
    with open_page(live_server, settings, monkeypatch) as page:
        yield page


def member_with_booking(title="Deep work"):
    from django.utils import timezone

    user = get_user_model().objects.create_user("demo", password="demo-password")
    workspace = Workspace.objects.create(name="The Loft", address="1 Harbour St", time_zone="Europe/Lisbon")
    start = timezone.now() + timezone.timedelta(days=1)
    booking = Booking.objects.create(
        user=user, workspace=workspace, title=title, start=start, end=start + timezone.timedelta(hours=2)
    )
    return user, booking


def sign_in(page, live_server):
    page.goto(f"{live_server.url}/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo-password")
    page.click("#sign-in")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=disconnected]")
    assert page.is_visible("#sandbox")
    assert page.text_content("#connect-google") == "Connect Google Calendar"
    assert page.text_content("#connect-microsoft") == "Connect Outlook Calendar"


@pytest.mark.django_db(transaction=True)
def test_member_connects_syncs_and_disconnects(page, live_server, fake_google, fake_microsoft):
    user, booking = member_with_booking()
    sign_in(page, live_server)

    page.click("#connect-google")  # to the fake Google's consent page
    page.wait_for_selector("#allow")
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=active]")
    assert "connected" in page.text_content("#outcome")
    assert not [
        c for c in page.context.cookies() if c["name"] == "calendar_sync_flow"
    ]  # the flow cookie: shown once, then cleared

    page.wait_for_selector("#calendar-select option", state="attached")
    page.select_option("#calendar-select", "team@group.calendar.google.com")
    page.click("#save-calendar")
    page.wait_for_function("document.getElementById('outcome').textContent.includes('Saved')")
    assert CalendarToken.objects.get(user=user).calendar_id == "team@group.calendar.google.com"

    page.click(f"#booking-{booking.pk} button[data-action=confirm]")
    page.wait_for_selector(f"#booking-{booking.pk} .sync-state[data-state=synced]")
    events = fake_google.events("member@example.com", "team@group.calendar.google.com")
    assert list(events) == [get_source("booking").event_id(booking.pk)]

    page.click("#ical-create")
    page.wait_for_function("document.getElementById('ical-url').textContent.endsWith('.ics')")
    assert page.text_content("#ical-url").startswith(live_server.url)

    page.screenshot(path=os.environ.get("BROWSER_SCREENSHOT", "/tmp/calendar-page.png"), full_page=True)
    # Cancel asks first, on a page of its own; then the row says where the booking really is.
    page.click(f"#booking-{booking.pk} [data-action=cancel]")
    page.wait_for_selector("#cancel-confirm")
    assert "Deep work" in page.text_content("#cancel-booking")
    page.click("#cancel-confirm")
    page.wait_for_selector(f"#booking-{booking.pk} .sync-state[data-state=removed]")
    assert "In your calendar" not in page.text_content(f"#booking-{booking.pk}")

    # Disconnect asks first too: "keep" changes nothing.
    page.click("#disconnect")
    page.click("#disconnect-keep")
    assert page.is_visible("#disconnect") and CalendarToken.objects.exists()
    page.click("#disconnect")
    page.click("#disconnect-confirm")
    page.wait_for_selector("#status[data-state=disconnected]")
    page.wait_for_selector(f"#booking-{booking.pk} .sync-state[data-state=not_connected]")
    assert not CalendarToken.objects.exists()
    assert not fake_google.grants  # revoked at the fake Google


@pytest.mark.django_db(transaction=True)
def test_without_the_flow_cookie_the_page_finishes_with_the_members_session(
    page, live_server, fake_google, fake_microsoft
):
    """A browser that drops the flow cookie is sent back with the code and state; the page posts them
    to .../complete with the member's own session, which is what links the calendar."""
    user, _ = member_with_booking()
    sign_in(page, live_server)
    page.click("#connect-google")
    page.wait_for_selector("#allow")
    page.context.clear_cookies(name="calendar_sync_flow")
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=active]")
    assert "connected" in page.text_content("#outcome")
    assert page.url == f"{live_server.url}/integrations/calendar"  # the code and state are gone from the address bar
    assert CalendarToken.objects.get(user=user).provider == "google"


@pytest.mark.django_db(transaction=True)
def test_member_connects_outlook_and_sees_a_booking_synced(page, live_server, fake_google, fake_microsoft):
    user, booking = member_with_booking(title="Board review")
    sign_in(page, live_server)

    page.click("#connect-microsoft")  # to the fake Microsoft's consent page
    page.wait_for_selector("#allow")
    page.select_option("select[name=login_hint]", "member@contoso.com")
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=active]")
    assert "Outlook" in page.text_content("#outcome")
    assert "Outlook Calendar" in page.text_content("#status")
    assert page.is_hidden("#connect-microsoft")
    # The other provider's card: connecting it would replace this connection.
    assert page.text_content("#connect-google") == "Connect Google Calendar"
    assert "replaces your Outlook Calendar connection" in page.text_content("#provider-google")
    assert "Google" not in page.text_content("#provider-microsoft")
    assert CalendarToken.objects.get(user=user).provider == "microsoft"

    page.wait_for_selector("#calendar-select option", state="attached")
    page.click(f"#booking-{booking.pk} button[data-action=confirm]")
    page.wait_for_selector(f"#booking-{booking.pk} .sync-state[data-state=synced]")
    events = list(fake_microsoft.events("member@contoso.com").values())
    assert len(events) == 1
    assert "Board review" in events[0]["subject"]
    assert not fake_google.events("member@example.com")

    page.screenshot(path="/tmp/calendar-page-outlook.png", full_page=True)
    page.click("#disconnect")
    page.click("#disconnect-confirm")
    page.wait_for_selector("#status[data-state=disconnected]")
    outcome = page.text_content("#outcome")
    assert "Outlook Calendar" in outcome
    assert "Microsoft account" in outcome
    assert page.get_attribute("#outcome a[href='https://myaccount.microsoft.com/']", "href")
    assert page.get_attribute("#outcome a[href='https://account.live.com/consent/Manage']", "href")
    assert not CalendarToken.objects.exists()
    page.screenshot(path="/tmp/calendar-page-outlook-disconnected.png", full_page=True)


@pytest.mark.django_db(transaction=True)
def test_staff_connects_a_room_calendar_and_a_member_booking_reaches_it(page, live_server, fake_google, fake_microsoft):
    user, booking = member_with_booking(title="Quarterly planning")
    loft = booking.workspace
    studio = Workspace.objects.create(name="Studio B", address="2 Quay Rd", time_zone="Europe/Lisbon")
    get_user_model().objects.create_user("boss", password="boss-password", is_staff=True)
    fake_google.add_account("rooms@example.com")

    # Staff: signed out, the page asks for the site's sign-in and comes back to it.
    page.goto(f"{live_server.url}/integrations/rooms")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "boss-password")
    page.click("#sign-in")
    page.wait_for_url("**/integrations/rooms")
    page.wait_for_selector(f"#room-{loft.pk}[data-state=disconnected]")
    assert page.is_visible("#nav-rooms") and page.is_visible("#nav-calendar")
    assert page.text_content(f"#connect-{loft.pk}-google") == "Connect Google"
    assert page.text_content(f"#connect-{loft.pk}-microsoft") == "Connect Outlook"
    assert page.is_hidden(f"#disconnect-{loft.pk}") and page.is_hidden(f"#resync-{loft.pk}")

    page.click(f"#connect-{loft.pk}-google")  # to the fake Google's consent page, as the room's account
    page.wait_for_selector("#allow")
    page.select_option("select[name=account]", "rooms@example.com")
    page.click("#allow")
    page.wait_for_url("**/integrations/rooms")  # the callback's ?calendar_sync=connected&owner=… is read and cleaned up
    page.wait_for_selector(f"#room-{loft.pk}[data-state=active]")
    assert page.url == f"{live_server.url}/integrations/rooms"
    outcome = page.text_content("#outcome")
    assert "The Loft" in outcome and "connected to Google Calendar" in outcome
    assert "Connected to Google Calendar" in page.text_content(f"#room-{loft.pk}")
    assert "by boss" in page.text_content(f"#room-{loft.pk}")
    assert page.is_visible(f"#disconnect-{loft.pk}") and page.is_visible(f"#resync-{loft.pk}")
    assert page.is_hidden(f"#connect-{loft.pk}-google")
    assert page.get_attribute(f"#room-{studio.pk}", "data-state") == "disconnected"
    token = CalendarToken.objects.get(owner_kind="workspace", owner_id=str(loft.pk))
    assert token.provider == "google" and token.user is None

    # The picker lists the room account's calendars once someone reaches for it.
    page.focus(f"#calendar-{loft.pk}")
    page.wait_for_function(f"document.getElementById('calendar-{loft.pk}').options.length > 1")
    assert (
        page.eval_on_selector(f"#calendar-{loft.pk}", "s => s.selectedOptions[0].textContent")
        == "rooms@example.com (primary)"
    )
    page.click(f"#resync-{loft.pk}")
    page.wait_for_function("document.getElementById('outcome').textContent.includes('resync queued')")
    page.screenshot(path=os.environ.get("ROOMS_SCREENSHOT", "/tmp/rooms-page.png"), full_page=True)

    # A member sees neither the link nor the page.
    page.click("#sign-out")
    sign_in(page, live_server)
    assert page.query_selector("#nav-rooms") is None
    response = page.goto(f"{live_server.url}/integrations/rooms")
    assert response.status == 403 or page.url.startswith(
        f"{live_server.url}/admin/login/"
    )  # "not authorized to access this page"
    assert page.query_selector("#rooms") is None

    # The member connects their own Google calendar and confirms a booking of that room: both calendars get it.
    page.goto(f"{live_server.url}/integrations/calendar")
    page.wait_for_selector("#status[data-state=disconnected]")
    page.click("#connect-google")
    page.wait_for_selector("#allow")
    page.select_option("select[name=account]", "member@example.com")
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=active]")
    page.click(f"#booking-{booking.pk} button[data-action=confirm]")
    page.wait_for_selector(f"#booking-{booking.pk} .sync-state[data-state=synced]")
    assert len(fake_google.events("member@example.com")) == 1
    rooms = list(fake_google.events("rooms@example.com").values())
    assert len(rooms) == 1 and rooms[0]["summary"].startswith("Quarterly planning")
