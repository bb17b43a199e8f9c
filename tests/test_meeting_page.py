"""The members' page as a meeting: guests and a video link on the booking form (only the links the
member's calendar can make now, said why when none), each guest's answer and the join link on the
booking's row, refusals next to their field with nothing saved, and never a 500 on hostile input.
Over HTTP against the fake Google and Microsoft, with the page's own forms (no JavaScript)."""

import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from bookings.models import Booking, Series, Workspace
from tests.browser import LISBON_DESKTOP, open_page
from tests.helpers import GOOGLE_ACCOUNT, connect, landing
from tests.test_browser import sign_in
from tests.test_browser_week import SCREENSHOTS

pytestmark = pytest.mark.django_db
PAGE = "/integrations/calendar"
NEW = PAGE + "/bookings/new"
PERSONAL = "someone@outlook.com"


@pytest.fixture
def browser(member):
    client = Client()
    client.force_login(member)
    return client


def form(workspace, **change):
    day = (timezone.now() + timezone.timedelta(days=3)).date()
    return {
        "workspace": workspace.pk,
        "title": "Planning",
        "date": day.isoformat(),
        "start": "09:30",
        "end": "10:30",
        "zone": "Europe/Lisbon",
        **change,
    }


def video_options(page):
    """The values of the form's video link choice; None when the page offers no choice."""
    match = re.search(r'<select name="conference"[^>]*>(.*?)</select>', page, re.S)
    return re.findall(r'<option value="([^"]*)"', match.group(1)) if match else None


def field_error(page, field):
    return html.unescape(re.search(rf'id="{field}-error"[^>]*>(.*?)</span>', page, re.S).group(1))


def row_of(page, booking):
    start = page.index(f'id="booking-{booking.pk}"')
    return page[start : page.index("</tr>", start)]


# --- the video link choice: only what the member's calendar can make now ------------------------------------
def test_a_google_member_is_offered_meet_only(google_connected, browser, workspace):
    page = browser.get(PAGE).content.decode()
    assert video_options(page) == ["none", "google_meet"]
    assert '<label for="booking-conference">Video link</label>' in page and 'id="no-video"' not in page


def test_a_microsoft_work_account_is_offered_teams(outlook, browser, workspace):
    assert video_options(browser.get(PAGE).content.decode()) == ["none", "teams"]


def test_not_connected_no_choice_and_why(browser, workspace):
    page = browser.get(PAGE).content.decode()
    assert video_options(page) is None
    assert "No video link: Connect Google Calendar or a Microsoft 365 work or school calendar" in page


def test_a_personal_microsoft_account_no_choice_and_why(fake_microsoft, api, run, browser, workspace):
    fake_microsoft.add_account(PERSONAL, personal=True)
    assert landing(run(connect, api, fake_microsoft, account=PERSONAL))["calendar_sync"] == "connected"
    page = browser.get(PAGE).content.decode()
    assert video_options(page) is None, page[page.index('id="booking-form"') :][:3000]
    assert "personal Microsoft accounts can't make them" in html.unescape(page)


def test_a_calendar_without_meet_no_choice_and_why(fake_google, api, run, browser, workspace):
    fake_google.allow_meet(GOOGLE_ACCOUNT, False)
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    page = browser.get(PAGE).content.decode()
    assert video_options(page) is None and "Google Meet is not allowed on this calendar" in html.unescape(page)


