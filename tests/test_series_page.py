"""The members' page for recurring bookings, without a browser: "Repeat" on the booking form makes a
series through the same services as the series API (same errors, same bounds), the series shows in
the week and the lists, Confirm confirms it in one action, and Cancel and Move ask "this one / this and
following / all". Only the member's own bookings and series; CSRF on every form; no 500 on any input."""

import datetime as dt
import html
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from bookings import repeat
from bookings.models import Booking, Series
from tests.browser import LISBON_DESKTOP, open_page, said

pytestmark = pytest.mark.django_db
PAGE = "/integrations/calendar"
NEW = PAGE + "/bookings/new"
LISBON = ZoneInfo("Europe/Lisbon")


@pytest.fixture
def browser(member):
    client = Client()
    client.force_login(member)
    return client


def next_weekday(weekday, weeks=1):
    """A date `weeks` weeks ahead (Lisbon), on `weekday` (0 = Monday)."""
    today = timezone.now().astimezone(LISBON).date()
    return today + dt.timedelta(days=7 * weeks - today.weekday() + weekday)


def form(ws, **extra):
    """Weekly on Mondays and Thursdays, 09:00–10:00 Lisbon, 4 times, from next week's Monday."""
    return {
        "workspace": ws.pk,
        "title": "Team room",
        "date": next_weekday(0).isoformat(),
        "start": "09:00",
        "end": "10:00",
        "zone": "Europe/Lisbon",
        "repeat": "weekly",
        "days": ["MO", "TH"],
        "interval": "1",
        "ends": "count",
        "count": "4",
        **extra,
    }


def local(booking, zone=LISBON):
    return booking.start.astimezone(zone)


def book_series(browser, workspace, **extra):
    answer = browser.post(NEW, form(workspace, **extra))
    assert answer.status_code == 302, answer.content
    series = Series.objects.get()
    assert answer["Location"] == f"{PAGE}#series-{series.pk}"
    return series


def occurrences(series):
    return list(series.bookings.order_by("start"))


def test_the_form_offers_repeat_with_labelled_fields(browser, workspace):
    page = browser.get(PAGE).content.decode()
    form_html = page[page.index('id="booking-form"') : page.index("</form>", page.index('id="booking-form"'))]
    assert "csrfmiddlewaretoken" in form_html
    for needed in (
        '<label for="repeat-kind" class="inline-label">',
        '<option value="weekly">Weekly</option>',
        '<label for="repeat-interval" class="inline-label">',
        '<label for="ends-count"',
        '<label for="ends-until"',
        'aria-label="Number of times"',
        'aria-label="Last date"',
        "<legend>On</legend>",
    ):
        assert needed in form_html, needed
    for code, name in repeat.DAY_NAMES.items():  # a checkbox per day, each inside its label
        assert f'<input type="checkbox" name="days" value="{code}" aria-label="{name}"> <abbr' in form_html


def test_weekly_on_two_days_every_other_week_from_a_wednesday(browser, member, workspace):
    """The series starts on the first chosen day from the date; every other week; 4 times."""
    wednesday = next_weekday(2)
    series = book_series(browser, workspace, date=wednesday.isoformat(), interval="2")
    assert (series.rule, series.user, series.title) == (
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=4",
        member,
        "Team room",
    )
    days = [local(b) for b in occurrences(series)]
    thursday = wednesday + dt.timedelta(days=1)
    assert [d.date() for d in days] == [
        thursday,
        thursday + dt.timedelta(days=11),  # Monday two weeks on
        thursday + dt.timedelta(days=14),
        thursday + dt.timedelta(days=25),
    ]
    assert {d.strftime("%H:%M") for d in days} == {"09:00"}
    assert {b.status for b in occurrences(series)} == {Booking.Status.PENDING}
    note = browser.get(PAGE).content.decode()
    assert "Booked “Team room”, every 2 weeks on Monday and Thursday, 09:00–10:00 (Europe/Lisbon), 4 times" in note


