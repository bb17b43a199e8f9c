"""Connecting, checking, choosing and disconnecting a Google Calendar against the fake Google."""

import urllib.parse

import pytest
import responses
from django.core import signing
from django.utils import timezone

from calendar_sync import oauth, tokens
from calendar_sync.exceptions import AuthorizationLost, ConfigurationError
from calendar_sync.models import CalendarToken, OAuthState
from tests.helpers import FRONTEND, REDIRECT, client_for, connect, landing, same_browser

pytestmark = pytest.mark.django_db


def test_whole_flow(fake_google, api, member):
    assert api.get("/api/calendar-sync/status").json()["connected"] is False

    auth = api.get("/api/calendar-sync/auth/google").json()["authorization_url"]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(auth).query))
    assert auth.startswith(fake_google.url + "o/oauth2/auth")
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == REDIRECT
    assert "code_verifier" not in auth

    location = fake_google.consent(auth)
    callback = same_browser(api).get("/api/calendar-sync/auth/google/callback?" + urllib.parse.urlsplit(location).query)
    assert landing(callback) == {"calendar_sync": "connected"}  # the flow cookie, no session needed

    status = api.get("/api/calendar-sync/status").json()
    assert status["connected"] is True and status["provider"] == "google"
    assert status["status"] == "active" and status["calendar_id"] == "primary"
    assert "https://www.googleapis.com/auth/calendar.events" in status["scopes"]

    calendars = api.get("/api/calendar-sync/calendars").json()
    ids = {c["id"]: c for c in calendars}
    assert set(ids) == {"member@example.com", "team@group.calendar.google.com"}  # read-only calendars are not offered
    assert ids["member@example.com"]["primary"] and ids["member@example.com"]["selected"]

    chosen = api.put("/api/calendar-sync/calendar", {"calendar_id": "team@group.calendar.google.com"}, format="json")
    assert chosen.status_code == 200 and chosen.json()["calendar_id"] == "team@group.calendar.google.com"

    grants_before = len(fake_google.grants)
    assert api.delete("/api/calendar-sync/disconnect").status_code == 204
    assert len(fake_google.grants) == grants_before - 1  # the revoke reached Google
    assert api.get("/api/calendar-sync/status").json() == {
        **api.get("/api/calendar-sync/status").json(),
        "connected": False,
        "provider": None,
    }
    assert not CalendarToken.objects.exists()


def test_selecting_a_calendar_outside_the_list_is_refused(fake_google, api, member):
    connect(api, fake_google)
    for bad in ("holidays@group.v.calendar.google.com", "someone-else@example.com", ""):
        response = api.put("/api/calendar-sync/calendar", {"calendar_id": bad}, format="json")
        assert response.status_code == 400 and "calendar_id" in response.json()
    assert CalendarToken.objects.get(user=member).calendar_id == "primary"


def test_endpoints_need_a_connection(fake_google, api):
    assert api.get("/api/calendar-sync/calendars").json()["code"] == "not_connected"
    assert api.put("/api/calendar-sync/calendar", {"calendar_id": "primary"}, format="json").status_code == 409
    assert api.delete("/api/calendar-sync/disconnect").status_code == 404


def test_unknown_provider_is_404(fake_google, api):
    assert api.get("/api/calendar-sync/auth/outlook").status_code == 404


def test_not_configured_is_a_clear_409(api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "GOOGLE_CLIENT_ID": ""}
    response = api.get("/api/calendar-sync/auth/google")
    assert response.status_code == 409 and response.json()["code"] == "not_configured"


def _start(api, fake_google):
    auth = api.get("/api/calendar-sync/auth/google").json()["authorization_url"]
    location = fake_google.consent(auth)
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def _callback(params, client):
    """The callback as `client`'s browser follows it (its flow cookie included)."""
    return client.get("/api/calendar-sync/auth/google/callback?" + urllib.parse.urlencode(params))


def test_denied_consent(fake_google, api, member):
    auth = api.get("/api/calendar-sync/auth/google").json()["authorization_url"]
    location = fake_google.consent(auth, allow=False)
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert landing(_callback(params, api)) == {"calendar_sync": "error", "reason": "access_denied"}
    assert not CalendarToken.objects.exists()
    assert not OAuthState.objects.exists()  # the state is spent


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda p: {k: v for k, v in p.items() if k != "state"}, "missing_state"),
        (lambda p: {**p, "state": p["state"][:-3] + "abc"}, "invalid_state"),
        (lambda p: {**p, "state": signing.dumps({"n": "x", "u": "1"}, salt="other")}, "invalid_state"),
        (lambda p: {k: v for k, v in p.items() if k != "code"}, "missing_code"),
        (lambda p: {**p, "code": "4/forged"}, "exchange_failed"),
    ],
)
def test_bad_callbacks_store_nothing(fake_google, api, member, tamper, reason):
    params = _start(api, fake_google)
    assert landing(_callback(tamper(params), api)) == {"calendar_sync": "error", "reason": reason}
    assert not CalendarToken.objects.exists()


