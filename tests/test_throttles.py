"""Brute force and quota abuse: sign-in attempts are counted per account name (in the form
authentication compares) and per client address on all three sign-in entry points; member- and
staff-triggered provider calls are limited per owner; replayed push notifications cost one pull."""

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from calendar_sync import channels
from calendar_sync.models import AccessLog
from managehub.signin import LoginThrottle
from tests.helpers import GOOGLE_PATH, GRAPH_PATH, client_for, google_headers, room_on, set_push_url

TOKEN_URL = "/api/auth/token/"
SPELLINGS = [
    "staffer",
    " staffer",
    "staffer ",
    "\tstaffer",
    "staffer\n",
    "Staffer",
    "ｓｔａｆｆｅｒ",
    "\u00a0staffer\u3000",
]


@pytest.fixture
def staffer(make_user):
    return make_user("staffer", is_staff=True, is_superuser=True)


@pytest.fixture
def login_rate(monkeypatch):
    """Set the sign-in rate (LOGIN_THROTTLE_RATE): DRF copies the rates into the class at import."""

    def set_rate(rate):
        monkeypatch.setitem(LoginThrottle.THROTTLE_RATES, LoginThrottle.scope, rate)

    return set_rate


def api_sign_in(username, password, address="10.0.0.1"):
    return client_for(None).post(
        TOKEN_URL, {"username": username, "password": password}, format="json", REMOTE_ADDR=address
    )


def page_sign_in(path, username, password, address="10.0.0.1"):
    return Client().post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def assert_throttled_json(response):
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "throttled" and response.json()["detail"]
    assert int(response["Retry-After"]) > 0


# --- sign-in ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_every_spelling_of_a_name_is_one_account_to_the_throttle_and_to_authentication(staffer, login_rate):
    # Authentication reads the name the way the throttle counts it: trimmed and NFKC-normalised.
    for spelling in ("  staffer  ", "\tstaffer\n", "ｓｔａｆｆｅｒ"):
        assert api_sign_in(spelling, "pw-staffer", address="10.9.9.9").status_code == 200, spelling
    login_rate("8/min")
    cache.clear()
    # Eight wrong guesses, each spelled differently and sent from its own address.
    codes = [api_sign_in(name, "wrong", address=f"10.0.1.{i}").status_code for i, name in enumerate(SPELLINGS)]
    assert codes == [400] * 8
    for i, name in enumerate(["staffer", " staffer", "staffer ", "\tstaffer", "  staffer  ", "ｓｔａｆｆｅｒ"]):
        assert_throttled_json(api_sign_in(name, "pw-staffer", address=f"10.0.2.{i}"))  # the right password too
    assert api_sign_in("someone-else", "wrong", address="10.0.3.1").status_code == 400  # other accounts are not held up


@pytest.mark.django_db
def test_one_address_trying_many_names_is_throttled(staffer, login_rate):
    login_rate("5/min")
    codes = [api_sign_in(f"user{i}", "wrong", address="10.0.0.7").status_code for i in range(8)]
    assert codes == [400] * 5 + [429] * 3
    assert_throttled_json(api_sign_in("staffer", "pw-staffer", address="10.0.0.7"))
    assert api_sign_in("staffer", "pw-staffer", address="10.0.0.8").status_code == 200  # another address, a fresh count


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_sign_in_pages_are_throttled_like_the_api(staffer, login_rate, path):
    login_rate("5/min")
    for i, name in enumerate(SPELLINGS[:5]):
        response = page_sign_in(path, name, "wrong", address=f"10.0.4.{i}")
        assert response.status_code == 200 and not response.wsgi_request.user.is_authenticated, name
    for i, name in enumerate(["staffer", "  staffer  ", "\tstaffer", "ｓｔａｆｆｅｒ"]):
        response = page_sign_in(path, name, "pw-staffer", address=f"10.0.5.{i}")
        assert response.status_code == 429 and int(response["Retry-After"]) > 0, name
        assert "Too many sign-in attempts" in response.content.decode() and "sessionid" not in response.cookies
    assert Client().get(path, REMOTE_ADDR="10.0.5.0").status_code == 200  # showing the form is not an attempt
    # From one address, whatever the names.
    codes = [page_sign_in(path, f"user{i}", "wrong", address="10.0.6.1").status_code for i in range(7)]
    assert codes == [200] * 5 + [429] * 2