def test_until_a_date_and_no_day_chosen_repeats_on_the_dates_own_day(browser, workspace):
    monday = next_weekday(0)
    until = monday + dt.timedelta(days=21)
    series = book_series(browser, workspace, days=[], ends="until", until=until.isoformat(), count="")
    assert [local(b).date() for b in occurrences(series)] == [monday + dt.timedelta(days=7 * i) for i in range(4)]
    assert series.rule.startswith("FREQ=WEEKLY;BYDAY=MO;UNTIL=")
    assert repeat.words(series).endswith(f"until Mon {until.day} {until:%b %Y}")


def test_the_browsers_days_are_moved_to_the_workspaces(browser, workspace):
    """22:00 on a Monday in New York is Tuesday in Lisbon, where the rule is expanded."""
    york = ZoneInfo("America/New_York")
    series = book_series(browser, workspace, zone="America/New_York", days=["MO"], start="22:00", end="23:00")
    assert series.rule == "FREQ=WEEKLY;BYDAY=TU;COUNT=4"
    assert {local(b, york).strftime("%a") for b in occurrences(series)} == {"Mon"}
    assert local(occurrences(series)[0], york).date() == next_weekday(0)


def test_a_clash_names_the_dates_and_offers_to_book_the_others(browser, other, workspace):
    taken = dt.datetime.combine(next_weekday(3), dt.time(9, 30), LISBON)  # the first Thursday
    Booking.objects.create(
        user=other,
        workspace=workspace,
        title="Theirs",
        start=taken,
        end=taken + dt.timedelta(hours=1),
        status="confirmed",
    )
    answer = browser.post(NEW, form(workspace))
    assert answer.status_code == 409 and not Series.objects.exists()
    page = answer.content.decode()
    assert f"The Loft is already booked on {next_weekday(3).isoformat()}." in page
    assert f"<li>{next_weekday(3):%a} {next_weekday(3).day} {next_weekday(3):%b %Y}</li>" in page
    assert "Theirs" not in page  # another member's booking: its date only
    # The page's own form: every field sent again, with skip_conflicts.
    resend = page[page.index('id="series-conflict"') :]
    fields = [(html.unescape(k), html.unescape(v)) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', resend)]
    data = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    assert data["skip_conflicts"] == ["on"] and data["days"] == ["MO", "TH"]
    answer = browser.post(NEW, data)
    series = Series.objects.get()
    assert answer["Location"] == f"{PAGE}#series-{series.pk}"
    assert next_weekday(3) not in [local(b).date() for b in occurrences(series)]
    assert len(occurrences(series)) == 3
    day = next_weekday(3)
    assert f"3 dates, leaving out {day:%a} {day.day} {day:%b %Y}" in browser.get(PAGE).content.decode()


def test_every_date_taken_offers_nothing_to_skip(browser, other, workspace):
    start = dt.datetime.combine(next_weekday(0), dt.time(9), LISBON)
    Booking.objects.create(
        user=other, workspace=workspace, title="x", start=start, end=start + dt.timedelta(hours=1), status="confirmed"
    )
    answer = browser.post(NEW, form(workspace, days=["MO"], count="1", skip_conflicts="on"))
    assert answer.status_code == 409 and not Series.objects.exists()
    assert 'id="skip-conflicts"' not in answer.content.decode()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"count": "201"}, "COUNT=201: a series has at most 200 occurrences."),
        ({"count": "9999"}, "COUNT=9999: a series has at most 200 occurrences."),
        ({"ends": "until", "until": "2999-01-01"}, "a series spans at most one year."),
        ({"days": ["MO"], "interval": "366", "count": "2"}, "COUNT=2: the occurrences would span more than one year."),
        ({"end": "08:00"}, "End must be after start."),
        ({"ends": "until", "until": "2000-01-01"}, "is before the first occurrence."),
    ],
)
def test_the_series_rules_are_the_services_said_in_the_same_words(browser, workspace, change, said):
    answer = browser.post(NEW, form(workspace, **change), follow=True)
    assert answer.status_code == 200 and not Series.objects.exists()
    assert "Not booked: " in answer.content.decode() and said in html.unescape(answer.content.decode())


