"""Tokens are secrets: encrypted at rest, absent from every response, admin page and log line."""

import logging

import pytest
from django.core.management import call_command
from django.db import connection

from calendar_sync.models import CalendarToken
from tests.helpers import client_for, connect, landing

pytestmark = pytest.mark.django_db


@pytest.fixture
def secrets_of(fake_google):
    def collect():
        token = CalendarToken.objects.get()
        values = {token.access_token, token.refresh_token, *fake_google.access_tokens, *fake_google.grants}
        return {v for v in values if v}

    return collect


def raw_columns():
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM calendar_sync_calendartoken")
        return cursor.fetchone()


def test_database_holds_ciphertext(fake_google, api, member, secrets_of):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    access, refresh = raw_columns()
    token = CalendarToken.objects.get()
    assert access.startswith("gAAAA") and refresh.startswith("gAAAA")
    assert token.access_token not in access and token.refresh_token not in refresh
    assert token.access_token in fake_google.access_tokens  # and it decrypts to the real token


def test_no_token_in_responses_admin_or_logs(
    fake_google, api, member, staff, caplog, client, make_booking, django_capture_on_commit_callbacks, secrets_of
):
    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        callback = connect(api, fake_google)
        booking = make_booking(member)
        api.post(f"/api/bookings/{booking.pk}/confirm/")
    bodies = [callback["Location"]]
    for path in (
        "/api/calendar-sync/status",
        "/api/calendar-sync/calendars",
        f"/api/bookings/{booking.pk}/",
        "/api/bookings/",
    ):
        bodies.append(api.get(path).content.decode())
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    token = CalendarToken.objects.get()
    for url in (
        "/admin/calendar_sync/calendartoken/",
        f"/admin/calendar_sync/calendartoken/{token.pk}/change/",
        "/admin/calendar_sync/syncrecord/",
        "/admin/bookings/booking/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        bodies.append(page.content.decode())
    bodies.append(api.delete("/api/calendar-sync/disconnect").content.decode())
    bodies.append(repr(token))
    logged = "\n".join(r.getMessage() + " " + repr(r.args) for r in caplog.records)
    assert logged  # the flow did log
    secrets = (
        secrets_of()
        if CalendarToken.objects.exists()
        else {*fake_google.access_tokens, *fake_google.grants, token.access_token, token.refresh_token}
    )
    for secret in secrets:
        assert secret not in logged
        for body in bodies:
            assert secret not in body
    assert "gAAAA" not in "".join(bodies)


def test_admin_cannot_edit_tokens(fake_google, api, member, staff, client):
    connect(api, fake_google)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    token = CalendarToken.objects.get()
    before = raw_columns()
    client.post(f"/admin/calendar_sync/calendartoken/{token.pk}/change/", {"access_token": "evil", "calendar_id": "x"})
    assert raw_columns() == before
    assert client.get("/admin/calendar_sync/calendartoken/add/").status_code == 403


def test_admin_refresh_and_disconnect_actions(fake_google, api, member, staff, client):
    connect(api, fake_google)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    token = CalendarToken.objects.get()
    old = token.access_token
    url = "/admin/calendar_sync/calendartoken/"
    client.post(url, {"action": "refresh_now", "_selected_action": [str(token.pk)]})
    assert CalendarToken.objects.get().access_token != old
    client.post(url, {"action": "disconnect", "_selected_action": [str(token.pk)]})
    assert not CalendarToken.objects.exists()
    assert not fake_google.grants  # revoked at Google


def test_key_rotation_reencrypts(fake_google, api, member, settings):
    connect(api, fake_google)
    plain = CalendarToken.objects.get().access_token
    before = raw_columns()
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-for-rotation"
    assert CalendarToken.objects.get().access_token == plain  # old key still reads
    call_command("calendar_sync_rotate_keys")
    assert raw_columns() != before
    settings.SECRET_KEY_FALLBACKS = []
    assert CalendarToken.objects.get().access_token == plain  # readable with the new key alone


def test_cross_member_access_to_every_calendar_endpoint(fake_google, api, member, other):
    connect(api, fake_google)
    bob = client_for(other)
    assert bob.get("/api/calendar-sync/status").json()["connected"] is False
    assert bob.get("/api/calendar-sync/calendars").status_code == 409
    assert (
        bob.put("/api/calendar-sync/calendar", {"calendar_id": "member@example.com"}, format="json").status_code == 409
    )
    assert bob.delete("/api/calendar-sync/disconnect").status_code == 404
    assert CalendarToken.objects.get().user == member and CalendarToken.objects.get().calendar_id == "primary"
    anonymous = client_for(None)
    for method, path in (
        ("get", "auth/google"),
        ("get", "status"),
        ("get", "calendars"),
        ("put", "calendar"),
        ("delete", "disconnect"),
    ):
        assert getattr(anonymous, method)(f"/api/calendar-sync/{path}").status_code in (401, 403)


def test_oversized_and_malformed_calendar_input(fake_google, api, member):
    connect(api, fake_google)
    for body in ({"calendar_id": "x" * 5000}, {"calendar_id": None}, {}, ["primary"]):
        response = api.put("/api/calendar-sync/calendar", body, format="json")
        assert response.status_code == 400, body
    bad = api.generic("PUT", "/api/calendar-sync/calendar", "{oops", content_type="application/json")
    assert bad.status_code == 400 and "detail" in bad.json()
    assert CalendarToken.objects.get().calendar_id == "primary"


def test_oversized_body_is_a_json_413(api, workspace):
    from bookings.models import Booking

    body = '{"title": "' + "x" * 3_000_000 + '"}'
    for method, path in (("post", "/api/bookings/"), ("put", "/api/calendar-sync/calendar")):
        response = api.generic(method.upper(), path, body, content_type="application/json")
        assert response.status_code == 413 and response.json()["code"] == "too_large", path
    assert Booking.objects.count() == 0


def test_unauthenticated_access_everywhere(db):
    anonymous = client_for(None)
    for method, path in (
        ("get", "/api/bookings/"),
        ("post", "/api/bookings/"),
        ("get", "/api/workspaces/"),
        ("post", "/api/workspaces/"),
        ("get", "/api/calendar-sync/ical"),
        ("post", "/api/calendar-sync/ical"),
        ("post", "/api/calendar-sync/ical/rotate"),
        ("delete", "/api/calendar-sync/ical"),
    ):
        response = getattr(anonymous, method)(path)
        assert response.status_code in (401, 403), (method, path)
        assert "detail" in response.json()
    page = anonymous.get("/integrations/calendar")
    assert page.status_code == 302 and "/accounts/login/" in page["Location"]


def test_feed_of_another_member_is_never_shown_or_rotated(api, member, other):
    from calendar_sync.models import CalendarFeed

    mine = api.post("/api/calendar-sync/ical").json()["url"]
    bob = client_for(other)
    assert bob.get("/api/calendar-sync/ical").json()["url"] is None
    theirs = bob.post("/api/calendar-sync/ical/rotate").json()["url"]
    assert theirs != mine
    assert api.get("/api/calendar-sync/ical").json()["url"] == mine  # bob's rotate touched only his feed
    bob.delete("/api/calendar-sync/ical")
    assert CalendarFeed.objects.filter(user=member).exists()


def test_oauth_codes_never_reach_the_access_log():
    import logging

    from managehub.log_filters import RedactOAuthQuery

    record = logging.LogRecord(
        "django.server",
        logging.INFO,
        __file__,
        1,
        '"%s" %s %s',
        ("GET /api/calendar-sync/auth/google/callback?state=abc.def&code=4/secret-code&scope=x HTTP/1.1", "302", "0"),
        None,
    )
    RedactOAuthQuery().filter(record)
    message = record.getMessage()
    assert "4/secret-code" not in message and "abc.def" not in message and "scope=x" in message
