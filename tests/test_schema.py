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
from knox.models import AuthToken

from bookings.models import Booking, Workspace
from calendar_sync.providers import PROVIDERS, get_provider
from managehub.signin import LoginThrottle

# Fixed, so every run sends the same cases; override to explore (SCHEMA_TEST_SEED=1 SCHEMA_TEST_EXAMPLES=100).
SEED = int(os.environ.get("SCHEMA_TEST_SEED", 20240611))
MAX_EXAMPLES = int(os.environ.get("SCHEMA_TEST_EXAMPLES", 25))
ERROR_REF = "#/components/schemas/Error"


#: Per-operation settings, each with its reason. No operation and no check is excluded: these only
#: widen which documented answers count as right where the schema cannot say more (validity that
#: depends on stored data, a provider left unconfigured on purpose).
#: ACCEPTED_OR_400: schemathesis's default for positive_data_acceptance, plus 400.
CONFIG = r"""
# Wrong credentials are well-formed input; the answer is a documented 400 (DRF's AuthTokenSerializer).
[[operations]]
include-path = "/api/auth/token/"
checks.positive_data_acceptance.expected-statuses = ACCEPTED_OR_400

# A booking's workspace must exist, its end must be after its start (also against the stored
# times on PATCH) and both must lie in 1900..2999: cross-field and database rules, a documented 400.
[[operations]]
include-path-regex = '^/api/bookings/(\{id\}/)?$'
include-method = ["POST", "PATCH"]
checks.positive_data_acceptance.expected-statuses = ACCEPTED_OR_400

# A series' rule must be one the host expands (supported parts, COUNT or UNTIL, at most 200 occurrences
# in a year, `start` its first occurrence) and every occurrence must fit the horizon: a documented 400.
[[operations]]
include-path-regex = '^/api/bookings/series/'
include-method = ["POST", "PATCH"]
checks.positive_data_acceptance.expected-statuses = ACCEPTED_OR_400

# A busy window's end must be after its start and at most BUSY_MAX_DAYS later: a cross-field rule, a documented 400.
[[operations]]
include-path-regex = '/busy/$'
checks.positive_data_acceptance.expected-statuses = ACCEPTED_OR_400

# Completing a connection needs the code and state a provider sent back for this member's own
# flow: whatever schemathesis invents is a documented 400 (409 for a state already used).
[[operations]]
include-path-regex = '/complete/?$'
checks.positive_data_acceptance.expected-statuses = ACCEPTED_OR_400
""".replace("ACCEPTED_OR_400", '["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]')


def _schemathesis():
    """The venv's `st` next to this interpreter, else the module."""
    st = Path(sys.executable).with_name("st")
    return [str(st)] if st.exists() else [sys.executable, "-m", "schemathesis.cli"]


@pytest.fixture(params=["member", "staff"])
def probe_data(request, transactional_db):
    """A member (or staff) with an API token, a workspace, their bookings (pending, confirmed, cancelled) and someone else's."""
    member = get_user_model().objects.create_user(
        username="probe", password="probe-password-123", is_staff=request.param == "staff"
    )
    other = get_user_model().objects.create_user(username="other", password="other-password-123")
    _, token = AuthToken.objects.create(user=member)
    workspace = Workspace.objects.create(name="The Loft", address="1 Harbour St, Lisbon", time_zone="Europe/Lisbon")
    start = timezone.now().replace(microsecond=0) + timedelta(days=2)
    bookings = [
        Booking.objects.create(
            user=member, workspace=workspace, title="Deep work", start=start, end=start + timedelta(hours=2)
        ),
        Booking.objects.create(
            user=member,
            workspace=workspace,
            title="Call",
            start=start + timedelta(days=1),
            end=start + timedelta(days=1, hours=1),
            status=Booking.Status.CONFIRMED,
        ),
        Booking.objects.create(
            user=member,
            workspace=workspace,
            title="Dropped",
            start=start + timedelta(days=2),
            end=start + timedelta(days=2, hours=1),
            status=Booking.Status.CANCELLED,
        ),
        Booking.objects.create(
            user=other, workspace=workspace, title="Not yours", start=start, end=start + timedelta(hours=1)
        ),
    ]
    return {"token": token, "workspace": workspace, "bookings": bookings}


@pytest.fixture
def roomy_throttles(fake_google, settings, monkeypatch):
    """Sign-in, connect and provider-call limits far above what one run sends, so throttling does not hide the
    answers behind it (the 429s stay documented; test_schema_facts checks that)."""
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "CONNECT_THROTTLE_RATE": "10000/min",
        "PROVIDER_CALL_THROTTLE_RATE": "10000/min",
    }
    # DRF copies DEFAULT_THROTTLE_RATES into the throttle class at import: a settings override misses it.
    monkeypatch.setitem(LoginThrottle.THROTTLE_RATES, LoginThrottle.scope, "10000/min")


