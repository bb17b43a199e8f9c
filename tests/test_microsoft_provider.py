"""MicrosoftProvider against FakeMicrosoft: OAuth (PKCE, rotation, tenant), calendars, apply()."""
import base64
import datetime as dt
import hashlib
import secrets
import time
import urllib.parse
from collections import Counter

import pytest

from calendar_sync.exceptions import AuthorizationLost, ConfigurationError, PermanentError, TransientError
from calendar_sync.providers.base import Operation
from calendar_sync.providers.microsoft import PROP_ID, MicrosoftProvider
from calendar_sync.sources import Event
from calendar_sync.testing.fake_microsoft import DEFAULT_ACCOUNT, FakeMicrosoft
from tests.helpers import MS_REDIRECT, pkce


@pytest.fixture(scope="module")
def ms_server():
    with FakeMicrosoft() as server:
        yield server


@pytest.fixture
def fake(ms_server, settings):
    ms_server.reset()
    settings.DEBUG = True  # plain http to the loopback fake
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **ms_server.settings(), "MICROSOFT_REDIRECT_URI": MS_REDIRECT}
    return ms_server


@pytest.fixture
def provider(fake):
    return MicrosoftProvider()


def connect(provider, fake, account=DEFAULT_ACCOUNT):
    verifier, challenge = pkce()
    location = fake.consent(provider.authorization_url(state="st4te", code_challenge=challenge), account=account)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert location.startswith(MS_REDIRECT) and query["state"] == "st4te"
    return provider.exchange_code(code=query["code"], code_verifier=verifier)


@pytest.fixture
def tokens(provider, fake):
    return connect(provider, fake)


@pytest.fixture
def calendar(fake):
    return fake.calendar_id(DEFAULT_ACCOUNT)


def key(n):
    return base64.b32hexencode(hashlib.sha256(f"booking:{n}".encode()).digest()[:20]).decode().lower()


def event(n=1, summary=None, zone="UTC"):
    start = dt.datetime(2030, 5, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=n)
    return Event(summary=summary or f"Booking {n}", start=start, end=start + dt.timedelta(hours=2), time_zone=zone, location="The Loft", description=f"Desk {n}")


def upsert(n=1, **kw):
    summary = kw.pop("summary", None)
    zone = kw.pop("zone", "UTC")
    return Operation(key=key(n), event=event(n, summary, zone), object_ref=f"booking:{n}", **kw)


def delete(n=1, **kw):
    return Operation(key=key(n), event=None, object_ref=f"booking:{n}", **kw)


# --- OAuth ------------------------------------------------------------------------------------
def test_authorization_url_asks_for_offline_calendar_access_with_pkce(provider, fake):
    url = provider.authorization_url(state="s", code_challenge="c" * 43)
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert f"{parts.scheme}://{parts.netloc}/" == fake.url and parts.path == "/common/oauth2/v2.0/authorize"
    assert query["scope"] == "offline_access Calendars.ReadWrite"
    assert query["code_challenge_method"] == "S256" and query["prompt"] == "select_account" and query["response_mode"] == "query"
    assert query["redirect_uri"] == MS_REDIRECT and query["client_id"] == fake.client_id


def test_consent_and_code_exchange(provider, fake):
    tokens = connect(provider, fake)
    assert tokens.access_token and tokens.refresh_token
    assert "https://graph.microsoft.com/Calendars.ReadWrite" in tokens.scopes
    assert provider.missing_scopes(tokens.scopes) == set()
    assert provider.missing_scopes(["openid", "profile", "User.Read"]) == {"Calendars.ReadWrite"}
    assert provider.missing_scopes(["calendars.readwrite"]) == set()
    assert tokens.access_token not in repr(tokens)


def test_wrong_verifier_is_refused(provider, fake):
    _, challenge = pkce()
    location = fake.consent(provider.authorization_url(state="s", code_challenge=challenge))
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    with pytest.raises(AuthorizationLost):  # invalid_grant
        provider.exchange_code(code=code, code_verifier=secrets.token_urlsafe(48))