def test_replayed_state_is_refused_and_keeps_the_connection(fake_google, api, member):
    params = _start(api, fake_google)
    assert landing(_callback(params, api))["calendar_sync"] == "connected"
    before = CalendarToken.objects.values("access_token", "updated_at").get()
    assert landing(_callback(params, api)) == {"calendar_sync": "error", "reason": "replayed_state"}
    assert CalendarToken.objects.values("access_token", "updated_at").get() == before


def test_expired_state(fake_google, api, member, settings):
    params = _start(api, fake_google)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "STATE_MAX_AGE": -1}
    assert landing(_callback(params, api)) == {"calendar_sync": "error", "reason": "expired_state"}
    assert not CalendarToken.objects.exists()


def test_state_of_another_user(fake_google, api, member, other):
    params = _start(api, fake_google)  # started by alice
    response = _callback(params, client_for(other))  # bob's browser lands with it
    assert landing(response) == {"calendar_sync": "error", "reason": "state_user_mismatch"}
    assert not CalendarToken.objects.exists()
    assert landing(_callback(params, api))["calendar_sync"] == "connected"  # alice can still finish
    assert CalendarToken.objects.get().user == member


def test_missing_scopes(fake_google, api, member):
    fake_google.granted_scope = "https://www.googleapis.com/auth/calendar.readonly"
    params = _start(api, fake_google)
    assert landing(_callback(params, api)) == {"calendar_sync": "error", "reason": "missing_scopes"}
    assert not CalendarToken.objects.exists()


def test_failed_reconnect_leaves_existing_connection(fake_google, api, member):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    before = CalendarToken.objects.values("access_token", "refresh_token", "status").get()
    fake_google.granted_scope = "openid"
    assert landing(connect(api, fake_google))["reason"] == "missing_scopes"
    assert CalendarToken.objects.values("access_token", "refresh_token", "status").get() == before


def test_token_endpoint_down_is_an_error_redirect(fake_google, api, member):
    params = _start(api, fake_google)
    fake_google.inject(503, times=5, path="/token")
    assert landing(_callback(params, api))["reason"] in ("exchange_failed", "provider_unreachable")
    assert not CalendarToken.objects.exists()


def test_callback_ignores_redirect_parameters(fake_google, api, member):
    params = _start(api, fake_google)
    response = _callback(
        {**params, "next": "https://evil.example.com/", "redirect_uri": "https://evil.example.com/"}, api
    )
    assert response["Location"].startswith(FRONTEND)
    assert "evil" not in response["Location"]


# --- refresh ---------------------------------------------------------------------------------


def _connected_token(api, fake_google, member):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    return CalendarToken.objects.get(user=member)


def test_expiring_token_is_refreshed_once_and_persisted(fake_google, api, member):
    token = _connected_token(api, fake_google, member)
    old_access, old_refresh = token.access_token, token.refresh_token
    CalendarToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() + timezone.timedelta(seconds=30))
    token.refresh_from_db()
    new_access = tokens.access_token(token)
    assert new_access != old_access and new_access in fake_google.access_tokens
    stored = CalendarToken.objects.get(pk=token.pk)
    assert stored.access_token == new_access
    assert stored.refresh_token == old_refresh  # Google sent none: the old one is kept
    assert stored.expires_at > timezone.now() + timezone.timedelta(minutes=50)
    # a second caller holding the stale row reuses the saved token instead of refreshing again
    stale = CalendarToken.objects.get(pk=token.pk)
    stale.expires_at = timezone.now()
    refreshes = sum(1 for r in fake_google.http_requests if r["path"] == "/token")
    assert tokens.access_token(stale) == new_access
    assert sum(1 for r in fake_google.http_requests if r["path"] == "/token") == refreshes


def test_fresh_token_is_not_refreshed(fake_google, api, member):
    token = _connected_token(api, fake_google, member)
    before = len(fake_google.http_requests)
    assert tokens.access_token(token) == token.access_token
    assert len(fake_google.http_requests) == before


def test_invalid_grant_ends_in_needs_reauth(fake_google, api, member):
    token = _connected_token(api, fake_google, member)
    fake_google.revoke_grants("member@example.com")
    CalendarToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    token.refresh_from_db()
    with pytest.raises(AuthorizationLost):
        tokens.access_token(token)
    status = api.get("/api/calendar-sync/status").json()
    assert status["connected"] is True and status["status"] == "needs_reauth"
    assert "invalid_grant" in status["last_error"]
    with pytest.raises(AuthorizationLost):  # no further calls to Google once marked
        before = len(fake_google.http_requests)
        tokens.access_token(CalendarToken.objects.get(pk=token.pk))
    assert len(fake_google.http_requests) == before
    # reconnecting restores the connection
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    assert api.get("/api/calendar-sync/status").json()["status"] == "active"


