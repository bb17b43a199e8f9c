"""The API's contract at its edges: every error under /api/ is JSON with `code` and `detail`
(any content type, DEBUG on or off), a provider not configured is a 4xx, feed secrets stay out of
access logs, the members' page says what really happened, and the API docs work offline."""
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.test import Client

from bookings.models import Workspace
from calendar_sync.models import CalendarFeed

pytestmark = pytest.mark.django_db

MANY = "&".join(f"p{i}=1" for i in range(1500))
FEED = "/api/calendar-sync/ical/abcdefghijklmnopqrstuvwxyz.ics"


def _is_error_json(response, status):
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.fixture
def browser(member):
    client = Client(raise_request_exception=False)
    client.force_login(member)
    return client


@pytest.mark.parametrize(
    "path", ["/api/workspaces/", "/api/bookings/", "/api/calendar-sync/status", "/api/calendar-sync/busy", FEED, "/api/no-such-thing/"]
)
def test_too_many_query_parameters_are_a_json_400_on_every_endpoint(browser, debug, path):
    body = _is_error_json(browser.get(f"{path}?{MANY}"), 400)
    assert body["code"] == "too_many_fields" and "DATA_UPLOAD" not in body["detail"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "application/json"])
def test_too_many_body_fields_are_a_json_400_whatever_the_content_type(staff, debug, content_type, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"f{i}": "x" for i in range(50)} | {"name": "Room"}
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    if content_type == "multipart/form-data":
        response = client.post("/api/workspaces/", fields)
    elif content_type == "application/json":
        response = client.post("/api/workspaces/", fields, content_type=content_type)
    else:
        response = client.post("/api/workspaces/", urllib.parse.urlencode(fields), content_type=content_type)
    if content_type == "application/json":  # JSON has no field limit: extra keys are ignored
        assert response.status_code == 201, response.content
    else:
        _is_error_json(response, 400)
    assert Workspace.objects.count() == (1 if content_type == "application/json" else 0)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "application/json"])
def test_validation_errors_of_every_body_type_carry_code_and_detail(google_connected, api, member, debug, content_type):
    client = Client(raise_request_exception=False)
    client.force_login(member)
    for data in ({"calendar_id": "not-mine@example.com"}, {"calendar_id": ""}, {}):
        if content_type == "multipart/form-data":
            from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

            response = client.put("/api/calendar-sync/calendar", encode_multipart(BOUNDARY, data), content_type=MULTIPART_CONTENT)
        elif content_type == "application/json":
            response = client.put("/api/calendar-sync/calendar", json.dumps(data), content_type=content_type)
        else:
            response = client.put("/api/calendar-sync/calendar", urllib.parse.urlencode(data), content_type=content_type)
        body = _is_error_json(response, 400)
        assert body["code"] == "invalid" and body["calendar_id"], body


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "application/json"])
def test_an_empty_time_zone_is_refused_whatever_the_content_type(staff, debug, content_type):
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    data = {"name": "Room", "address": "", "time_zone": ""}
    if content_type == "multipart/form-data":
        response = client.post("/api/workspaces/", data)
    elif content_type == "application/json":
        response = client.post("/api/workspaces/", data, content_type=content_type)
    else:
        response = client.post("/api/workspaces/", urllib.parse.urlencode(data), content_type=content_type)
    assert "time_zone" in _is_error_json(response, 400)
    assert not Workspace.objects.exists()
    # Left out, the default still applies (in every content type).
    response = client.post("/api/workspaces/", {"name": "Room"})
    assert response.status_code == 201 and response.json()["time_zone"] == "UTC"