def test_the_horizon_applies_to_the_last_date(browser, workspace, settings):
    settings.BOOKING_HORIZON_DAYS = 30
    answer = browser.post(NEW, form(workspace, count="20"), follow=True)
    assert "Not booked: Bookings can be made at most 30 days ahead." in answer.content.decode()
    assert not Series.objects.exists() and not Booking.objects.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"days": ["XX"]},
        {"days": ["MO", "<script>"]},
        {"interval": "0"},
        {"interval": "abc"},
        {"interval": "99999999999999999999"},
        {"count": "-1"},
        {"count": ""},
        {"ends": "until", "until": ""},
        {"ends": "until", "until": "someday"},
        {"ends": "until", "until": "9999-12-31"},
        {"ends": "sometime"},
        {"repeat": "hourly"},
        {"date": "0001-01-01"},
        {"date": "9999-12-31"},
        {"zone": "../../etc/passwd"},
        {"title": "x" * 500},
        {"workspace": "'; DROP TABLE"},
    ],
)
def test_hostile_input_is_refused_in_words_never_a_500(browser, workspace, change):
    answer = browser.post(NEW, form(workspace, **change), follow=True)
    assert answer.status_code == 200
    page = answer.content.decode()
    if change.get("zone"):  # an unknown zone is not trusted: the workspace's is used
        assert Series.objects.count() == 1
    else:
        assert "Not booked: " in page and not Series.objects.exists() and not Booking.objects.exists()
    assert "<script>" not in page.split('id="outcome"')[1].split("</p>")[0]


def test_the_week_marks_occurrences_with_their_series(browser, member, workspace, make_booking):
    series = book_series(browser, workspace)
    single = make_booking(member, hours_from_now=24 * 8 + 3, title="Alone")
    first = occurrences(series)[0]
    window = {
        "start": (first.start - dt.timedelta(days=1)).isoformat(),
        "end": (first.start + dt.timedelta(days=7)).isoformat(),
    }
    answer = json.loads(browser.get(PAGE, {"part": "week", **window}).content)["bookings"]
    shown = {b["id"]: b for b in answer}
    words = "Every week on Monday and Thursday, 09:00–10:00 (Europe/Lisbon), 4 times"
    assert shown[str(first.pk)]["series"] == {"id": str(series.pk), "title": "Team room", "rule": words}
    if str(single.pk) in shown:
        assert "series" not in shown[str(single.pk)]
    script = Path(finders.find("bookings/week.js")).read_text()
    assert "↻" in script and "Repeats: " in script


def test_the_lists_show_the_series_and_confirm_it_in_one_action(browser, workspace):
    series = book_series(browser, workspace)
    page = browser.get(PAGE).content.decode()
    card = page[page.index(f'id="series-{series.pk}"') :]
    assert "Every week on Monday and Thursday" in card and "4 upcoming, 4 not confirmed yet" in card
    assert f'action="/integrations/calendar/series/{series.pk}/confirm"' in card
    rows = browser.get(PAGE + "?part=bookings").content.decode()
    assert rows.count("Repeats: Every week on Monday and Thursday") == 4
    answer = browser.post(f"{PAGE}/series/{series.pk}/confirm", follow=True)
    assert {b.status for b in occurrences(series)} == {Booking.Status.CONFIRMED}
    assert "Confirmed every date of “Team room”." in answer.content.decode()
    assert "not confirmed yet" not in answer.content.decode().split('id="series"')[1].split("</section>")[0]


def test_confirming_a_series_that_clashes_confirms_none_and_names_the_dates(browser, other, workspace):
    series = book_series(browser, workspace)
    taken = occurrences(series)[2]
    Booking.objects.create(
        user=other, workspace=workspace, title="x", start=taken.start, end=taken.end, status="confirmed"
    )
    answer = browser.post(f"{PAGE}/series/{series.pk}/confirm", follow=True)
    assert {b.status for b in occurrences(series)} == {Booking.Status.PENDING}
    error = answer.content.decode().split(f'id="series-{series.pk}-error"')[1].split("</p>")[0]
    assert f"Not confirmed: The Loft is already booked on {local(taken).date().isoformat()}." in error


def cancel(browser, booking, scope):
    return browser.post(f"{PAGE}/bookings/{booking.pk}/cancel", {"scope": scope})