# --- booking with guests and a video link ------------------------------------------------------------------
def test_book_with_guests_and_meet_then_the_row_shows_the_link_and_answers(
    google_connected, browser, member, workspace, run
):
    guests = "Ada Lovelace <ada@Example.COM>, grace@example.org\n\n; ada@example.com\r\n"
    answer = browser.post(NEW, form(workspace, guests=guests, conference="google_meet"))
    assert answer.status_code == 302 and answer["Location"].startswith(PAGE + "#booking-")
    booking = Booking.objects.get(user=member)
    assert booking.guests == [
        {"email": "ada@example.com", "response": "needsAction"},
        {"email": "grace@example.org", "response": "needsAction"},
    ]
    assert booking.conference == "google_meet"
    row = row_of(browser.get(PAGE).content.decode(), booking)
    assert "Google Meet: made once confirmed" in row and "2 guests: 2 invited" in row

    assert run(browser.post, f"{PAGE}/bookings/{booking.pk}/confirm").status_code == 302
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert [a["email"] for a in event["attendees"]] == ["ada@example.com", "grace@example.org"]
    link = Booking.objects.get(pk=booking.pk).conference_info["join_url"]
    assert link.startswith("https://meet.google.com/")
    row = row_of(browser.get(PAGE).content.decode(), booking)
    assert f'<a href="{link}" target="_blank" rel="noopener" class="join">Join Google Meet' in row
    assert 'ada@example.com — <span class="response response-invited">invited</span>' in row

    Booking.objects.filter(pk=booking.pk).update(  # the guests' answers, as the calendar reported them
        guests=[
            {"email": "ada@example.com", "response": "accepted"},
            {"email": "grace@example.org", "response": "tentative"},
        ]
    )
    row = row_of(browser.get(PAGE).content.decode(), booking)
    assert "2 guests: 1 accepted, 1 tentative" in row and "response-tentative" in row
    assert "(opens in a new tab)" in browser.get(f"{PAGE}/bookings/{booking.pk}/move").content.decode()


def test_a_guest_declining_in_their_calendar_shows_on_the_row(google_connected, browser, member, workspace, run):
    browser.post(NEW, form(workspace, guests="grace@example.org"))
    booking = Booking.objects.get(user=member)
    run(browser.post, f"{PAGE}/bookings/{booking.pk}/confirm")
    from calendar_sync import tasks

    assert run(tasks.pull_task.delay, "user", str(member.pk)).get()["reported"] == 0  # the cursor is set
    event_id = Booking.objects.get(pk=booking.pk).google_calendar_event_id
    google_connected.respond(GOOGLE_ACCOUNT, event_id, "grace@example.org", "declined")
    assert run(tasks.pull_task.delay, "user", str(member.pk)).get()["reported"] == 1
    row = row_of(browser.get(PAGE).content.decode(), booking)
    assert "1 guest: 1 declined" in row and 'data-response="declined"' in row


def test_a_meeting_pending_or_failed_says_so_and_only_https_is_a_link(browser, member, workspace, make_booking):
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    shown = {
        "pending": ({"type": "teams", "join_url": "", "status": "pending"}, "Microsoft Teams: pending…"),
        "failed": (
            {"type": "", "join_url": "", "status": "failed", "reason": "This calendar doesn't allow <b>Meet</b>."},
            "No video link: This calendar doesn't allow <b>Meet</b>.",
        ),
        "hostile": ({"type": "google_meet", "join_url": "javascript:alert(1)", "status": "ready"}, "No video link"),
    }
    for info, said in shown.values():
        Booking.objects.filter(pk=booking.pk).update(conference="auto", conference_info=info)
        row = row_of(browser.get(PAGE).content.decode(), booking)
        assert said in html.unescape(row) and "javascript:" not in row and "<b>" not in row
    Booking.objects.filter(pk=booking.pk).update(conference_info={"status": "pending"})
    assert 'data-state="pending"' in browser.get(PAGE + "?part=bookings").content.decode()  # the script polls it


def test_the_week_shows_the_guests_and_the_join_link(browser, member, make_booking):
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    link = "https://meet.google.com/abc-defg-hij"
    Booking.objects.filter(pk=booking.pk).update(
        guests=[{"email": "ada@example.com", "response": "accepted"}],
        conference="google_meet",
        conference_info={"type": "google_meet", "join_url": link, "status": "ready"},
    )
    plain = make_booking(member, hours_from_now=30, title="Alone")
    window = {"start": booking.start.isoformat(), "end": (booking.start + timezone.timedelta(days=1)).isoformat()}
    shown = {b["id"]: b for b in browser.get(PAGE, {"part": "week", **window}).json()["bookings"]}
    assert shown[str(booking.pk)]["guests"] == "1 guest: 1 accepted"
    assert shown[str(booking.pk)]["video"] == {"state": "ready", "name": "Google Meet", "url": link}
    assert "guests" not in shown[str(plain.pk)] and "video" not in shown[str(plain.pk)]


