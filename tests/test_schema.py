"""The OpenAPI schema is the API: schemathesis probes the live server against /api/schema/.

`test_schemathesis` runs the schemathesis CLI (every check, bounded examples, fixed seed)
against a live server with a signed-in member, a workspace and bookings; any response the
schema does not describe (a status, a content type, a body shape), any 500 and any accepted
invalid input fails it. `test_schema_facts` pins the facts people rely on, without schemathesis.
"""
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token

from bookings.models import Booking, Workspace
from calendar_sync.providers import PROVIDERS

SEED = 20240611
MAX_EXAMPLES = 25
ERROR_REF = "#/components/schemas/Error"


def _schemathesis():
    """The venv's `st` next to this interpreter, else the module."""
    st = Path(sys.executable).with_name("st")
    return [str(st)] if st.exists() else [sys.executable, "-m", "schemathesis.cli"]


@pytest.fixture
def probe_data(transactional_db):
    """A member with an API token, a workspace, their bookings (pending, confirmed, cancelled) and someone else's."""
    member = get_user_model().objects.create_user(username="probe", password="probe-password-123")
    other = get_user_model().objects.create_user(username="other", password="other-password-123")
    token = Token.objects.create(user=member)
    workspace = Workspace.objects.create(name="The Loft", address="1 Harbour St, Lisbon", time_zone="Europe/Lisbon")
    start = timezone.now().replace(microsecond=0) + timedelta(days=2)
    bookings = [
        Booking.objects.create(user=member, workspace=workspace, title="Deep work", start=start, end=start + timedelta(hours=2)),
        Booking.objects.create(
            user=member, workspace=workspace, title="Call", start=start + timedelta(days=1), end=start + timedelta(days=1, hours=1),
            status=Booking.Status.CONFIRMED,
        ),
        Booking.objects.create(
            user=member, workspace=workspace, title="Dropped", start=start + timedelta(days=2), end=start + timedelta(days=2, hours=1),
            status=Booking.Status.CANCELLED,
        ),
        Booking.objects.create(user=other, workspace=workspace, title="Not yours", start=start, end=start + timedelta(hours=1)),
    ]
    return {"token": token.key, "workspace": workspace, "bookings": bookings}


def test_schemathesis(live_server, fake_google, probe_data, tmp_path):
    command = [
        *_schemathesis(),
        "run",
        f"{live_server.url}/api/schema/",
        "--url", f"{live_server.url}",
        "--checks", "all",
        "--header", f"Authorization: Token {probe_data['token']}",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(" ".join(command).replace(probe_data["token"], "<token>"))
    print(f"schemathesis took {elapsed:.0f}s")
    assert result.returncode == 0, output


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def _op(schema, path, method):
    for candidate in (path, path + "/", path.rstrip("/")):
        if candidate in schema["paths"]:
            return schema["paths"][candidate][method]
    raise AssertionError(f"{path} is not in the schema: {sorted(schema['paths'])}")


def _json_schema(schema, response):
    content = response["content"]["application/json"]["schema"]
    ref = content.get("$ref")
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else content


def _documents_errors(operation, *statuses):
    for status in statuses:
        response = operation["responses"].get(str(status))
        assert response, f"{operation['operationId']} does not document {status}"
        assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, (operation["operationId"], status)


@pytest.mark.django_db
def test_schema_facts(schema):
    calendars = _op(schema, "/api/calendar-sync/calendars", "get")
    assert _json_schema(schema, calendars["responses"]["200"])["type"] == "array"
    _documents_errors(calendars, 401, 409, 503)

    feed = _op(schema, "/api/calendar-sync/ical", "post")
    assert {"200", "201"} <= set(feed["responses"])
    rotate = schema["paths"][next(p for p in schema["paths"] if p.rstrip("/") == "/api/calendar-sync/ical/rotate")]
    assert set(rotate) - {"parameters"} == {"post"}, "rotate is POST only"
    assert "201" in rotate["post"]["responses"] and "200" not in rotate["post"]["responses"]

    callback = _op(schema, "/api/calendar-sync/auth/{provider}/callback", "get")
    assert set(callback["responses"]) == {"302"}
    authorize = _op(schema, "/api/calendar-sync/auth/{provider}", "get")
    (provider,) = [p for p in authorize["parameters"] if p["name"] == "provider"]
    assert sorted(provider["schema"]["enum"]) == sorted(PROVIDERS)
    _documents_errors(authorize, 401, 404, 429, 503)

    for method in ("get", "put"):
        pass
    _documents_errors(_op(schema, "/api/calendar-sync/calendar", "put"), 400, 401, 409, 503)
    _documents_errors(_op(schema, "/api/calendar-sync/disconnect", "delete"), 401, 404)

    # Bookings: lifecycle conflicts are 409, bad input 400, others' bookings 404.
    for action in ("confirm", "cancel"):
        _documents_errors(_op(schema, f"/api/bookings/{{id}}/{action}", "post"), 401, 404, 409)
    _documents_errors(_op(schema, "/api/bookings/{id}", "patch"), 400, 401, 404, 409)
    _documents_errors(_op(schema, "/api/bookings", "post"), 400, 401)
    _documents_errors(_op(schema, "/api/bookings/{id}", "get"), 401, 404)
    _documents_errors(_op(schema, "/api/workspaces", "post"), 400, 401, 403)

    token = _op(schema, "/api/auth/token", "post")
    assert "token" in _json_schema(schema, token["responses"]["200"])["properties"]
    _documents_errors(token, 400, 429)