@pytest.mark.django_db
def test_the_three_entry_points_share_one_count(staffer, login_rate):
    login_rate("6/min")
    assert api_sign_in("staffer", "wrong", address="10.0.7.1").status_code == 400
    assert api_sign_in(" staffer", "wrong", address="10.0.7.2").status_code == 400
    for i in range(2):
        assert page_sign_in("/accounts/login/", "staffer ", "wrong", address=f"10.0.7.{3 + i}").status_code == 200
        assert page_sign_in("/admin/login/", "\tstaffer", "wrong", address=f"10.0.7.{5 + i}").status_code == 200
    assert_throttled_json(api_sign_in("staffer", "pw-staffer", address="10.0.7.9"))
    assert page_sign_in("/accounts/login/", "staffer", "pw-staffer", address="10.0.7.10").status_code == 429
    response = page_sign_in("/admin/login/", "staffer", "pw-staffer", address="10.0.7.11")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0


@pytest.mark.django_db
def test_a_good_sign_in_still_works_on_each_page(staffer):
    response = page_sign_in("/accounts/login/", " staffer ", "pw-staffer")
    assert response.status_code == 302 and "sessionid" in response.cookies
    response = page_sign_in("/admin/login/", "staffer", "pw-staffer", address="10.0.0.2")
    assert response.status_code == 302 and "sessionid" in response.cookies


# --- provider calls --------------------------------------------------------------------------------
LIMIT = 5


@pytest.fixture
def provider_rate(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PROVIDER_CALL_THROTTLE_RATE": f"{LIMIT}/min"}


def burst(send, count=40):
    """`count` requests; the answers that got through, after checking every other one is a JSON 429."""
    answers = [send(i) for i in range(count)]
    passed = [a for a in answers if a.status_code != 429]
    for answer in answers[len(passed) :]:
        assert_throttled_json(answer)
    return passed


def window(i):
    start = timezone.now().replace(microsecond=0) + timedelta(days=3, seconds=i)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}


@pytest.mark.django_db
def test_a_member_cannot_spend_the_provider_quota(google_connected, api, provider_rate, other):
    fake = google_connected

    def count(path_part):
        return len([c for c in fake.calls() if path_part in c["path"]])

    passed = burst(lambda i: api.post("/api/calendar-sync/test"))
    assert [a.status_code for a in passed] == [200] * LIMIT and all(a.json() == {"ok": True} for a in passed)
    assert count("/events") == 2 * LIMIT  # insert and delete per test push, nothing for the 35 throttled
    assert client_for(other).get("/api/calendar-sync/calendars").status_code == 409  # another member's count is theirs

    cache.clear()  # a new minute
    passed = burst(lambda i: api.get("/api/calendar-sync/calendars"))
    assert [a.status_code for a in passed] == [200] * LIMIT and count("calendarList") == LIMIT

    cache.clear()
    before = len(fake.calls())
    passed = burst(lambda i: api.get("/api/calendar-sync/busy", window(i)))  # each window a new provider call
    assert [a.status_code for a in passed] == [200] * LIMIT and len(
        fake.calls()
    ) - before == LIMIT  # one events.list each

    cache.clear()  # one count for every endpoint that calls the provider
    before = len(fake.calls())
    answers = [api.get("/api/calendar-sync/busy", window(100 + i)) for i in range(3)]
    answers += [
        api.get("/api/calendar-sync/calendars"),
        api.put("/api/calendar-sync/calendar", {"calendar_id": "primary"}, format="json"),
    ]
    assert [a.status_code for a in answers] == [200] * LIMIT
    calls = len(fake.calls())
    for answer in (
        api.post("/api/calendar-sync/test"),
        api.get("/api/calendar-sync/calendars"),
        api.get("/api/calendar-sync/busy", window(200)),
        api.put("/api/calendar-sync/calendar", {"calendar_id": "primary"}, format="json"),
    ):
        assert_throttled_json(answer)
    assert len(fake.calls()) == calls > before
    assert api.get("/api/calendar-sync/status").status_code == 200  # no provider call, no limit