@pytest.mark.slow
@pytest.mark.parametrize("debug", [True, False], ids=["debug-on", "debug-off"])
def test_schemathesis(live_server, fake_google, roomy_throttles, probe_data, tmp_path, settings, debug):
    """schemathesis, every check, against the live server, as a member and as staff, DEBUG on and
    off: no answer the schema does not describe, no 5xx (with DEBUG off the loopback fake is
    refused for connecting: a documented 409 `not_configured`)."""
    settings.DEBUG = debug
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        *_schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/schema/",
        "--url",
        f"{live_server.url}",
        "--checks",
        "all",
        "--header",
        f"Authorization: Token {probe_data['token']}",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        # Our credentials are the token above; invented session cookies next to it prove nothing
        # (a valid token rightly wins). ignored_auth still probes each scheme without and with bad credentials.
        "--generation-with-security-parameters",
        "false",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"}
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(" ".join(command).replace(probe_data["token"], "<token>"))
    print(f"schemathesis took {elapsed:.0f}s")
    print(output)
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
        assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, (
            operation["operationId"],
            status,
        )


@pytest.mark.django_db
def test_schema_facts(schema):
    """What clients rely on, checked on the schema itself (no schemathesis needed)."""
    calendars = _op(schema, "/api/calendar-sync/calendars", "get")
    assert _json_schema(schema, calendars["responses"]["200"])["type"] == "array"
    _documents_errors(calendars, 401, 409, 502, 503)

    feed = _op(schema, "/api/calendar-sync/ical", "post")
    assert {"200", "201"} <= set(feed["responses"])
    _documents_errors(feed, 401, 403)
    rotate = schema["paths"][next(p for p in schema["paths"] if p.rstrip("/") == "/api/calendar-sync/ical/rotate")]
    assert set(rotate) - {"parameters"} == {"post"}, "rotate is POST only"
    assert {s for s in rotate["post"]["responses"] if s < "400"} == {"201"}

    # The OAuth callback answers a redirect, never a body; errors only for an unknown provider,
    # wrong credentials sent along, or throttling.
    callback = _op(schema, "/api/calendar-sync/auth/{provider}/callback", "get")
    assert {s for s in callback["responses"] if s < "400"} == {"302"}
    _documents_errors(callback, 404, 429)
    authorize = _op(schema, "/api/calendar-sync/auth/{provider}", "get")
    for operation in (authorize, callback):
        (provider,) = [p for p in operation["parameters"] if p["name"] == "provider"]
        oauth = sorted(name for name in PROVIDERS if get_provider(name).oauth)  # CalDAV and ICS have their own routes
        assert provider["in"] == "path" and sorted(provider["schema"]["enum"]) == oauth
    _documents_errors(authorize, 401, 404, 409, 429)  # 409 `not_configured`: retrying can't fix it, so not a 503
    assert "Retry-After" in authorize["responses"]["429"].get("headers", {})

    _documents_errors(_op(schema, "/api/calendar-sync/status", "get"), 401)
    _documents_errors(_op(schema, "/api/calendar-sync/calendar", "put"), 400, 401, 403, 409, 413, 503)
    disconnect = _op(schema, "/api/calendar-sync/disconnect", "delete")
    assert {"200", "204"} <= set(disconnect["responses"])
    _documents_errors(disconnect, 401, 403, 404)

    # Bookings: lifecycle conflicts are 409, bad input 400, others' bookings 404.
    _documents_errors(_op(schema, "/api/bookings/{id}/confirm", "post"), 401, 403, 404, 409)
    _documents_errors(_op(schema, "/api/bookings/{id}/cancel", "post"), 401, 403, 404)
    _documents_errors(_op(schema, "/api/bookings/{id}", "patch"), 400, 401, 403, 404, 409, 413)
    _documents_errors(_op(schema, "/api/bookings", "post"), 400, 401, 403, 413)
    _documents_errors(_op(schema, "/api/bookings/{id}", "get"), 401, 404)
    for path in ("/api/bookings/{id}", "/api/bookings/{id}/confirm", "/api/bookings/{id}/cancel"):
        (booking_id,) = [
            p for p in _op(schema, path, "post" if path.count("/") == 4 else "get")["parameters"] if p["name"] == "id"
        ]
        assert booking_id["schema"]["format"] == "uuid"
    _documents_errors(_op(schema, "/api/bookings/series", "post"), 400, 401, 403, 409, 413)
    _documents_errors(_op(schema, "/api/bookings/series/{id}", "patch"), 400, 401, 403, 404, 409, 413)
    _documents_errors(_op(schema, "/api/bookings/series/{id}/confirm", "post"), 401, 403, 404, 409)
    _documents_errors(_op(schema, "/api/bookings/series/{id}/cancel", "post"), 400, 401, 403, 404)
    _documents_errors(_op(schema, "/api/workspaces", "post"), 400, 401, 403)
    _documents_errors(_op(schema, "/api/workspaces/{id}", "get"), 401, 404)

    token = _op(schema, "/api/auth/token", "post")
    assert "token" in _json_schema(schema, token["responses"]["200"])["required"]
    _documents_errors(token, 400, 429)
    assert {} in token["security"], "no credentials are needed to sign in"

    # Every documented error is the one JSON shape, with `code` and `detail`.
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "detail"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status >= "400":
                    assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, (
                        method,
                        path,
                        status,
                    )


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "Token not-a-token"])
def test_missing_or_wrong_credentials_are_a_documented_401(client, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/api/bookings/", **extra)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == ("authentication_failed" if header else "not_authenticated")


@pytest.mark.django_db
def test_unknown_provider_is_a_404_with_a_code(client):
    member = get_user_model().objects.create_user(username="probe", password="probe-password-123")
    client.force_login(member)
    response = client.get("/api/calendar-sync/auth/nope")
    assert response.status_code == 404 and response.json() == {
        "detail": "Unknown calendar provider.",
        "code": "not_found",
    }