def test_a_view_that_answers_a_bare_field_dict_still_gets_code_and_detail(api, monkeypatch, debug):
    from rest_framework.response import Response

    from bookings import api as bookings_api

    monkeypatch.setattr(bookings_api.WorkspaceViewSet, "list", lambda self, request: Response({"name": ["Bad."]}, status=400))
    body = _is_error_json(api.get("/api/workspaces/"), 400)
    assert body == {"name": ["Bad."], "code": "invalid", "detail": "Invalid input."}
    monkeypatch.setattr(bookings_api.WorkspaceViewSet, "list", lambda self, request: Response({"code": ["Required."]}, status=400))
    assert _is_error_json(api.get("/api/workspaces/"), 400) == {"code": "invalid", "detail": "code: Required."}
    monkeypatch.setattr(bookings_api.WorkspaceViewSet, "list", lambda self, request: Response(["one", "two"], status=409))
    assert _is_error_json(api.get("/api/workspaces/"), 409) == {"code": "conflict", "detail": "Conflict"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writing_to_a_feed_url_is_a_405_even_signed_in_without_csrf(member, debug, method):
    feed = CalendarFeed.issue(member)
    signed_in = Client(enforce_csrf_checks=True)
    signed_in.force_login(member)
    for client in (signed_in, Client(enforce_csrf_checks=True)):
        response = getattr(client, method)(f"/api/calendar-sync/ical/{feed.secret}.ics")
        _is_error_json(response, 405)
        assert response["Allow"] == "GET, HEAD"


def test_a_provider_not_configured_is_a_409_not_configured(api, settings, debug):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_CLIENT_ID": "", "GOOGLE_CLIENT_ID": ""}
    for provider in ("google", "microsoft"):
        body = _is_error_json(api.get(f"/api/calendar-sync/auth/{provider}"), 409)
        assert body["code"] == "not_configured"


def test_the_schema_documents_not_configured_as_409_and_503_only_as_retry_later(client):
    schema = client.get("/api/schema/?format=json").json()
    (path,) = [p for p in schema["paths"] if p.rstrip("/") == "/api/calendar-sync/auth/{provider}"]
    authorize = schema["paths"][path]["get"]["responses"]
    assert "not_configured" in authorize["409"]["description"] and "503" not in authorize
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            description = operation["responses"].get("503", {}).get("description", "")
            assert "configured" not in description, (method, path)


# --- access logs ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url(settings):
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _serve_and_log(command, settings, requests):
    """Start a real server (`command` with {port}), send `requests` (paths), stop it; its log output."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": _database_url(settings), "DEBUG": "true", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([part.format(port=port) for part in command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/no-such-thing/", timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode() if proc.poll() is not None else "no answer"
                time.sleep(0.2)
        opener = urllib.request.build_opener(_NoRedirect)  # the callback redirects to the frontend: not followed
        for path in requests:
            try:
                opener.open(f"http://127.0.0.1:{port}{path}", timeout=10).read()
            except urllib.error.HTTPError:
                pass
        time.sleep(0.5)  # the access line is written after the answer
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    return output.decode()


SERVERS = {
    "runserver": [sys.executable, "manage.py", "runserver", "127.0.0.1:{port}", "--noreload", "--skip-checks"],
    "gunicorn": [sys.executable, "-m", "gunicorn", "managehub.wsgi", "-b", "127.0.0.1:{port}", "-w", "1", "--access-logfile", "-"],
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", SERVERS)
def test_feed_secrets_and_oauth_codes_never_reach_the_access_log(member, settings, server):
    feed = CalendarFeed.issue(member)
    output = _serve_and_log(
        SERVERS[server],
        settings,
        [f"/api/calendar-sync/ical/{feed.secret}.ics", "/api/calendar-sync/auth/google/callback?state=st4te-value&code=4/c0de-value"],
    )
    assert "/api/calendar-sync/ical/[redacted]" in output, output  # the request was logged, and redacted
    assert "code=[redacted]" in output, output
    assert feed.secret not in output and "4/c0de-value" not in output and "st4te-value" not in output, output


def test_the_redaction_covers_feed_paths_in_any_log_line():
    from managehub.log_filters import RedactOAuthQuery

    secret = "Abc_def-0123456789xyzXYZ"
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(r)s %(s)s", ({"r": f"GET /api/calendar-sync/ical/{secret}.ics HTTP/1.1", "s": "200"},), None)
    RedactOAuthQuery().filter(record)
    assert record.getMessage() == "GET /api/calendar-sync/ical/[redacted] HTTP/1.1 200"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "POST /api/calendar-sync/ical/rotate", (), None)
    RedactOAuthQuery().filter(record)
    assert record.getMessage() == "POST /api/calendar-sync/ical/rotate"


# --- API docs ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_api_docs_load_swagger_ui_from_our_own_static_files(live_server, member):
    """/api/docs/ names no other host (it works offline), and every asset it names is served here."""
    client = Client()
    client.force_login(member)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.findall(r"(?:https?:)?//(?!127\.0\.0\.1|testserver)[\w.-]+\.\w+", html), re.findall(r"(?:https?:)?//[^\s\"']+", html)
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith("swagger-ui.css") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        with urllib.request.urlopen(live_server.url + asset, timeout=10) as response:
            assert response.status == 200 and len(response.read()) > 100, asset