# --- refusals: next to the field, what was typed kept, nothing saved -------------------------------------
@pytest.mark.parametrize(
    ("guests", "said"),
    [
        ("not-an-address", "'not-an-address' is not an e-mail address."),
        ("alice@example.com", "You are the organizer"),
        (", ".join(f"g{i}@example.org" for i in range(51)), "A booking has at most 50 guests."),
        ("a@example.org," * 10_000, "Too long: at most 50 e-mail addresses."),
        ("<script>alert(1)</script>@example.org", "is not an e-mail address."),
        ("zo\u00eb@ex\u00e4mple.org", "is not an e-mail address."),
        ("ada@example.org\u0000", "Null characters are not allowed."),
    ],
)
def test_bad_guests_are_refused_next_to_the_field(browser, member, workspace, guests, said):
    answer = browser.post(NEW, form(workspace, guests=guests), follow=True)
    assert answer.status_code == 200 and not Booking.objects.exists()
    page = answer.content.decode()
    assert "Not booked: " in page and said in field_error(page, "guests") and field_error(page, "guests")
    assert "<script>" not in page.split('id="book"')[1].split("</section>")[0]
    assert 'aria-invalid="true">' in page.split('id="booking-guests"')[1][:400]
    textarea = page.split('id="booking-guests"')[1].split("</textarea>")[0]
    if "\u0000" not in guests:
        assert html.unescape(textarea.split(">", 1)[1]) == guests[:20_000]
    assert 'value="Planning"' in page  # what was typed is back
    assert field_error(browser.get(PAGE).content.decode(), "guests") == ""  # said once


def test_a_video_link_the_calendar_cannot_make_is_refused(google_connected, browser, workspace):
    for conference in ("teams", "auto", "<script>"):
        page = browser.post(NEW, form(workspace, conference=conference), follow=True).content.decode()
        assert field_error(page, "conference") and not Booking.objects.exists()
        assert "<script>" not in page.split('id="book"')[1].split("</section>")[0]


def test_the_bookings_own_rules_are_said_next_to_their_field(browser, workspace):
    page = browser.post(NEW, form(workspace, end="08:00", guests="ada@example.com"), follow=True).content.decode()
    assert field_error(page, "end") == "End must be after start." and not Booking.objects.exists()
    assert "ada@example.com</textarea>" in page


def test_a_repeating_booking_with_guests_is_refused_and_without_still_books(google_connected, browser, workspace):
    repeating = {"repeat": "weekly", "ends": "count", "count": "3", "interval": "1"}
    page = browser.post(NEW, form(workspace, guests="ada@example.com", **repeating), follow=True).content.decode()
    assert "can't have guests or a video link yet" in field_error(page, "guests")
    page = browser.post(NEW, form(workspace, conference="google_meet", **repeating), follow=True).content.decode()
    assert "can't have guests or a video link yet" in field_error(page, "conference")
    assert not Series.objects.exists() and not Booking.objects.exists()
    assert browser.post(NEW, form(workspace, conference="none", **repeating)).status_code == 302
    assert Series.objects.count() == 1 and Booking.objects.count() == 3
    occurrence = Booking.objects.order_by("start").first()
    assert 'data-action="guests"' not in row_of(browser.get(PAGE).content.decode(), occurrence)
    answer = browser.post(f"{PAGE}/bookings/{occurrence.pk}/guests", {"guests": "ada@example.com"})
    assert answer.status_code == 400 and Booking.objects.get(pk=occurrence.pk).guests == []


