"""Connecting Outlook: the OAuth flow with PKCE (rotating refresh tokens, revoked grants, tenants), the
settings it needs, the calendars a member may choose, switching provider, and tokens never shown."""

import secrets
import urllib.parse

import pytest
from django.utils import timezone

from calendar_sync.exceptions import AuthorizationLost, ConfigurationError, PermanentError, TransientError
from calendar_sync.models import AccessLog, CalendarToken, SyncRecord
from calendar_sync.providers.microsoft import MicrosoftProvider
from calendar_sync.testing.fake_microsoft import DEFAULT_ACCOUNT, FakeMicrosoft
from tests.helpers import MS_ACCOUNT, MS_REDIRECT, connect, grant, landing, pkce

pytestmark = pytest.mark.django_db


# --- through the API (eager tasks) ----------------------------------------------------------------
def test_connect_status_calendars_choice_and_disconnect(fake_microsoft, fake_google, api, member):
    auth = api.get("/api/calendar-sync/auth/microsoft").json()["authorization_url"]
    parts = urllib.parse.urlsplit(auth)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert auth.startswith(f"{fake_microsoft.url}common/oauth2/v2.0/authorize?")
    assert query["scope"].split() == ["offline_access", "Calendars.ReadWrite"]
    assert query["code_challenge_method"] == "S256" and query["redirect_uri"] == MS_REDIRECT
    assert landing(connect(api, fake_microsoft))["calendar_sync"] == "connected"

    status = api.get("/api/calendar-sync/status").json()
    assert status["provider"] == "microsoft" and status["status"] == "active" and status["calendar_id"] == "primary"
    assert {p["name"] for p in status["providers"]} == {"google", "microsoft"}
    calendars = api.get("/api/calendar-sync/calendars").json()
    assert {c["summary"] for c in calendars} == {"Calendar", "Team"}  # Holidays is read-only
    assert [c["summary"] for c in calendars if c["primary"] and c["selected"]] == ["Calendar"]
    team = next(c["id"] for c in calendars if c["summary"] == "Team")
    assert api.put("/api/calendar-sync/calendar", {"calendar_id": team}, format="json").json()["calendar_id"] == team

    response = api.delete("/api/calendar-sync/disconnect")
    assert response.status_code == 200
    assert response.json() == {"disconnected": True, "revoked": False, "reason": "not_supported"}
    assert not CalendarToken.objects.exists()


def test_refresh_tokens_rotate_and_keep_working(outlook, api, member, make_booking, run):
    seen = set()
    for _ in range(3):
        token = CalendarToken.objects.get()
        seen.add(token.refresh_token)
        CalendarToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
        booking = make_booking(member, hours_from_now=24 + 3 * len(seen))
        run(api.post, f"/api/bookings/{booking.pk}/confirm/")
        assert SyncRecord.objects.get(object_id=str(booking.pk)).state == "synced"
    seen.add(CalendarToken.objects.get().refresh_token)
    assert len(seen) == 4  # each refresh stored the new refresh token; the superseded ones are refused
    assert AccessLog.objects.filter(operation="refresh", outcome="ok").count() == 3


def test_revoked_grant_needs_reauth_then_replays_after_reconnect(outlook, api, member, make_booking, run):
    outlook.revoke_grants(MS_ACCOUNT)
    CalendarToken.objects.update(expires_at=timezone.now())
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(3)]
    for b in bookings:
        run(api.post, f"/api/bookings/{b.pk}/confirm/")
    assert api.get("/api/calendar-sync/status").json()["status"] == "needs_reauth"
    assert outlook.events(MS_ACCOUNT) == {}
    token_calls = [r for r in outlook.http_requests if r["path"].endswith("/token")]
    assert len(token_calls) == 1  # marked once, no storm
    assert landing(run(connect, api, outlook))["calendar_sync"] == "connected"
    assert len(outlook.events(MS_ACCOUNT)) == 3


def test_switching_provider_moves_the_events(fake_google, fake_microsoft, api, member, make_booking, run):
    run(connect, api, fake_google)
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert len(fake_google.events("member@example.com")) == 1
    refused = run(connect, api, fake_microsoft, allow=False)
    assert landing(refused)["calendar_sync"] == "error"
    assert CalendarToken.objects.get().provider == "google"  # a failed switch keeps the old connection
    assert len(fake_google.events("member@example.com")) == 1
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    assert fake_google.events("member@example.com") == {}
    assert len(fake_microsoft.events(MS_ACCOUNT)) == 1
    assert CalendarToken.objects.get().provider == "microsoft"


def test_tokens_are_ciphertext_and_never_shown(outlook, api, member, staff, client):
    from django.db import connection

    token = CalendarToken.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM calendar_sync_calendartoken")
        raw = cursor.fetchone()
    assert all(value.startswith("gAAAA") for value in raw)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    pages = [
        client.get("/admin/calendar_sync/calendartoken/").content,
        client.get(f"/admin/calendar_sync/calendartoken/{token.pk}/change/").content,
    ]
    pages += [
        api.get(p).content
        for p in ("/api/calendar-sync/status", "/api/calendar-sync/calendars", "/api/calendar-sync/activity")
    ]
    for secret in (token.access_token, token.refresh_token):
        assert all(secret.encode() not in page for page in pages)


# --- MicrosoftProvider: OAuth ---------------------------------------------------------------------
def test_authorization_url_asks_for_offline_calendar_access_with_pkce(ms_provider, fake_microsoft):
    url = ms_provider.authorization_url(state="s", code_challenge="c" * 43)
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert f"{parts.scheme}://{parts.netloc}/" == fake_microsoft.url and parts.path == "/common/oauth2/v2.0/authorize"
    assert query["scope"] == "offline_access Calendars.ReadWrite"
    assert (
        query["code_challenge_method"] == "S256"
        and query["prompt"] == "select_account"
        and query["response_mode"] == "query"
    )
    assert query["redirect_uri"] == MS_REDIRECT and query["client_id"] == fake_microsoft.client_id


