"""Defects an outside test found, each kept as a test of its class: no 500s, no endless pending
work, no production on development keys, no oracle on ciphertext, brute force throttled."""
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.contrib.admin.sites import site
from django.core import signing
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.utils import timezone

from bookings.models import Booking, Workspace
from calendar_sync import oauth, sync
from calendar_sync.fields import SecretField
from calendar_sync.models import CalendarToken, OAuthState, SyncRecord
from tests.helpers import FRONTEND, client_for, connect, landing

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


class StubProvider:
    """A plain OAuth server on loopback that is not our fake: consent is skipped, the token endpoint answers."""

    def __init__(self):
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                stub.requests.append(dict(urllib.parse.parse_qsl(body)))
                data = json.dumps({"access_token": "stub-access", "refresh_token": "stub-refresh", "expires_in": 3600,
                                   "scope": "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.readonly"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def settings(self):
        return {
            "GOOGLE_CLIENT_ID": "stub-id", "GOOGLE_CLIENT_SECRET": "stub-secret",
            "GOOGLE_REDIRECT_URI": "http://127.0.0.1:8000/api/calendar-sync/auth/google/callback",
            "GOOGLE_OAUTH_AUTH_URI": f"{self.url}auth", "GOOGLE_OAUTH_TOKEN_URI": f"{self.url}token",
            "GOOGLE_OAUTH_REVOKE_URI": f"{self.url}revoke", "GOOGLE_API_ROOT": self.url, "FRONTEND_URL": FRONTEND,
        }


@pytest.fixture
def stub(settings):
    server = StubProvider()
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **server.settings()}
    yield server
    server.server.shutdown()


def test_debug_loopback_oauth_works_with_any_server_and_no_env_var(stub, settings, api, member):
    os.environ.pop("OAUTHLIB_INSECURE_TRANSPORT", None)
    settings.DEBUG = True
    response = api.get("/api/calendar-sync/auth/google")
    assert response.status_code == 200, response.content
    url = response.json()["authorization_url"]
    assert url.startswith(stub.url + "auth?")
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["state"]
    callback = api.get(f"/api/calendar-sync/auth/google/callback?code=abc&state={urllib.parse.quote(state)}")
    assert landing(callback) == {"calendar_sync": "connected"}
    assert stub.requests[-1]["grant_type"] == "authorization_code" and stub.requests[-1]["code_verifier"]
    assert CalendarToken.objects.get(user=member).refresh_token == "stub-refresh"
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ


def test_plain_http_outside_debug_is_a_clear_409(stub, settings, api):
    settings.DEBUG = False
    response = api.get("/api/calendar-sync/auth/google")
    assert response.status_code == 409 and response.json()["code"] == "not_configured"
    assert "https" in response.json()["detail"]
    assert not OAuthState.objects.exists()  # nothing half-saved


def test_deeply_nested_json_is_a_400_without_login(db):
    body = "[" * 1000 + "]" * 1000
    response = client_for(None).generic("POST", "/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "parse_error"


def test_workspace_of_a_booking_cannot_be_patched(api, member, make_booking, workspace):
    booking = make_booking(member)
    elsewhere = Workspace.objects.create(name="Other", time_zone="UTC")
    response = api.patch(f"/api/bookings/{booking.pk}/", {"workspace": elsewhere.pk, "title": "Renamed"}, format="json")
    assert response.status_code == 200, response.content
    booking.refresh_from_db()
    assert booking.workspace == workspace and booking.title == "Renamed"


@pytest.mark.parametrize("query", ["limit=9223372036854775808", "offset=9223372036854775808", "limit=-1&offset=-5", "limit=abc"])
def test_pagination_parameters_cannot_overflow(api, workspace, query):
    response = api.get(f"/api/workspaces/?{query}")
    assert response.status_code == 200, response.content
    assert "results" in response.json()


def test_wrongly_typed_signed_state_is_an_invalid_state_redirect(db, member):
    for payload in ({"n": "not-a-uuid", "u": "abc"}, {"n": None}, ["x"], "text", {"u": str(member.pk)}):
        state = signing.dumps(payload, salt=oauth.STATE_SALT)
        response = client_for(None).get(f"/api/calendar-sync/auth/google/callback?code=x&state={urllib.parse.quote(state)}")
        assert response.status_code == 302
        assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(response["Location"]).query))["reason"] == "invalid_state", payload


@pytest.mark.parametrize(
    "method,path",
    [("get", "/api/no-such-thing/"), ("delete", "/api/workspaces/"), ("get", "/api/calendar-sync/nope"), ("post", "/api/calendar-sync/status")],
)
def test_every_api_error_is_json(api, method, path):
    response = getattr(api, method)(path)
    assert response.status_code >= 400
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    assert response.json()["detail"]