# --- changing the guests of a booking --------------------------------------------------------------------
def test_changing_guests_keeps_answers_and_reaches_the_calendar(google_connected, browser, member, workspace, run):
    browser.post(NEW, form(workspace, guests="ada@example.com, grace@example.org"))
    booking = Booking.objects.get(user=member)
    run(browser.post, f"{PAGE}/bookings/{booking.pk}/confirm")
    Booking.objects.filter(pk=booking.pk).update(
        guests=[
            {"email": "ada@example.com", "response": "accepted"},
            {"email": "grace@example.org", "response": "declined"},
        ]
    )
    shown = browser.get(f"{PAGE}/bookings/{booking.pk}/guests").content.decode()
    assert "ada@example.com\ngrace@example.org</textarea>" in shown and 'data-action="guests"' in row_of(
        browser.get(PAGE).content.decode(), booking
    )
    answer = run(browser.post, f"{PAGE}/bookings/{booking.pk}/guests", {"guests": "ada@example.com\nlin@example.net"})
    assert answer.status_code == 302 and answer["Location"].endswith(f"#booking-{booking.pk}")
    assert Booking.objects.get(pk=booking.pk).guests == [
        {"email": "ada@example.com", "response": "accepted"},
        {"email": "lin@example.net", "response": "needsAction"},
    ]
    [event] = google_connected.events(GOOGLE_ACCOUNT).values()
    assert sorted(a["email"] for a in event["attendees"]) == ["ada@example.com", "lin@example.net"]


@pytest.mark.parametrize(
    ("guests", "said"),
    [
        ("ada@example.com, nope", "'nope' is not an e-mail address."),
        ("alice@example.com", "You are the organizer"),
        ("<script>x</script>@example.org", "is not an e-mail address."),
        ("a@example.org;" * 5_000, "Too long: at most 50 e-mail addresses."),
    ],
)
def test_bad_guests_of_a_booking_are_refused_on_its_page(browser, member, make_booking, guests, said):
    booking = make_booking(member)
    Booking.objects.filter(pk=booking.pk).update(guests=[{"email": "ada@example.com", "response": "accepted"}])
    answer = browser.post(f"{PAGE}/bookings/{booking.pk}/guests", {"guests": guests})
    page = answer.content.decode()
    assert answer.status_code == 400 and said in field_error(page, "guests") and "<script>" not in page
    assert Booking.objects.get(pk=booking.pk).guests == [{"email": "ada@example.com", "response": "accepted"}]


def test_guests_of_a_cancelled_or_someone_elses_booking_are_not_changed(browser, member, make_booking):
    cancelled = make_booking(member, status=Booking.Status.CANCELLED)
    answer = browser.post(f"{PAGE}/bookings/{cancelled.pk}/guests", {"guests": "ada@example.com"})
    assert answer.status_code == 409 and "A cancelled booking cannot be changed." in html.unescape(
        answer.content.decode()
    )
    someone = get_user_model().objects.create_user("mallory", email="mallory@example.com")
    theirs = make_booking(someone)
    for method in ("get", "post"):
        assert (
            getattr(browser, method)(f"{PAGE}/bookings/{theirs.pk}/guests", {"guests": "x@example.org"}).status_code
            == 404
        )
    assert Booking.objects.get(pk=theirs.pk).guests == [] and Booking.objects.get(pk=cancelled.pk).guests == []


# --- privilege and CSRF ---------------------------------------------------------------------------------
def test_the_forms_need_their_csrf_token(member, workspace, make_booking):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.post(NEW, form(workspace, guests="ada@example.com")).status_code == 403
    assert not Booking.objects.exists()
    booking = make_booking(member)
    assert client.post(f"{PAGE}/bookings/{booking.pk}/guests", {"guests": "ada@example.com"}).status_code == 403
    assert Booking.objects.get(pk=booking.pk).guests == []
    assert 'name="csrfmiddlewaretoken"' in client.get(f"{PAGE}/bookings/{booking.pk}/guests").content.decode()


def test_signed_out_nothing_is_booked(db, workspace):
    answer = Client().post(NEW, form(workspace, guests="ada@example.com"))
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
    assert not Booking.objects.exists()