def test_denied_consent_redirects_with_access_denied(provider, fake):
    location = fake.consent(provider.authorization_url(state="s", code_challenge=pkce()[1]), allow=False)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert query["error"] == "access_denied" and query["state"] == "s" and "code" not in query


def test_refresh_rotates_and_refuses_the_superseded_token(provider, tokens):
    first = provider.refresh(tokens.refresh_token)
    second = provider.refresh(first.refresh_token)
    assert len({tokens.refresh_token, first.refresh_token, second.refresh_token}) == 3
    assert second.access_token and second.expires_at
    with pytest.raises(AuthorizationLost) as info:
        provider.refresh(first.refresh_token)
    assert info.value.code == "invalid_grant"
    assert first.refresh_token not in str(info.value)


def test_revoked_grant_is_authorization_lost(provider, fake, tokens):
    fake.revoke_grants(DEFAULT_ACCOUNT)
    with pytest.raises(AuthorizationLost):
        provider.refresh(tokens.refresh_token)


def test_wrong_client_secret_is_permanent(provider, fake, settings):
    tokens = connect(provider, fake)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_CLIENT_SECRET": "wrong"}
    with pytest.raises(PermanentError) as info:
        provider.refresh(tokens.refresh_token)
    assert info.value.code == "invalid_client"


def test_single_tenant_app_must_refresh_at_its_tenant(settings):
    tenant = "9188040d-6c67-4c5b-b112-36a304b66dad"
    with FakeMicrosoft(tenant=tenant) as server:
        settings.DEBUG = True
        settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **server.settings(), "MICROSOFT_REDIRECT_URI": MS_REDIRECT}
        provider = MicrosoftProvider()
        assert f"/{tenant}/oauth2/v2.0/authorize" in provider.authorization_url(state="s", code_challenge="c" * 43)
        tokens = connect(provider, server)
        assert provider.refresh(tokens.refresh_token).refresh_token
        settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_TENANT": "common"}
        with pytest.raises(PermanentError):
            provider.refresh(tokens.refresh_token)


def test_token_endpoint_outage_is_transient(provider, fake, tokens):
    fake.inject(503, path="/common/oauth2/v2.0/token", retry_after=9)
    with pytest.raises(TransientError) as info:
        provider.refresh(tokens.refresh_token)
    assert info.value.retry_after == 9


# --- settings -------------------------------------------------------------------------------
def test_plain_http_refused_without_debug(provider, settings):
    settings.DEBUG = False
    with pytest.raises(ConfigurationError) as info:
        provider.ready_to_connect()
    assert info.value.code == "not_configured"
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_LOGIN_ROOT": "http://login.example.com/"}
    with pytest.raises(ConfigurationError):
        provider.authorization_url(state="s", code_challenge="c")