def test_consent_and_code_exchange(ms_provider, fake_microsoft):
    ms_tokens = grant(fake_microsoft, ms_provider)
    assert ms_tokens.access_token and ms_tokens.refresh_token
    assert "https://graph.microsoft.com/Calendars.ReadWrite" in ms_tokens.scopes
    assert ms_provider.missing_scopes(ms_tokens.scopes) == set()
    assert ms_provider.missing_scopes(["openid", "profile", "User.Read"]) == {"Calendars.ReadWrite"}
    assert ms_provider.missing_scopes(["calendars.readwrite"]) == set()
    assert ms_tokens.access_token not in repr(ms_tokens)


def test_wrong_verifier_is_refused(ms_provider, fake_microsoft):
    _, challenge = pkce()
    location = fake_microsoft.consent(ms_provider.authorization_url(state="s", code_challenge=challenge))
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    with pytest.raises(AuthorizationLost):  # invalid_grant
        ms_provider.exchange_code(code=code, code_verifier=secrets.token_urlsafe(48))


def test_denied_consent_redirects_with_access_denied(ms_provider, fake_microsoft):
    location = fake_microsoft.consent(ms_provider.authorization_url(state="s", code_challenge=pkce()[1]), allow=False)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert query["error"] == "access_denied" and query["state"] == "s" and "code" not in query


def test_refresh_rotates_and_refuses_the_superseded_token(ms_provider, ms_tokens):
    first = ms_provider.refresh(ms_tokens.refresh_token)
    second = ms_provider.refresh(first.refresh_token)
    assert len({ms_tokens.refresh_token, first.refresh_token, second.refresh_token}) == 3
    assert second.access_token and second.expires_at
    with pytest.raises(AuthorizationLost) as info:
        ms_provider.refresh(first.refresh_token)
    assert info.value.code == "invalid_grant"
    assert first.refresh_token not in str(info.value)


def test_revoked_grant_is_authorization_lost(ms_provider, fake_microsoft, ms_tokens):
    fake_microsoft.revoke_grants(DEFAULT_ACCOUNT)
    with pytest.raises(AuthorizationLost):
        ms_provider.refresh(ms_tokens.refresh_token)


def test_wrong_client_secret_is_permanent(ms_provider, fake_microsoft, settings):
    ms_tokens = grant(fake_microsoft, ms_provider)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_CLIENT_SECRET": "wrong"}
    with pytest.raises(PermanentError) as info:
        ms_provider.refresh(ms_tokens.refresh_token)
    assert info.value.code == "invalid_client"


def test_single_tenant_app_must_refresh_at_its_tenant(settings):
    tenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
    with FakeMicrosoft(tenant=tenant) as server:
        settings.DEBUG = True
        settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **server.settings(), "MICROSOFT_REDIRECT_URI": MS_REDIRECT}
        provider = MicrosoftProvider()
        assert f"/{tenant}/oauth2/v2.0/authorize" in provider.authorization_url(state="s", code_challenge="c" * 43)
        tokens = grant(server, provider)
        assert provider.refresh(tokens.refresh_token).refresh_token
        settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_TENANT": "common"}
        with pytest.raises(PermanentError):
            provider.refresh(tokens.refresh_token)


def test_token_endpoint_outage_is_transient(ms_provider, fake_microsoft, ms_tokens):
    fake_microsoft.inject(503, path="/common/oauth2/v2.0/token", retry_after=9)
    with pytest.raises(TransientError) as info:
        ms_provider.refresh(ms_tokens.refresh_token)
    assert info.value.retry_after == 9


# --- MicrosoftProvider: settings ------------------------------------------------------------------
def test_plain_http_refused_without_debug(ms_provider, settings):
    settings.DEBUG = False
    with pytest.raises(ConfigurationError) as info:
        ms_provider.ready_to_connect()
    assert info.value.code == "not_configured"
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_LOGIN_ROOT": "http://login.example.com/"}
    with pytest.raises(ConfigurationError):
        ms_provider.authorization_url(state="s", code_challenge="c")


def test_check_wants_trailing_slashes(ms_provider, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_GRAPH_ROOT": "https://graph.microsoft.com/v1.0"}
    assert [m.id for m in ms_provider.check() if m.id == "calendar_sync.E003"] == ["calendar_sync.E003"]


# --- MicrosoftProvider: calendars -----------------------------------------------------------------
def test_list_calendars_follows_next_links_and_keeps_writable_ones(ms_provider, fake_microsoft):
    fake_microsoft.add_account(
        "pat@contoso.com",
        [
            {"name": "Calendar", "isDefaultCalendar": True, "canEdit": True},
            {"name": "Team", "canEdit": True},
            {"name": "Holidays", "canEdit": False},
            {"name": "Birthdays", "canEdit": False},
            {"name": "Projects", "canEdit": True},
        ],
    )
    ms_tokens = grant(fake_microsoft, ms_provider, account="pat@contoso.com")
    fake_microsoft.reset_log()
    calendars = ms_provider.list_calendars(ms_tokens.access_token)
    assert [(c.summary, c.primary, c.access_role) for c in calendars] == [
        ("Calendar", True, "owner"),
        ("Team", False, "writer"),
        ("Projects", False, "writer"),
    ]
    assert calendars[0].id == fake_microsoft.calendar_id("pat@contoso.com")
    assert fake_microsoft.api_requests() == 3  # pages of two