def test_another_members_guests_and_link_are_never_shown(browser, member, workspace, make_booking):
    someone = get_user_model().objects.create_user("mallory", email="mallory@example.com")
    theirs = make_booking(someone, status=Booking.Status.CONFIRMED)
    Booking.objects.filter(pk=theirs.pk).update(
        guests=[{"email": "secret@example.org", "response": "accepted"}],
        conference="google_meet",
        conference_info={"type": "google_meet", "join_url": "https://meet.google.com/abc-defg-hij", "status": "ready"},
    )
    for url in (PAGE, PAGE + "?part=bookings"):
        body = browser.get(url).content.decode()
        assert "secret@example.org" not in body and "abc-defg-hij" not in body
    for action in ("move", "cancel"):
        assert browser.get(f"{PAGE}/bookings/{theirs.pk}/{action}").status_code == 404


# --- with JavaScript: the form posts to the bookings API, and says a refusal next to its field -----------
@pytest.fixture
def chromium(live_server, fake_google, fake_microsoft, settings, monkeypatch):
    """Headless Chromium in Lisbon's time, as the week view's browser test runs it."""
    with open_page(live_server, settings, monkeypatch, **LISBON_DESKTOP) as page:
        yield page


@pytest.mark.django_db(transaction=True)
def test_in_a_browser_guests_and_meet_are_booked_and_the_row_links_the_meeting(
    chromium, live_server, fake_google, capsys
):
    page = chromium

    def shoot(target, name):  # in $BROWSER_SCREENSHOTS, named in the run's output (as test_browser_week.py)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(SCREENSHOTS / name))
        with capsys.disabled():
            print(f"\nscreenshot: {(SCREENSHOTS / name).resolve()}")

    get_user_model().objects.create_user("demo", password="demo-password")
    Workspace.objects.create(name="The Loft", address="1 Harbour St", time_zone="Europe/Lisbon")
    sign_in(page, live_server)
    page.click("#connect-google")
    page.wait_for_selector("#allow")
    page.select_option("select[name=account]", GOOGLE_ACCOUNT)
    page.click("#allow")
    page.wait_for_url("**/integrations/calendar")
    page.wait_for_selector("#status[data-state=active]")
    assert page.eval_on_selector_all("#booking-conference option", "os => os.map((o) => o.value)") == [
        "none",
        "google_meet",
    ]

    page.fill("#booking-form input[name=title]", "Planning")
    page.fill("#booking-guests", "ada@example.com\nnot an address")
    page.click("#book-submit")
    page.wait_for_function("document.getElementById('guests-error').textContent.includes('is not an e-mail address')")
    assert page.get_attribute("#booking-guests", "aria-invalid") == "true" and not Booking.objects.exists()
    assert page.text_content("#booking-outcome") == "Not booked: 'not an address' is not an e-mail address."

    shoot(page.locator("#book"), "booking-form-guests.png")
    page.fill("#booking-guests", "Ada <ada@example.com>; grace@example.org")
    page.select_option("#booking-conference", "google_meet")
    page.click("#book-submit")
    page.wait_for_function("document.getElementById('booking-outcome').textContent.includes('Booked')")
    assert page.text_content("#guests-error") == "" and page.get_attribute("#booking-guests", "aria-invalid") is None
    booking = Booking.objects.get(title="Planning")
    assert [g["email"] for g in booking.guests] == ["ada@example.com", "grace@example.org"]
    assert booking.conference == "google_meet"

    page.wait_for_selector(f"#booking-{booking.pk} button[data-action=confirm]").click()
    join = page.wait_for_selector(f"#booking-{booking.pk} a.join")
    assert join.get_attribute("href").startswith("https://meet.google.com/")
    assert (join.get_attribute("target"), join.get_attribute("rel")) == ("_blank", "noopener")
    assert "2 guests: 2 invited" in page.text_content(f"#booking-{booking.pk}")
    page.click(f"#booking-{booking.pk} details.guests summary")
    shoot(page.locator("#bookings"), "booking-row-meeting.png")
    in_week = page.wait_for_selector(f"#week-grid .event[data-booking='{booking.pk}'] a.join")
    assert in_week.get_attribute("href") == join.get_attribute("href") and in_week.get_attribute("rel") == "noopener"
