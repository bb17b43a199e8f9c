"""An OAuth flow completes only for whoever started it: in their browser (the flow cookie) or with
their own credentials (POST .../complete). Also: revoke is authenticated and read exactly,
Microsoft's permanent refresh refusals need reauthorization, a deactivated member gets nothing,
and junk callbacks cannot spend a real one's allowance."""

import urllib.parse

import pytest
from django.core import signing

from calendar_sync import oauth
from calendar_sync.models import CalendarToken, OAuthState
from calendar_sync.views import FLOW_COOKIE
from tests.helpers import FRONTEND, MS_ACCOUNT, client_for, connect, landing, same_browser

pytestmark = pytest.mark.django_db
VICTIM_ACCOUNT = "victim@example.com"
ROOMS = "https://app.example.com/integrations/rooms"


def start(client, provider="google", root=""):
    response = client.get(f"/api/calendar-sync/{root}auth/{provider}")
    assert response.status_code == 200, response.content
    return response


def consent(fake, start_response, account=None):
    """The provider's redirect after consent, as the query parameters of the callback."""
    location = fake.consent(start_response.json()["authorization_url"], **({"account": account} if account else {}))
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def callback(client, params, provider="google"):
    return client.get(f"/api/calendar-sync/auth/{provider}/callback?{urllib.parse.urlencode(params)}")


def complete(client, params, provider="google"):
    """POST .../complete as the frontend does; `params` is the body (the code and state it was sent back with)."""
    body = {k: v for k, v in params.items() if k in ("code", "state")} if isinstance(params, dict) else params
    return client.post(f"/api/calendar-sync/auth/{provider}/complete", body, format="json")


def token_requests(fake):
    return sum(1 for r in fake.http_requests if r["path"] == "/token")


# --- the flow cookie ---------------------------------------------------------------------------
def test_starting_sets_a_short_lived_httponly_lax_cookie_whose_hash_is_kept(fake_google, api, member):
    response = start(api)
    cookie = response.cookies[FLOW_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]  # plain http here
    assert cookie["path"] == "/api/calendar-sync/" and int(cookie["max-age"]) == 600
    pending = OAuthState.objects.get()
    assert pending.browser_hash == oauth.browser_hash(cookie.value) and cookie.value not in pending.browser_hash
    again = start(api)  # a second flow from the same browser (another tab) keeps its cookie
    assert again.cookies[FLOW_COOKIE].value == cookie.value
    assert start(client_for(member)).cookies[FLOW_COOKIE].value != cookie.value  # another browser: its own
    assert api.get("/api/calendar-sync/auth/google", secure=True).cookies[FLOW_COOKIE]["secure"]  # Secure over https


def test_the_cookie_flow_connects_and_clears_the_cookie(fake_google, api, member):
    params = consent(fake_google, start(api))
    response = same_browser(api).get(f"/api/calendar-sync/auth/google/callback?{urllib.parse.urlencode(params)}")
    assert landing(response) == {"calendar_sync": "connected"}
    assert response.cookies[FLOW_COOKIE].value == "" and response.cookies[FLOW_COOKIE]["path"] == "/api/calendar-sync/"
    assert CalendarToken.objects.get().user == member


# --- account-linking CSRF ----------------------------------------------------------------------
@pytest.fixture
def mallory(make_user):
    return client_for(make_user("mallory"))


def test_a_consent_link_followed_by_someone_else_links_nothing(fake_google, mallory, api, member):
    """Mallory starts connecting and sends the consent URL to a victim, who consents with their own
    account: neither the victim's browser nor their frontend can make that grant Mallory's."""
    fake_google.add_account(VICTIM_ACCOUNT)
    params = consent(fake_google, start(mallory), VICTIM_ACCOUNT)

    # The victim's browser, without Mallory's cookie, follows the callback: nothing is linked or
    # redeemed; the browser is sent on to the frontend with the code and state.
    relayed = landing(callback(client_for(None), params))
    assert relayed == {
        "calendar_sync": "complete",
        "provider": "google",
        "code": params["code"],
        "state": params["state"],
    }
    assert not CalendarToken.objects.exists() and token_requests(fake_google) == 0
    # The victim's frontend finishes with the victim's own credentials: refused, the state is Mallory's.
    refused = complete(api, relayed)
    assert refused.status_code == 403 and refused.json()["code"] == "state_user_mismatch"
    # The victim's browser signed in to the app, or carrying a flow cookie of its own: refused too.
    assert landing(callback(api, params)) == {"calendar_sync": "error", "reason": "state_user_mismatch"}
    start(api)  # the victim once started a flow of their own: their browser has its own flow cookie
    assert landing(callback(same_browser(api), params)) == {"calendar_sync": "error", "reason": "browser_mismatch"}
    assert not CalendarToken.objects.exists() and token_requests(fake_google) == 0
    # Mallory, who has the cookie but not the code, gets nothing from the state alone.
    assert landing(callback(mallory, {"state": params["state"], "code": "4/guessed"}))["reason"] == "exchange_failed"
    assert not CalendarToken.objects.exists()