def test_cancelling_an_occurrence_asks_which(browser, workspace):
    series = book_series(browser, workspace, count="6")
    dates = occurrences(series)
    page = browser.get(f"{PAGE}/bookings/{dates[1].pk}/cancel").content.decode()
    for scope, label in (
        ("one", "Only this one"),
        ("following", "This one and every later one"),
        ("all", "Every upcoming"),
    ):
        assert f'<input type="radio" name="scope" value="{scope}" id="scope-{scope}"' in page
        assert label in page
    assert "<legend>Cancel which?</legend>" in page and "csrfmiddlewaretoken" in page
    assert 'value="one" id="scope-one" checked' in page
    assert (
        'value="all" id="scope-all" checked'
        in browser.get(f"{PAGE}/bookings/{dates[1].pk}/cancel?scope=all").content.decode()
    )

    assert cancel(browser, dates[1], "one").status_code == 302
    assert [b.status for b in occurrences(series)] == ["pending", "cancelled"] + ["pending"] * 4
    assert cancel(browser, dates[3], "following").status_code == 302
    assert [b.status for b in occurrences(series)] == ["pending", "cancelled", "pending"] + ["cancelled"] * 3
    assert cancel(browser, dates[0], "all").status_code == 302
    assert {b.status for b in occurrences(series)} == {"cancelled"}


@pytest.mark.parametrize("scope", ["everything", "", "<b>"])
def test_an_unknown_scope_cancels_nothing(browser, workspace, scope):
    series = book_series(browser, workspace)
    answer = cancel(browser, occurrences(series)[0], scope)
    if scope == "":  # no choice sent: this one, as without a series
        assert answer.status_code == 302
        assert [b.status for b in occurrences(series)] == ["cancelled"] + ["pending"] * 3
    else:
        assert answer.status_code == 400 and "Choose one of the options." in answer.content.decode()
        assert {b.status for b in occurrences(series)} == {"pending"}


def test_a_booking_on_its_own_is_only_ever_this_one(browser, member, make_booking):
    booking = make_booking(member)
    page = browser.get(f"{PAGE}/bookings/{booking.pk}/cancel").content.decode()
    assert "Cancel which?" not in page and "Yes, cancel it" in page
    assert cancel(browser, booking, "all").status_code == 400
    assert browser.post(f"{PAGE}/bookings/{booking.pk}/cancel").status_code == 302
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CANCELLED


def move(browser, booking, **data):
    return browser.post(f"{PAGE}/bookings/{booking.pk}/move", data)


def test_moving_one_occurrence_moves_only_it(browser, workspace):
    series = book_series(browser, workspace)
    dates = occurrences(series)
    page = browser.get(f"{PAGE}/bookings/{dates[1].pk}/move").content.decode()
    assert '<label for="move-date">' in page and '<label for="move-start">' in page and "csrfmiddlewaretoken" in page
    assert f'value="{local(dates[1]).date().isoformat()}"' in page and 'value="09:00"' in page
    assert 'value="following"' not in page and "is not offered" in page
    new_day = local(dates[1]).date() + dt.timedelta(days=1)
    answer = move(browser, dates[1], scope="one", date=new_day.isoformat(), start="14:00", end="15:30")
    assert answer.status_code == 302
    moved = Booking.objects.get(pk=dates[1].pk)
    assert moved.start == dt.datetime.combine(new_day, dt.time(14), LISBON)
    assert moved.end == dt.datetime.combine(new_day, dt.time(15, 30), LISBON)
    assert moved.series_id == series.pk and moved.series_start == dates[1].series_start  # still its occurrence
    assert [b.start for b in occurrences(series) if b.pk != moved.pk] == [b.start for b in dates if b.pk != moved.pk]


def test_moving_all_gives_the_series_another_time_of_day(browser, workspace):
    series = book_series(browser, workspace)
    answer = move(browser, occurrences(series)[2], scope="all", date="", start="11:00", end="12:30")
    assert answer.status_code == 302
    assert {local(b).strftime("%a %H:%M") for b in occurrences(series)} == {"Mon 11:00", "Thu 11:00"}
    assert {b.end - b.start for b in occurrences(series)} == {dt.timedelta(hours=1, minutes=30)}
    assert "11:00–12:30" in browser.get(PAGE).content.decode()