def test_check_wants_trailing_slashes(provider, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MICROSOFT_GRAPH_ROOT": "https://graph.microsoft.com/v1.0"}
    assert [m.id for m in provider.check() if m.id == "calendar_sync.E003"] == ["calendar_sync.E003"]


# --- calendars --------------------------------------------------------------------------------
def test_list_calendars_follows_next_links_and_keeps_writable_ones(provider, fake):
    fake.add_account(
        "pat@contoso.com",
        [
            {"name": "Calendar", "isDefaultCalendar": True, "canEdit": True},
            {"name": "Team", "canEdit": True},
            {"name": "Holidays", "canEdit": False},
            {"name": "Birthdays", "canEdit": False},
            {"name": "Projects", "canEdit": True},
        ],
    )
    tokens = connect(provider, fake, account="pat@contoso.com")
    fake.reset_log()
    calendars = provider.list_calendars(tokens.access_token)
    assert [(c.summary, c.primary, c.access_role) for c in calendars] == [
        ("Calendar", True, "owner"),
        ("Team", False, "writer"),
        ("Projects", False, "writer"),
    ]
    assert calendars[0].id == fake.calendar_id("pat@contoso.com")
    assert fake.api_requests() == 3  # pages of two


# --- apply: single operations -----------------------------------------------------------------
def test_create_patch_delete_one_request_each(provider, fake, tokens, calendar):
    fake.reset_log()
    [created] = provider.apply(tokens.access_token, calendar, [upsert(1, zone="Europe/Paris")])
    assert created.error is None and created.remote_id
    stored = fake.events()[created.remote_id]
    assert stored["subject"] == "Booking 1" and stored["transactionId"] == key(1)
    assert stored["start"] == {"dateTime": "2030-05-02T11:00:00", "timeZone": "Romance Standard Time"}
    assert stored["location"] == {"displayName": "The Loft"} and stored["body"] == {"contentType": "text", "content": "Desk 1"}
    assert stored["showAs"] == "busy" and stored["isReminderOn"] is False
    assert stored["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": key(1)}]

    [patched] = provider.apply(tokens.access_token, calendar, [upsert(1, summary="Moved", remote_id=created.remote_id)])
    assert patched.error is None and patched.remote_id == created.remote_id
    assert fake.events()[created.remote_id]["subject"] == "Moved"

    [deleted] = provider.apply(tokens.access_token, calendar, [delete(1, remote_id=created.remote_id)])
    assert deleted.error is None and deleted.remote_id is None
    assert fake.events() == {}
    assert fake.api_requests() == 3
    assert [c["method"] for c in fake.calls()] == ["POST", "PATCH", "DELETE"]


def test_delete_of_missing_event_succeeds(provider, fake, tokens, calendar):
    [created] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    provider.apply(tokens.access_token, calendar, [delete(1, remote_id=created.remote_id)])
    fake.reset_log()
    [again] = provider.apply(tokens.access_token, calendar, [delete(1, remote_id=created.remote_id)])
    assert again.error is None
    [nothing] = provider.apply(tokens.access_token, calendar, [delete(2)])
    assert nothing.error is None and fake.api_requests() == 1  # the second needed no call


def test_delete_by_key_when_the_id_is_unknown(provider, fake, tokens, calendar):
    provider.apply(tokens.access_token, calendar, [upsert(1)])
    results = provider.apply(tokens.access_token, calendar, [delete(1, known_to_exist=True)])
    assert results[0].error is None and fake.events() == {}
    [missing] = provider.apply(tokens.access_token, calendar, [delete(1, known_to_exist=True)])
    assert missing.error is None


def test_lost_create_response_then_retry_makes_one_event(provider, fake, tokens, calendar):
    fake.lose_response()
    [lost] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    assert isinstance(lost.error, TransientError) and lost.error.code == "network"
    assert len(fake.events()) == 1  # committed all the same
    [retried] = provider.apply(tokens.access_token, calendar, [upsert(1, known_to_exist=True)])
    assert retried.error is None
    assert list(fake.events()) == [retried.remote_id]


def test_retried_create_is_deduplicated_by_transaction_id(provider, fake, tokens, calendar):
    fake.lose_response()
    provider.apply(tokens.access_token, calendar, [upsert(1)])
    [retried] = provider.apply(tokens.access_token, calendar, [upsert(1)])  # caller forgot it may exist
    assert retried.error is None and list(fake.events()) == [retried.remote_id]


def test_lost_batch_response_then_retry_makes_one_event_each(provider, fake, tokens, calendar):
    fake.lose_response()
    lost = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(5)])
    assert all(isinstance(o.error, TransientError) for o in lost)
    retried = provider.apply(tokens.access_token, calendar, [upsert(n, known_to_exist=True) for n in range(5)])
    assert all(o.error is None for o in retried)
    assert sorted(fake.events()) == sorted(o.remote_id for o in retried)