@responses.activate
def test_refresh_request_shape(settings):
    """Focused check of the refresh call made to the configured token URI."""
    from calendar_sync.providers.google import GoogleProvider

    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "GOOGLE_CLIENT_ID": "cid",
        "GOOGLE_CLIENT_SECRET": "cs",
        "GOOGLE_OAUTH_TOKEN_URI": "https://oauth.test/token",
    }
    responses.post(
        "https://oauth.test/token", json={"access_token": "new-access", "expires_in": 3599, "token_type": "Bearer"}
    )
    tokens = GoogleProvider().refresh("the-refresh")
    body = urllib.parse.parse_qs(responses.calls[0].request.body)
    assert (
        body["grant_type"] == ["refresh_token"]
        and body["refresh_token"] == ["the-refresh"]
        and body["client_id"] == ["cid"]
    )
    assert tokens.access_token == "new-access" and tokens.refresh_token == "the-refresh"
    responses.post(
        "https://oauth.test/token", status=400, json={"error": "invalid_grant", "error_description": "Bad Request"}
    )
    with pytest.raises(AuthorizationLost):
        GoogleProvider().refresh("the-refresh")


def test_disconnect_when_google_says_already_invalid(fake_google, api, member):
    _connected_token(api, fake_google, member)
    fake_google.revoke_grants("member@example.com")
    response = api.delete("/api/calendar-sync/disconnect")
    assert response.status_code == 200
    assert response.json() == {"disconnected": True, "revoked": False, "reason": "already_invalid"}
    assert not CalendarToken.objects.exists()


def test_disconnect_when_google_is_unreachable(fake_google, api, member, settings):
    _connected_token(api, fake_google, member)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "GOOGLE_OAUTH_REVOKE_URI": "http://127.0.0.1:9/revoke"}
    response = api.delete("/api/calendar-sync/disconnect")
    assert response.json()["reason"] == "provider_unreachable"
    assert not CalendarToken.objects.exists()


def test_http_endpoints_need_debug_and_loopback(settings):
    """Loopback http (a fake) passes the checks of any test run; with DEBUG off `check --deploy` refuses it."""
    from calendar_sync.checks import check_deploy, check_settings

    settings.DEBUG = False
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "GOOGLE_OAUTH_TOKEN_URI": "http://127.0.0.1:1/token"}
    assert not any(e.id == "calendar_sync.E002" for e in check_settings(None))
    assert any(e.id == "calendar_sync.E002" and "GOOGLE_OAUTH_TOKEN_URI" in e.msg for e in check_deploy(None))
    settings.DEBUG = True
    assert not any(e.id == "calendar_sync.E002" for e in check_settings(None) + check_deploy(None))
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "GOOGLE_OAUTH_TOKEN_URI": "http://example.com/token"}
    assert [e.id for e in check_settings(None) + check_deploy(None)].count("calendar_sync.E002") == 1


def test_missing_settings_are_named(settings):
    from calendar_sync.checks import check_settings

    settings.CALENDAR_SYNC = {"SOURCES": settings.CALENDAR_SYNC["SOURCES"]}
    messages = " ".join(e.msg for e in check_settings(None))
    for name in ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI", "FRONTEND_URL"):
        assert name in messages
    settings.SALT_KEY = ""
    assert any(e.id == "calendar_sync.E001" for e in check_settings(None))


def test_wrong_key_is_a_clear_error_not_ciphertext(fake_google, api, member, settings):
    token = _connected_token(api, fake_google, member)
    settings.SALT_KEY = ["a-different-salt"]
    with pytest.raises(ConfigurationError, match="cannot be read"):
        _ = CalendarToken.objects.get(pk=token.pk).access_token
    before = len(fake_google.http_requests)
    api.get("/api/calendar-sync/calendars")
    assert len(fake_google.http_requests) == before  # nothing sent to Google
    assert api.get("/api/calendar-sync/status").json()["connected"] is True  # status still answers


def test_wrongly_typed_signed_state_is_an_invalid_state_redirect(db, member):
    for payload in ({"n": "not-a-uuid", "u": "abc"}, {"n": None}, ["x"], "text", {"u": str(member.pk)}):
        state = signing.dumps(payload, salt=oauth.STATE_SALT)
        response = client_for(None).get(
            f"/api/calendar-sync/auth/google/callback?code=x&state={urllib.parse.quote(state)}"
        )
        assert response.status_code == 302
        assert (
            dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(response["Location"]).query))["reason"] == "invalid_state"
        ), payload