@pytest.mark.django_db
def test_a_shared_calendar_has_one_count_whoever_of_the_staff_asks(
    fake_google, staff, make_user, workspace, provider_rate
):
    room_on(fake_google, staff, workspace)
    fake_google.reset_log()
    colleague = client_for(make_user("colleague", is_staff=True))
    base = f"/api/calendar-sync/shared/workspace/{workspace.pk}/"
    mine = [client_for(staff).get(base + "calendars") for _ in range(3)] + [
        colleague.post(base + "test") for _ in range(2)
    ]
    assert [a.status_code for a in mine] == [200] * LIMIT
    calls = len(fake_google.calls(fake_google.room_account))
    assert_throttled_json(colleague.get(base + "calendars"))
    assert_throttled_json(client_for(staff).put(base + "calendar", {"calendar_id": "primary"}, format="json"))
    assert_throttled_json(client_for(staff).post(base + "test"))
    other_spelling = client_for(staff).get(f"/api/calendar-sync/shared/workspace/0{workspace.pk}/calendars")
    assert other_spelling.status_code in (404, 429)  # the room's own key, however its id is written
    assert len(fake_google.calls(fake_google.room_account)) == calls
    assert client_for(staff).get("/api/calendar-sync/calendars").status_code == 409  # staff's own count is separate


@pytest.mark.django_db
def test_the_limit_is_documented(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = {
        ("/api/calendar-sync/test/", "post"),
        ("/api/calendar-sync/calendars/", "get"),
        ("/api/calendar-sync/calendar/", "put"),
        ("/api/calendar-sync/busy/", "get"),
    }
    paths |= {
        (p.replace("/api/calendar-sync/", "/api/calendar-sync/shared/{kind}/{owner_id}/"), m)
        for p, m in paths
        if "busy" not in p
    }
    for path, method in paths:
        response = schema["paths"][path][method]["responses"]["429"]
        assert response["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error", path
        assert "Retry-After" in response["headers"], path
    assert "429" not in schema["paths"]["/api/calendar-sync/status/"]["get"]["responses"]


# --- push notifications ----------------------------------------------------------------------------
def push_pulls():
    return AccessLog.objects.filter(operation=AccessLog.Operation.PULL, reason=AccessLog.Reason.PUSH).count()


@pytest.mark.django_db
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_replayed_notifications_cost_one_pull(provider, fake_google, fake_microsoft, staff, workspace, settings):
    fake = fake_google if provider == "google" else fake_microsoft
    set_push_url(settings, "http://127.0.0.1:9")
    room = room_on(fake, staff, workspace)
    assert channels.ensure_watch(room.token)
    token = room.token
    at = timezone.now().replace(microsecond=0) + timedelta(days=2)
    fake.add_event(fake.room_account, at, at + timedelta(hours=1), title="Client call")
    calls = fake.calls

    def replay():
        if provider == "google":
            return Client().post(GOOGLE_PATH, **google_headers(token))
        item = {
            "subscriptionId": token.push_channel,
            "clientState": channels.channel_secret(token),
            "changeType": "updated",
            "resource": f"Users/{fake.room_account}/Events/AAMk-1",
        }
        return Client().post(GRAPH_PATH, {"value": [item]}, content_type="application/json")

    fake.reset_log()
    before = push_pulls()
    answers = [replay() for _ in range(25)]
    assert {a.status_code for a in answers} == {200 if provider == "google" else 202}  # every one acknowledged
    assert push_pulls() == before + 1
    one_pull = len(calls())
    assert one_pull >= 1 and room.token.pulled_at

    time.sleep(
        settings.CALENDAR_SYNC.get("PUSH_COALESCE_SECONDS", 1) + 0.1
    )  # the window has passed: the next one pulls
    fake.reset_log()
    replay()
    assert push_pulls() == before + 2 and len(calls()) == 1  # one incremental read


@pytest.mark.django_db
def test_coalescing_can_be_turned_off(fake_google, staff, workspace, settings):
    set_push_url(settings, "http://127.0.0.1:9")
    room = room_on(fake_google, staff, workspace)
    channels.ensure_watch(room.token)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PUSH_COALESCE_SECONDS": 0}
    before = push_pulls()
    for _ in range(3):
        assert Client().post(GOOGLE_PATH, **google_headers(room.token)).status_code == 200
    assert push_pulls() == before + 3


@pytest.mark.django_db
def test_sign_in_is_throttled(member):
    anonymous = client_for(None)
    codes = [
        anonymous.post("/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json").status_code
        for _ in range(30)
    ]
    assert 429 in codes and codes[0] == 400
    throttled = anonymous.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert throttled.json()["code"] == "throttled"


@pytest.mark.django_db
def test_connect_is_throttled(fake_google, api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "CONNECT_THROTTLE_RATE": "5/min"}
    codes = [api.get("/api/calendar-sync/auth/google").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