def test_a_room_consent_link_followed_by_someone_else_links_nothing(fake_google, make_user, api, workspace, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SHARED_FRONTEND_URL": ROOMS}
    staff = client_for(make_user("staffer", is_staff=True))
    fake_google.add_account(VICTIM_ACCOUNT)
    params = consent(fake_google, start(staff, root=f"shared/workspace/{workspace.pk}/"), VICTIM_ACCOUNT)
    relayed = callback(client_for(None), params)
    assert relayed["Location"].startswith(ROOMS + "?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(relayed["Location"]).query))
    assert query["calendar_sync"] == "complete" and query["owner"] == f"workspace:{workspace.pk}"
    assert complete(api, query).status_code == 403
    assert not CalendarToken.objects.exists() and token_requests(fake_google) == 0


# --- POST .../complete: the frontend on another site -------------------------------------------
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_a_frontend_without_the_cookie_completes_with_the_members_credentials(
    fake_google, fake_microsoft, api, member, provider, run
):
    fake = fake_google if provider == "google" else fake_microsoft
    params = consent(fake, start(api, provider))
    relayed = landing(callback(client_for(None), params, provider))  # the API's cookie never reached this browser
    assert relayed["calendar_sync"] == "complete" and relayed["provider"] == provider
    assert OAuthState.objects.exists()  # nothing spent yet
    response = run(complete, api, relayed, provider)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["connected"] is True and body["provider"] == provider and body["status"] == "active"
    assert CalendarToken.objects.get().user == member and not OAuthState.objects.exists()
    again = complete(api, relayed, provider)
    assert again.status_code == 409 and again.json()["code"] == "replayed_state"


def test_a_signed_in_member_completes_with_a_session(fake_google, client, member):
    client.login(username="alice", password="pw-alice")
    params = consent(fake_google, start(client))
    response = complete(client, params)
    assert response.status_code == 200 and response.json()["connected"] is True


def test_staff_complete_a_room_connection(fake_google, make_user, workspace):
    staff = client_for(make_user("staffer", is_staff=True))
    params = consent(fake_google, start(staff, root=f"shared/workspace/{workspace.pk}/"))
    response = complete(staff, params)
    assert response.status_code == 200, response.content
    token = CalendarToken.objects.get()
    assert (token.owner_kind, token.owner_id, token.user) == ("workspace", str(workspace.pk), None)


@pytest.mark.parametrize(
    "tamper, status, code",
    [
        (lambda p: {**p, "state": p["state"][:-3] + "abc"}, 400, "invalid_state"),
        (lambda p: {**p, "state": signing.dumps({"n": "x", "u": "1"}, salt="other")}, 400, "invalid_state"),
        (lambda p: {**p, "code": "4/forged"}, 400, "exchange_failed"),
        (lambda p: {"state": p["state"]}, 400, "missing_code"),
        (lambda p: {"code": p["code"], "state": " "}, 400, "missing_state"),
        (lambda p: {**p, "state": "x" * 5000}, 400, "invalid_state"),
        (lambda p: [p["code"], p["state"]], 400, "invalid"),
    ],
)
def test_complete_refuses_bad_input_with_a_json_error(fake_google, api, tamper, status, code):
    params = consent(fake_google, start(api))
    response = complete(api, tamper(params))
    assert response.status_code == status and response.json()["code"] == code, response.content
    assert not CalendarToken.objects.exists()


def test_complete_needs_credentials_and_a_known_provider(fake_google, api):
    params = consent(fake_google, start(api))
    assert complete(client_for(None), params).status_code in (401, 403)
    assert complete(api, params, "outlook").status_code == 404
    response = complete(api, params, "microsoft")  # a Google state is no Microsoft flow
    assert response.status_code == 409 and not CalendarToken.objects.exists()


def test_complete_refuses_a_room_connection_once_staff_is_revoked(fake_google, make_user, workspace):
    user = make_user("staffer", is_staff=True)
    params = consent(fake_google, start(client_for(user), root=f"shared/workspace/{workspace.pk}/"))
    user.is_staff = False
    user.save()
    response = complete(client_for(user), params)
    assert response.status_code in (403, 404) and not CalendarToken.objects.exists()


# --- a member deactivated between start and callback --------------------------------------------
def test_a_deactivated_member_gets_no_connection_from_the_callback(fake_google, api, member):
    params = consent(fake_google, start(api))
    member.is_active = False
    member.save()
    assert landing(callback(same_browser(api), params)) == {"calendar_sync": "error", "reason": "account_inactive"}
    assert not CalendarToken.objects.exists() and not OAuthState.objects.exists()
    assert token_requests(fake_google) == 0  # the code is never redeemed


def test_a_deactivated_member_gets_no_connection_from_complete(fake_google, api, member):
    params = consent(fake_google, start(api))
    member.is_active = False
    member.save()
    response = complete(api, params)  # credentials checked by the view as they were given
    assert response.status_code == 403 and response.json()["code"] == "account_inactive"
    assert not CalendarToken.objects.exists() and token_requests(fake_google) == 0


def test_deactivated_staff_get_no_room_connection(fake_google, make_user, workspace):
    user = make_user("staffer", is_staff=True)
    staff = client_for(user)
    params = consent(fake_google, start(staff, root=f"shared/workspace/{workspace.pk}/"))
    user.is_active = False
    user.save()
    response = callback(same_browser(staff), params)
    assert "reason=account_inactive" in response["Location"] and not CalendarToken.objects.exists()


# --- junk callbacks -----------------------------------------------------------------------------
def test_junk_callbacks_from_an_address_do_not_lose_a_real_consent(fake_google, api, member):
    params = consent(fake_google, start(api))
    junk = client_for(None)
    answers = [junk.get(f"/api/calendar-sync/auth/google/callback?code=x&state=junk{i}").status_code for i in range(31)]
    assert answers[0] == 302 and answers[-1] == 429  # junk still has a limit
    forged = signing.dumps({"n": "00000000-0000-0000-0000-000000000000", "u": "1"}, salt="not-ours")
    assert junk.get(f"/api/calendar-sync/auth/google/callback?code=x&state={forged}").status_code == 429
    # The member's real callback, from the same address, completes.
    assert landing(callback(same_browser(api), params)) == {"calendar_sync": "connected"}


def test_junk_callbacks_do_not_lose_a_consent_finished_by_the_frontend(fake_google, api):
    params = consent(fake_google, start(api))
    junk = client_for(None)
    for i in range(31):
        junk.get(f"/api/calendar-sync/auth/google/callback?code=x&state=junk{i}")
    relayed = landing(callback(client_for(None), params))
    assert relayed["calendar_sync"] == "complete"
    assert complete(api, relayed).status_code == 200


def test_replaying_one_real_state_is_limited_per_flow(fake_google, api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "CONNECT_THROTTLE_RATE": "3/min"}
    params = consent(fake_google, start(api))
    assert [callback(client_for(None), params).status_code for _ in range(4)] == [302, 302, 302, 429]
    assert (
        landing(callback(same_browser(api), consent(fake_google, start(api))))["calendar_sync"] == "connected"
    )  # another flow: its own


# --- Google revoke --------------------------------------------------------------------------------
def test_revoke_authenticates_the_client(fake_google, api):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    grants = len(fake_google.grants)
    assert api.delete("/api/calendar-sync/disconnect").status_code == 204
    assert fake_google.revocations == [{"client_id": fake_google.client_id, "client_authenticated": True}]
    assert len(fake_google.grants) == grants - 1


@pytest.mark.parametrize(
    "fault, reason",
    [
        ({"status": 400, "reason": "invalid_request"}, "revoke_failed"),
        ({"status": 400, "reason": "unsupported_token_type"}, "revoke_failed"),
        ({"status": 401, "reason": "invalid_client"}, "revoke_failed"),
        ({"status": 403, "reason": "access_denied"}, "revoke_failed"),
        ({"status": 503, "reason": None}, "provider_unreachable"),
    ],
)
def test_only_invalid_token_means_already_invalid(fake_google, api, fault, reason):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    fake_google.inject(fault["status"], path="/revoke", code=fault["reason"])
    response = api.delete("/api/calendar-sync/disconnect")
    assert response.status_code == 200
    assert response.json() == {"disconnected": True, "revoked": False, "reason": reason}
    assert not CalendarToken.objects.exists()


def test_revoke_with_a_wrong_client_secret_is_a_failed_revoke(fake_google, api, settings):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "GOOGLE_CLIENT_SECRET": "not-the-secret"}
    grants = len(fake_google.grants)
    response = api.delete("/api/calendar-sync/disconnect")
    assert response.json() == {"disconnected": True, "revoked": False, "reason": "revoke_failed"}
    assert len(fake_google.grants) == grants  # still live at Google: the member is told so


# --- Microsoft refresh refused for good -----------------------------------------------------------
def _expire(token):
    CalendarToken.objects.filter(pk=token.pk).update(expires_at=token.created_at)


@pytest.mark.parametrize(
    "error",
    [
        "invalid_scope",
        "unauthorized_client",
        "interaction_required",
        "consent_required",
        "login_required",
        "invalid_grant",
    ],
)
def test_microsoft_refresh_refused_for_good_needs_reauth(fake_microsoft, api, member, error, mailoutbox):
    assert landing(connect(api, fake_microsoft))["calendar_sync"] == "connected"
    _expire(CalendarToken.objects.get())
    fake_microsoft.inject(400, path="/common/oauth2/v2.0/token", code=error)
    response = api.get("/api/calendar-sync/calendars")
    assert response.status_code == 409 and response.json()["code"] == "needs_reauth"
    status = api.get("/api/calendar-sync/status").json()
    assert status["status"] == "needs_reauth" and error in status["last_error"]
    assert len(mailoutbox) == 1  # the owner hears once
    assert landing(connect(api, fake_microsoft))["calendar_sync"] == "connected"  # reconnecting mends it
    assert api.get("/api/calendar-sync/status").json()["status"] == "active"


def test_microsoft_refused_client_secret_is_not_the_members_to_fix(fake_microsoft, api, member, mailoutbox):
    """invalid_client: the app's own secret is wrong or expired; reconnecting cannot help, so no
    connection is marked and nobody is emailed (the error is the operator's, surfaced as 502)."""
    assert landing(connect(api, fake_microsoft))["calendar_sync"] == "connected"
    _expire(CalendarToken.objects.get())
    fake_microsoft.inject(401, path="/common/oauth2/v2.0/token", code="invalid_client")
    response = api.get("/api/calendar-sync/calendars")
    assert response.status_code == 502 and response.json()["code"] == "invalid_client"
    assert CalendarToken.objects.get().status == CalendarToken.Status.ACTIVE and not mailoutbox


def test_relay_goes_to_the_configured_frontend_only(fake_google, api):
    params = consent(fake_google, start(api))
    response = callback(client_for(None), {**params, "next": "https://evil.example.com/"})
    assert response["Location"].startswith(FRONTEND + "?") and "evil" not in response["Location"]


def test_microsoft_cookie_flow(fake_microsoft, api, member):
    params = consent(fake_microsoft, start(api, "microsoft"), MS_ACCOUNT)
    assert landing(callback(same_browser(api), params, "microsoft")) == {"calendar_sync": "connected"}


def test_complete_is_documented(client):
    schema = client.get("/api/schema/?format=json").json()
    path = next(p for p in schema["paths"] if p.rstrip("/") == "/api/calendar-sync/auth/{provider}/complete")
    operation = schema["paths"][path]["post"]
    assert {"200", "400", "401", "403", "409", "429"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][body]["required"]) == {"code", "state"}
    callback = schema["paths"][
        next(p for p in schema["paths"] if p.rstrip("/") == "/api/calendar-sync/auth/{provider}/callback")
    ]["get"]
    assert "calendar_sync=complete" in callback["responses"]["302"]["description"]