def test_a_move_onto_a_taken_time_is_a_409_and_moves_nothing(browser, other, workspace):
    series = book_series(browser, workspace)
    dates = occurrences(series)
    taken = dates[3].start.replace(hour=dates[3].start.hour + 4)
    Booking.objects.create(
        user=other, workspace=workspace, title="x", start=taken, end=taken + dt.timedelta(hours=1), status="confirmed"
    )
    hour = local(dates[3]).hour + 4
    answer = move(browser, dates[0], scope="all", start=f"{hour:02}:00", end=f"{hour + 1:02}:00")
    assert answer.status_code == 409
    assert f"Not moved: The Loft is already booked on {local(dates[3]).date().isoformat()}." in answer.content.decode()
    assert [b.start for b in occurrences(series)] == [b.start for b in dates]


@pytest.mark.parametrize(
    "data",
    [
        {"scope": "following", "start": "10:00", "end": "11:00"},
        {"scope": "bogus", "start": "10:00", "end": "11:00"},
        {"scope": "one", "date": "", "start": "10:00", "end": "11:00"},
        {"scope": "one", "date": "9999-12-31", "start": "10:00", "end": "11:00"},
        {"scope": "one", "date": "2030-02-30", "start": "10:00", "end": "11:00"},
        {"scope": "one", "start": "25:00", "end": "11:00"},
        {"scope": "one", "start": "", "end": ""},
        {"scope": "all", "start": "10:00"},
    ],
)
def test_bad_moves_are_400s_in_words(browser, workspace, data):
    series = book_series(browser, workspace)
    before = [(b.start, b.end) for b in occurrences(series)]
    answer = move(browser, occurrences(series)[0], **data)
    assert answer.status_code == 400
    assert 'id="move-error"' in answer.content.decode() and "Not moved: " in answer.content.decode()
    assert [(b.start, b.end) for b in occurrences(series)] == before


def test_only_the_members_own_bookings_and_series(browser, other, workspace):
    theirs_client = Client()
    theirs_client.force_login(other)
    series = book_series(theirs_client, workspace)
    booking = occurrences(series)[0]
    for url in (f"{PAGE}/bookings/{booking.pk}/cancel", f"{PAGE}/bookings/{booking.pk}/move"):
        assert browser.get(url).status_code == 404
        assert browser.post(url, {"scope": "all", "start": "10:00", "end": "11:00"}).status_code == 404
    assert browser.post(f"{PAGE}/series/{series.pk}/confirm").status_code == 404
    assert {b.status for b in occurrences(series)} == {"pending"}
    assert f"series-{series.pk}" not in browser.get(PAGE).content.decode()


def test_signed_out_and_without_csrf_nothing_happens(member, workspace, browser):
    series = book_series(browser, workspace)
    booking = occurrences(series)[0]
    posts = [
        (NEW, form(workspace)),
        (f"{PAGE}/series/{series.pk}/confirm", {}),
        (f"{PAGE}/bookings/{booking.pk}/cancel", {"scope": "all"}),
        (f"{PAGE}/bookings/{booking.pk}/move", {"scope": "all", "start": "10:00", "end": "11:00"}),
    ]
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(member)
    for url, data in posts:
        assert Client().post(url, data)["Location"].startswith("/accounts/login/")
        assert checked.post(url, data).status_code == 403
    assert browser.get(f"{PAGE}/series/{series.pk}/confirm").status_code == 405
    assert Series.objects.count() == 1 and {b.status for b in occurrences(series)} == {"pending"}
    assert {local(b).strftime("%H:%M") for b in occurrences(series)} == {"09:00"}


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ("FREQ=DAILY;COUNT=5", "Every day, 09:00–10:00 (Europe/Lisbon), 5 times"),
        ("FREQ=DAILY;INTERVAL=3;COUNT=1", "Every 3 days, 09:00–10:00 (Europe/Lisbon), once"),
        ("FREQ=WEEKLY;COUNT=2", "Every week on Monday, 09:00–10:00 (Europe/Lisbon), 2 times"),
        (
            "FREQ=MONTHLY;BYMONTHDAY=1,-1;COUNT=3",
            "Every month on day 1 and the last day, 09:00–10:00 (Europe/Lisbon), 3 times",
        ),
        ("FREQ=MONTHLY;BYDAY=-1FR;COUNT=3", "Every month on the last Friday, 09:00–10:00 (Europe/Lisbon), 3 times"),
        (
            "FREQ=MONTHLY;INTERVAL=2;BYDAY=2TU;COUNT=3",
            "Every 2 months on the second Tuesday, 09:00–10:00 (Europe/Lisbon), 3 times",
        ),
        (
            "FREQ=WEEKLY;UNTIL=20270301T235959Z",
            "Every week on Monday, 09:00–10:00 (Europe/Lisbon), until Mon 1 Mar 2027",
        ),
        ("not a rule", "not a rule"),
    ],
)
def test_rules_in_words(rule, said, member, workspace):
    start = dt.datetime(2026, 12, 7, 9, tzinfo=LISBON)  # a Monday
    series = Series(
        user=member,
        workspace=workspace,
        title="t",
        rule=rule,
        time_zone="Europe/Lisbon",
        start=start,
        local_start=dt.time(9),
        duration=dt.timedelta(hours=1),
    )
    assert repeat.words(series) == said