def test_patch_of_remotely_deleted_event_recreates_it(provider, fake, tokens, calendar):
    [created] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    fake.delete_event(fake.default_account, created.remote_id)  # the member deleted it in Outlook
    [again] = provider.apply(tokens.access_token, calendar, [upsert(1, summary="Back", remote_id=created.remote_id)])
    assert again.error is None and again.remote_id != created.remote_id
    assert [e["subject"] for e in fake.events().values()] == ["Back"]


def test_patch_known_event_without_id_finds_it_by_key(provider, fake, tokens, calendar):
    [created] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    fake.reset_log()
    [found] = provider.apply(tokens.access_token, calendar, [upsert(1, summary="Renamed", known_to_exist=True)])
    assert found.remote_id == created.remote_id and fake.events()[created.remote_id]["subject"] == "Renamed"
    assert [c["method"] for c in fake.calls()] == ["GET", "PATCH"]


def test_time_zones_go_out_with_their_windows_names(provider, fake, tokens, calendar):
    """Graph always accepts Windows zone names; an IANA zone with no Windows name goes out in UTC."""
    [lisbon] = provider.apply(tokens.access_token, calendar, [upsert(1, zone="Europe/Lisbon")])
    assert fake.events()[lisbon.remote_id]["start"] == {"dateTime": "2030-05-02T10:00:00", "timeZone": "GMT Standard Time"}
    [unknown] = provider.apply(tokens.access_token, calendar, [upsert(2, zone="Etc/Unknown")])
    assert fake.events()[unknown.remote_id]["start"]["timeZone"] == "UTC"


# --- apply: errors ----------------------------------------------------------------------------
def test_expired_token_is_authorization_lost(provider, fake, tokens, calendar):
    fake.expire_access_tokens()
    [result] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    assert isinstance(result.error, AuthorizationLost) and result.error.status == 401
    assert tokens.access_token not in str(result.error)
    with pytest.raises(AuthorizationLost):
        provider.list_calendars(tokens.access_token)


def test_bad_request_is_permanent_with_graph_code(provider, fake, tokens, calendar):
    fake.inject(400, code="ErrorInvalidRequest")
    [result] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    assert isinstance(result.error, PermanentError) and result.error.code == "ErrorInvalidRequest"
    assert result.error.status == 400 and "ErrorInvalidRequest" in str(result.error)


def test_read_only_calendar_is_permanent(provider, fake, tokens):
    [result] = provider.apply(tokens.access_token, fake.calendar_id(DEFAULT_ACCOUNT, "Holidays"), [upsert(1)])
    assert isinstance(result.error, PermanentError) and result.error.code == "ErrorAccessDenied"


def test_unavailable_is_transient_with_retry_after(provider, fake, tokens, calendar):
    fake.inject(503, retry_after=7)
    [result] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    assert isinstance(result.error, TransientError) and result.error.status == 503 and result.error.retry_after == 7
    assert fake.events() == {}


def test_failed_batch_fails_every_operation(provider, fake, tokens, calendar):
    fake.inject(504, path="/v1.0/$batch")
    results = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(3)])
    assert all(isinstance(o.error, TransientError) and o.error.status == 504 for o in results)


# --- apply: batching --------------------------------------------------------------------------
class CountingLimiter:
    def __init__(self):
        self.slots = []

    def slot(self, n):
        from contextlib import nullcontext

        self.slots.append(n)
        return nullcontext()


def test_many_creates_go_in_batches_of_twenty(provider, fake, tokens, calendar):
    fake.reset_log()
    limiter = CountingLimiter()
    results = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(120)], limiter)
    assert all(o.error is None for o in results)
    assert len({o.remote_id for o in results}) == 120 and len(fake.events()) == 120
    assert fake.api_requests() <= 7 and fake.max_batch_size <= 20
    assert limiter.slots == [20] * 6
    for n, outcome in enumerate(results):  # outcomes line up with operations despite shuffled answers
        assert fake.events()[outcome.remote_id]["transactionId"] == key(n)


