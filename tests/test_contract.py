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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from bookings import services
from bookings.models import Booking, Workspace
from calendar_sync.models import CalendarFeed
from tests.helpers import client_for

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
    "path",
    [
        "/api/workspaces/",
        "/api/bookings/",
        "/api/calendar-sync/status",
        "/api/calendar-sync/busy",
        FEED,
        "/api/no-such-thing/",
    ],
)
def test_too_many_query_parameters_are_a_json_400_on_every_endpoint(browser, debug, path):
    body = _is_error_json(browser.get(f"{path}?{MANY}"), 400)
    assert body["code"] == "too_many_fields" and "DATA_UPLOAD" not in body["detail"]


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "application/json"]
)
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


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "application/json"]
)
def test_validation_errors_of_every_body_type_carry_code_and_detail(google_connected, api, member, debug, content_type):
    client = Client(raise_request_exception=False)
    client.force_login(member)
    for data in ({"calendar_id": "not-mine@example.com"}, {"calendar_id": ""}, {}):
        if content_type == "multipart/form-data":
            from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

            response = client.put(
                "/api/calendar-sync/calendar", encode_multipart(BOUNDARY, data), content_type=MULTIPART_CONTENT
            )
        elif content_type == "application/json":
            response = client.put("/api/calendar-sync/calendar", json.dumps(data), content_type=content_type)
        else:
            response = client.put(
                "/api/calendar-sync/calendar", urllib.parse.urlencode(data), content_type=content_type
            )
        body = _is_error_json(response, 400)
        assert body["code"] == "invalid" and body["calendar_id"], body


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "application/json"]
)
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

    monkeypatch.setattr(
        bookings_api.WorkspaceViewSet, "list", lambda self, request: Response({"name": ["Bad."]}, status=400)
    )
    body = _is_error_json(api.get("/api/workspaces/"), 400)
    assert body == {"name": ["Bad."], "code": "invalid", "detail": "Invalid input."}
    monkeypatch.setattr(
        bookings_api.WorkspaceViewSet, "list", lambda self, request: Response({"code": ["Required."]}, status=400)
    )
    assert _is_error_json(api.get("/api/workspaces/"), 400) == {"code": "invalid", "detail": "code: Required."}
    monkeypatch.setattr(
        bookings_api.WorkspaceViewSet, "list", lambda self, request: Response(["one", "two"], status=409)
    )
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
    proc = subprocess.Popen(
        [part.format(port=port) for part in command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/no-such-thing/", timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stdout.read().decode() if proc.poll() is not None else "no answer"
                )
                time.sleep(0.05)
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
    "gunicorn": [
        sys.executable,
        "-m",
        "gunicorn",
        "managehub.wsgi",
        "-b",
        "127.0.0.1:{port}",
        "-w",
        "1",
        "--access-logfile",
        "-",
    ],
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", SERVERS)
def test_feed_secrets_and_oauth_codes_never_reach_the_access_log(member, settings, server):
    feed = CalendarFeed.issue(member)
    output = _serve_and_log(
        SERVERS[server],
        settings,
        [
            f"/api/calendar-sync/ical/{feed.secret}.ics",
            "/api/calendar-sync/auth/google/callback?state=st4te-value&code=4/c0de-value",
        ],
    )
    assert "/api/calendar-sync/ical/[redacted]" in output, output  # the request was logged, and redacted
    assert "code=[redacted]" in output, output
    assert feed.secret not in output and "4/c0de-value" not in output and "st4te-value" not in output, output


def test_the_redaction_covers_feed_paths_in_any_log_line():
    from managehub.log_filters import RedactOAuthQuery

    secret = "Abc_def-0123456789xyzXYZ"
    record = logging.LogRecord(
        "gunicorn.access",
        logging.INFO,
        __file__,
        1,
        "%(r)s %(s)s",
        ({"r": f"GET /api/calendar-sync/ical/{secret}.ics HTTP/1.1", "s": "200"},),
        None,
    )
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
    assert not re.findall(r"(?:https?:)?//(?!127\.0\.0\.1|testserver)[\w.-]+\.\w+", html), re.findall(
        r"(?:https?:)?//[^\s\"']+", html
    )
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(
        a.endswith("swagger-ui.css") for a in assets
    ), assets
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        with urllib.request.urlopen(live_server.url + asset, timeout=10) as response:
            assert response.status == 200 and len(response.read()) > 100, asset


# --- the members' page ------------------------------------------------------------------------


def _row(page, booking):
    """(the booking's row, the error row right after it or "") of the rendered page."""
    html = page.content.decode()
    match = re.search(
        rf'<tr id="booking-{booking.pk}"[^>]*>(.*?)</tr>(\s*<tr class="row-error"[^>]*>(.*?)</tr>)?', html, re.S
    )
    assert match, html
    return match.group(1), re.sub(r"<[^>]+>", "", match.group(3) or "").strip()


def _cell(row, name):
    match = re.search(rf'<td class="{name}[^"]*"[^>]*>(.*?)</td>', row, re.S)
    assert match, row
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


@pytest.fixture
def page_client(member):
    client = Client()
    client.force_login(member)
    return client


def test_only_a_confirmed_synced_booking_shows_in_your_calendar(
    google_connected, page_client, member, make_booking, run
):
    confirmed, cancelled, pending = (
        make_booking(member),
        make_booking(member, hours_from_now=48),
        make_booking(member, hours_from_now=72),
    )
    for booking in (confirmed, cancelled):
        assert run(page_client.post, f"/integrations/calendar/bookings/{booking.pk}/confirm").status_code == 302
    assert run(page_client.post, f"/integrations/calendar/bookings/{cancelled.pk}/cancel").status_code == 302

    page = page_client.get("/integrations/calendar")
    assert _cell(_row(page, confirmed)[0], "sync-state") == "✓ In your calendar"
    assert _cell(_row(page, cancelled)[0], "sync-state") == "Not in your calendar"
    assert _cell(_row(page, pending)[0], "sync-state") == "Added once confirmed"
    assert page.content.decode().count("✓ In your calendar") == 1

    # After a disconnect nothing is "in your calendar" any more: nothing is kept in step.
    assert run(client_for(member).delete, "/api/calendar-sync/disconnect").status_code in (200, 204)
    page = page_client.get("/integrations/calendar")
    for booking in (confirmed, cancelled, pending):
        row = _row(page, booking)[0]
        assert _cell(row, "sync-state") == "Not connected" and 'data-state="not_connected"' in row
    assert "✓" not in page.content.decode()
    # The script refreshes the list from the same rendering.
    part = page_client.get("/integrations/calendar?part=bookings")
    assert (
        part.content.decode().lstrip().startswith('<tbody id="bookings">') and "Not connected" in part.content.decode()
    )


def test_times_show_minutes_and_the_zone_of_the_workspace(page_client, member, workspace):
    start = datetime(2030, 7, 1, 8, 0, 30, tzinfo=UTC)  # 09:00:30 in Lisbon (summer time)
    booking = Booking.objects.create(
        user=member, workspace=workspace, title="Deep work", start=start, end=start + timedelta(hours=2)
    )
    overnight = Booking.objects.create(
        user=member,
        workspace=workspace,
        title="Night",
        start=start + timedelta(hours=14),
        end=start + timedelta(hours=17),
    )
    page = page_client.get("/integrations/calendar")
    assert _cell(_row(page, booking)[0], "when") == "Mon 1 Jul 2030, 09:00–11:00 (Europe/Lisbon)"
    assert _cell(_row(page, overnight)[0], "when") == "Mon 1 Jul 2030, 23:00–Tue 2 Jul 2030, 02:00 (Europe/Lisbon)"


def test_an_overlap_is_told_by_its_row_in_local_time_with_the_room_name(page_client, member, other, make_booking, run):
    taken = make_booking(other, status=Booking.Status.CONFIRMED)
    mine, unrelated = make_booking(member, hours_from_now=25), make_booking(member, hours_from_now=96)
    response = page_client.post(f"/integrations/calendar/bookings/{mine.pk}/confirm")
    assert response.status_code == 302 and response["Location"].endswith(f"/integrations/calendar#booking-{mine.pk}")
    page = page_client.get("/integrations/calendar")
    row, error = _row(page, mine)
    local = taken.start.astimezone(ZoneInfo("Europe/Lisbon"))
    assert error == f"The Loft is already booked on {services.when(taken.start, taken.end, 'Europe/Lisbon')}.", error
    assert f"{local:%H:%M}" in error and "T" not in error.split(",")[1] and ":00:00" not in error
    assert _row(page, unrelated)[1] == ""  # by its own row only
    assert 'id="outcome" role="status">' in page.content.decode()  # not at the top of the page
    mine.refresh_from_db()
    assert mine.status == Booking.Status.PENDING
    # Shown once: a reload forgets it.
    assert _row(page_client.get("/integrations/calendar"), mine)[1] == ""


def test_the_api_overlap_message_names_the_room_and_local_times(api, member, other, make_booking):
    taken = make_booking(other, status=Booking.Status.CONFIRMED)
    mine = make_booking(member, hours_from_now=25)
    response = api.post(f"/api/bookings/{mine.pk}/confirm/")
    assert response.status_code == 409
    assert (
        response.json()["detail"]
        == f"The Loft is already booked on {services.when(taken.start, taken.end, 'Europe/Lisbon')}."
    )


def test_cancel_asks_first_without_javascript(page_client, member, other, make_booking, run):
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    page = page_client.get("/integrations/calendar")
    row = _row(page, booking)[0]
    # Cancel is a link to a question, not a form that cancels at once.
    assert f'href="/integrations/calendar/bookings/{booking.pk}/cancel"' in row and '/cancel" method' not in row
    question = page_client.get(f"/integrations/calendar/bookings/{booking.pk}/cancel")
    assert question.status_code == 200
    html = question.content.decode()
    assert (
        "Cancel this booking?" in html and "Deep work" in html and "The Loft" in html and 'id="cancel-confirm"' in html
    )
    assert 'name="csrfmiddlewaretoken"' in html
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED  # asking changed nothing
    response = run(page_client.post, f"/integrations/calendar/bookings/{booking.pk}/cancel")
    assert response.status_code == 302
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CANCELLED
    assert "Cancelled “Deep work”." in page_client.get("/integrations/calendar").content.decode()
    # Someone else's booking: not found, either way.
    theirs = make_booking(other, hours_from_now=100)
    for method in ("get", "post"):
        assert getattr(page_client, method)(f"/integrations/calendar/bookings/{theirs.pk}/cancel").status_code == 404
    assert page_client.post(f"/integrations/calendar/bookings/{theirs.pk}/confirm").status_code == 404
    assert page_client.get(f"/integrations/calendar/bookings/{booking.pk}/confirm").status_code == 405


def test_the_page_actions_need_csrf_and_sign_in(member, make_booking):
    booking = make_booking(member)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(member)
    assert browser.post(f"/integrations/calendar/bookings/{booking.pk}/confirm").status_code == 403
    assert browser.post(f"/integrations/calendar/bookings/{booking.pk}/cancel").status_code == 403
    anonymous = Client()
    assert anonymous.post(f"/integrations/calendar/bookings/{booking.pk}/cancel")["Location"].startswith(
        "/accounts/login/"
    )
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING


def test_disconnect_asks_first(page_client):
    html = page_client.get("/integrations/calendar").content.decode()
    assert 'id="disconnect-ask"' in html and 'id="disconnect-confirm"' in html and 'id="disconnect-keep"' in html
    # The DELETE is sent only from the confirming button.
    script = html[html.index("<script>") :]
    handler = script[script.index('$("disconnect-confirm").onclick') :]
    assert '"DELETE"' in handler and '"DELETE"' not in script[: script.index('$("disconnect-confirm").onclick')]


def test_deeply_nested_json_is_a_400_without_login(db):
    body = "[" * 1000 + "]" * 1000
    response = client_for(None).generic("POST", "/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize(
    "query", ["limit=9223372036854775808", "offset=9223372036854775808", "limit=-1&offset=-5", "limit=abc"]
)
def test_pagination_parameters_cannot_overflow(api, workspace, query):
    response = api.get(f"/api/workspaces/?{query}")
    assert response.status_code == 200, response.content
    assert "results" in response.json()


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/no-such-thing/"),
        ("delete", "/api/workspaces/"),
        ("get", "/api/calendar-sync/nope"),
        ("post", "/api/calendar-sync/status"),
    ],
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