# ---- In a real browser (headless Chromium, as tests/test_browser_week.py) ------------------------------


@pytest.fixture
def page(live_server, fake_google, fake_microsoft, settings, monkeypatch):
    with open_page(live_server, settings, monkeypatch, **LISBON_DESKTOP) as page:
        yield page


def shot(target, name, capsys, **options):
    """A screenshot in $BROWSER_SCREENSHOTS, named in the run's output (as tests/test_browser_week.py does)."""
    from tests.test_browser_week import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(SCREENSHOTS / name), **options)
    with capsys.disabled():
        print(f"\nscreenshot: {(SCREENSHOTS / name).resolve()}")


@pytest.mark.django_db(transaction=True)
def test_member_repeats_a_booking_sees_it_in_the_week_confirms_it_and_cancels_the_rest(page, live_server, capsys):
    from django.contrib.auth import get_user_model

    from bookings.models import Workspace
    from tests.test_browser import sign_in

    get_user_model().objects.create_user("demo", password="demo-password")
    Workspace.objects.create(name="The Loft", address="1 Harbour St", time_zone="Europe/Lisbon")
    sign_in(page, live_server)

    page.fill("#booking-form input[name=title]", "Team room")
    page.fill("#booking-form input[name=date]", next_weekday(0).isoformat())
    page.fill("#booking-form input[name=start]", "09:00")
    page.fill("#booking-form input[name=end]", "10:00")
    assert page.is_hidden("#repeat-options")
    page.get_by_label("Repeats").select_option("weekly")
    page.locator("#repeat-days").get_by_label("Monday", exact=True).check()
    page.locator("#repeat-days").get_by_label("Thursday", exact=True).check()
    page.get_by_label("Number of times").fill("4")
    shot(page.locator("#book"), "booking-form-repeat.png", capsys)
    page.click("#book-submit")
    page.wait_for_selector("#series li[data-pending='4']")
    series = Series.objects.get()
    said(page, "Booked “Team room”, every week on Monday and Thursday")

    # The week of its first date: two occurrences, each marked ↻ with the rule in words.
    page.wait_for_function("document.querySelectorAll('#week-grid .event.booking.series').length === 2")
    block = page.locator(f"#week-grid .event.series[data-series='{series.pk}']").first
    assert "↻" in block.text_content() and "09:00–10:00" in block.text_content()
    assert "Repeats: Every week on Monday and Thursday, 09:00–10:00 (Europe/Lisbon), 4 times" in block.text_content()
    shot(page.locator("#week"), "week-view-series.png", capsys)
    shot(page, "members-page-series.png", capsys, full_page=True)

    # Confirm the series in one action.
    page.click(f"#series-{series.pk} button[data-action=confirm-series]")
    page.wait_for_selector(f"#series-{series.pk}[data-pending='0']")
    assert {b.status for b in occurrences(series)} == {"confirmed"}

    # Cancel the second date and the ones after it.
    second = occurrences(series)[1]
    page.click(f"#booking-{second.pk} a[data-action=cancel]")
    page.get_by_label("This one and every later one in the series").check()
    page.click("#cancel-confirm")
    page.wait_for_selector(f"#series-{series.pk}")
    assert [b.status for b in occurrences(series)] == ["confirmed", "cancelled", "cancelled", "cancelled"]
