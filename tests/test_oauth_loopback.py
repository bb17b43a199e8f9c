"""Connecting over plain http: in DEBUG any OAuth server on loopback works (not only our fakes) with
no environment variable to set; outside DEBUG it is a clear 409 and nothing is saved."""

import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from calendar_sync.models import CalendarToken, OAuthState
from tests.helpers import FRONTEND, landing

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
                data = json.dumps(
                    {
                        "access_token": "stub-access",
                        "refresh_token": "stub-refresh",
                        "expires_in": 3600,
                        "scope": "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.readonly",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        # shutdown() waits for the loop's next poll: 0.5 s by default
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def settings(self):
        return {
            "GOOGLE_CLIENT_ID": "stub-id",
            "GOOGLE_CLIENT_SECRET": "stub-secret",
            "GOOGLE_REDIRECT_URI": "http://127.0.0.1:8000/api/calendar-sync/auth/google/callback",
            "GOOGLE_OAUTH_AUTH_URI": f"{self.url}auth",
            "GOOGLE_OAUTH_TOKEN_URI": f"{self.url}token",
            "GOOGLE_OAUTH_REVOKE_URI": f"{self.url}revoke",
            "GOOGLE_API_ROOT": self.url,
            "FRONTEND_URL": FRONTEND,
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
