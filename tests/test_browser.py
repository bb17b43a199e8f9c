"""A member clicks through the calendar page in headless Chromium against the fake Google and
the fake Microsoft (both configured, so the page shows a card for each).

Needs Debian's `chromium` (`.ci/run` installs it). Locally without it the test is skipped;
in CI it fails instead.
"""
import os
import shutil

import pytest
from django.contrib.auth import get_user_model

from bookings.models import Booking, Workspace
from calendar_sync.models import CalendarToken
from calendar_sync.sources import get_source
from tests.conftest import IN_CI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(live_server, fake_google, fake_microsoft, settings):
    if not CHROMIUM:
        if IN_CI:
            pytest.fail("CI must run the browser test: Debian's chromium is missing")
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "GOOGLE_REDIRECT_URI": f"{live_server.url}/api/calendar-sync/auth/google/callback",
        "MICROSOFT_REDIRECT_URI": f"{live_server.url}/api/calendar-sync/auth/microsoft/callback",
        "FRONTEND_URL": f"{live_server.url}/integrations/calendar",
    }
    settings.CALENDAR_SYNC_SANDBOX = True
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # the live server runs beside Playwright's loop
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page()
        browser.close()


def member_with_booking(title="Deep work"):
    from django.utils import timezone

    user = get_user_model().objects.create_user("demo", password="demo-password")
    workspace = Workspace.objects.create(name="The Loft", address="1 Harbour St", time_zone="Europe/Lisbon")
    start = timezone.now() + timezone.timedelta(days=1)
    booking = Booking.objects.create(user=user, workspace=workspace, title=title, start=start, end=start + timezone.timedelta(hours=2))
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
    page.click("#disconnect")
    page.wait_for_selector("#status[data-state=disconnected]")
    assert not CalendarToken.objects.exists()
    assert not fake_google.grants  # revoked at the fake Google


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
    page.wait_for_selector("#status[data-state=disconnected]")
    outcome = page.text_content("#outcome")
    assert "Outlook Calendar" in outcome
    assert "Microsoft account" in outcome
    assert page.get_attribute("#outcome a[href='https://myaccount.microsoft.com/']", "href")
    assert page.get_attribute("#outcome a[href='https://account.live.com/consent/Manage']", "href")
    assert not CalendarToken.objects.exists()
    page.screenshot(path="/tmp/calendar-page-outlook-disconnected.png", full_page=True)