def test_mixed_batch(provider, fake, tokens, calendar):
    first = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(3)])
    ops = [upsert(0, summary="Changed", remote_id=first[0].remote_id), delete(1, remote_id=first[1].remote_id), upsert(2, known_to_exist=True), upsert(3), delete(4)]
    results = provider.apply(tokens.access_token, calendar, ops)
    assert all(o.error is None for o in results)
    assert results[0].remote_id == first[0].remote_id and results[1].remote_id is None and results[2].remote_id == first[2].remote_id
    assert sorted(fake.events()) == sorted([first[0].remote_id, first[2].remote_id, results[3].remote_id])


def test_throttled_parts_wait_for_retry_after_and_only_they_are_resent(provider, fake, tokens, calendar):
    fake.reset_log()
    fake.inject(429, times=2, retry_after=1, batch_part=True)
    results = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(5)])
    assert all(o.error is None for o in results) and len(fake.events()) == 5
    posts = [c for c in fake.calls() if c["method"] == "POST"]
    throttled = {c["transactionId"]: c["time"] for c in posts if c["status"] == 429}
    sent = Counter(c["transactionId"] for c in posts)
    assert len(throttled) == 2
    for n in range(5):
        assert sent[key(n)] == (2 if key(n) in throttled else 1)
    for c in posts:
        if c["status"] == 201 and c["transactionId"] in throttled:
            assert c["time"] - throttled[c["transactionId"]] >= 1.0
    assert fake.api_requests() == 2


def test_throttling_that_persists_is_reported(provider, fake, tokens, calendar, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    fake.inject(429, times=100, retry_after=1, batch_part=True)
    results = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(2)])
    assert all(isinstance(o.error, TransientError) and o.error.retry_after == 1 for o in results)
    assert fake.api_requests() == 4  # first try and three retries


def test_patch_404_inside_a_batch_recreates(provider, fake, tokens, calendar):
    first = provider.apply(tokens.access_token, calendar, [upsert(n) for n in range(2)])
    fake.delete_event(fake.default_account, first[0].remote_id)
    results = provider.apply(tokens.access_token, calendar, [upsert(n, remote_id=first[n].remote_id) for n in range(2)])
    assert all(o.error is None for o in results)
    assert results[0].remote_id != first[0].remote_id and results[1].remote_id == first[1].remote_id
    assert len(fake.events()) == 2


def test_duplicate_create_conflict_patches_the_existing_event(provider, fake, tokens, calendar):
    [created] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    fake.inject(409, code="ErrorDuplicateTransactionId")
    [again] = provider.apply(tokens.access_token, calendar, [upsert(1, summary="Second")])
    assert again.error is None and again.remote_id == created.remote_id
    assert [e["subject"] for e in fake.events().values()] == ["Second"]


def test_create_answered_with_a_deleted_event_is_made_anew(provider):
    from calendar_sync.providers.microsoft import _Step

    step = _Step("patch", "OLD", key(1))
    op = upsert(1, remote_id="OLD")
    assert provider._advance(op, step, 404, {}, {"error": {"code": "ErrorItemNotFound"}}, batched=False) is None
    assert step.kind == "create" and step.gone_id == "OLD"
    assert provider._advance(op, step, 201, {}, {"id": "OLD"}, batched=False) is None  # de-duplicated onto a ghost
    assert step.transaction_id != key(1)
    assert provider._advance(op, step, 201, {}, {"id": "NEW"}, batched=False).remote_id == "NEW"


def test_single_throttled_request_is_handed_back(provider, fake, tokens, calendar):
    fake.inject(429, retry_after=2)
    [result] = provider.apply(tokens.access_token, calendar, [upsert(1)])
    assert isinstance(result.error, TransientError) and result.error.retry_after == 2 and result.error.status == 429
    assert fake.api_requests() == 1