def test_too_many_query_parameters_is_a_json_400(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    query = "&".join(f"p{i}=1" for i in range(50))
    response = api.get(f"/api/workspaces/?{query}")
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")


def test_csrf_failure_under_api_is_json(member):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(member)
    response = browser.post("/api/bookings/", {"title": "x"})
    assert response.status_code == 403 and response.json()["detail"]


def test_unhandled_error_is_a_json_500_without_traceback(api, monkeypatch):
    from bookings import api as bookings_api

    def boom(self, request, *args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(bookings_api.WorkspaceViewSet, "list", boom)
    client = client_for(api.handler._force_user)
    client.raise_request_exception = False
    response = client.get("/api/workspaces/")
    assert response.status_code == 500
    assert response.json() == {"code": "server_error", "detail": "Internal server error."}


@pytest.mark.django_db(transaction=True)
def test_racing_confirms_of_overlapping_bookings_give_one_409(make_user, workspace):
    alice, bob = make_user("alice2"), make_user("bob2")
    start = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
    for round_ in range(5):
        at = start + timezone.timedelta(days=round_)
        a = Booking.objects.create(user=alice, workspace=workspace, title="A", start=at, end=at + timezone.timedelta(hours=1))
        b = Booking.objects.create(user=bob, workspace=workspace, title="B", start=at, end=at + timezone.timedelta(hours=1))
        results = {}
        barrier = threading.Barrier(2)

        def confirm(user, booking, barrier=barrier, results=results):
            barrier.wait()
            try:
                results[user.username] = client_for(user).post(f"/api/bookings/{booking.pk}/confirm/")
            finally:
                connection.close()

        threads = [threading.Thread(target=confirm, args=pair) for pair in ((alice, a), (bob, b))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        codes = sorted(r.status_code for r in results.values())
        assert codes == [200, 409], [r.content for r in results.values()]
        assert [r.json()["code"] for r in results.values() if r.status_code == 409] == ["overlap"]


def test_dates_no_calendar_can_hold_are_refused(api, workspace):
    for start, end in (("0001-01-01T00:00Z", "0001-01-01T01:00Z"), ("9999-12-31T20:00Z", "9999-12-31T21:00Z")):
        response = api.post("/api/bookings/", {"workspace": workspace.pk, "title": "x", "start": start, "end": end}, format="json")
        assert response.status_code == 400 and "start" in response.json(), response.content
    assert not Booking.objects.exists()


def test_unexpected_sync_error_ends_failed_with_a_bounded_retry(fake_google, api, member, settings):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    lisbon = Workspace.objects.create(name="Old", time_zone="Europe/Lisbon")
    start = timezone.datetime(1, 1, 1, tzinfo=UTC)
    booking = Booking.objects.create(user=member, workspace=lisbon, title="Ancient", start=start, end=start + timezone.timedelta(hours=1), status="confirmed")
    assert sync.sync_object("booking", booking.pk) == "failed"
    record = SyncRecord.objects.get(object_id=str(booking.pk), destination="member")
    assert record.state == "failed" and "OverflowError" in record.last_error
    assert record.retry_at is not None and record.attempts == 1
    assert api.get("/api/calendar-sync/status").json()["failed_syncs"] == 1
    assert api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]["state"] == "failed"
    # the schedule is bounded: after MAX_RETRIES attempts nothing is scheduled any more
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MAX_RETRIES": 2}
    sync.sync_object("booking", booking.pk)
    assert SyncRecord.objects.get(pk=record.pk).retry_at is None


def test_development_keys_fail_the_deploy_checks_outside_debug(settings):
    settings.DEBUG = False
    call_command("check")  # a test run's checks leave the host's keys to the deploy checks
    with pytest.raises(SystemCheckError, match="SECRET_KEY"):
        call_command("check", deploy=True, fail_level="ERROR")
    settings.SECRET_KEY = "a-real-production-secret-key-" + "x" * 40
    with pytest.raises(SystemCheckError, match="SALT_KEY"):
        call_command("check", deploy=True, fail_level="ERROR")
    settings.SALT_KEY = ["a-real-production-salt"]
    call_command("check", deploy=True, fail_level="ERROR")


@pytest.mark.parametrize("env", [{"DEBUG": "false"}, {"DEBUG": "false", "SECRET_KEY": "", "SALT_KEY": ""}])
def test_wsgi_refuses_to_serve_on_development_keys(env):
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SALT_KEY", "DEBUG")}
    result = subprocess.run([sys.executable, "-c", "import managehub.wsgi"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def secret_lookups():
    for model, model_admin in site._registry.items():
        for field in model._meta.get_fields():
            if isinstance(field, SecretField):
                yield model_admin, field.name
            elif field.is_relation and field.related_model is not None:
                for far in field.related_model._meta.get_fields():
                    if isinstance(far, SecretField):
                        yield model_admin, f"{field.name}__{far.name}"


def test_no_admin_lookup_reaches_a_secret(staff, client, fake_google, api):
    connect(api, fake_google)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    checked = 0
    for model_admin, path in secret_lookups():
        url = f"/admin/{model_admin.model._meta.app_label}/{model_admin.model._meta.model_name}/"
        for lookup in ("__regex=^gAAAAAB[A-M]", "__startswith=gAAAA", "=x", "__isnull=False"):
            response = client.get(f"{url}?{path}{lookup}")
            assert response.status_code == 400, (url, path, lookup)
            checked += 1
        assert path not in str(model_admin.search_fields) and path not in str(model_admin.list_filter)
    assert checked >= 8  # tokens, OAuth states and feeds, directly and through the user


def test_sign_in_is_throttled(member):
    anonymous = client_for(None)
    codes = [anonymous.post("/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json").status_code for _ in range(30)]
    assert 429 in codes and codes[0] == 400
    throttled = anonymous.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert throttled.json()["code"] == "throttled"


def test_connect_is_throttled(fake_google, api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "CONNECT_THROTTLE_RATE": "5/min"}
    codes = [api.get("/api/calendar-sync/auth/google").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3


def test_oauth_codes_never_reach_the_access_log():
    import logging

    from managehub.log_filters import RedactOAuthQuery

    record = logging.LogRecord("django.server", logging.INFO, __file__, 1, '"%s" %s %s',
                               ("GET /api/calendar-sync/auth/google/callback?state=abc.def&code=4/secret-code&scope=x HTTP/1.1", "302", "0"), None)
    RedactOAuthQuery().filter(record)
    message = record.getMessage()
    assert "4/secret-code" not in message and "abc.def" not in message and "scope=x" in message
