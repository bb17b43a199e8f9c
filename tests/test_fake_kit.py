"""The fake kit: the fake Google and the fake Microsoft speak one vocabulary (each test runs on both,
through the real provider code over HTTP), show what they hold on a page at their root, and offer a
room account beside the member's on their consent page."""

import datetime as dt
import html
import re

import pytest
import requests

from calendar_sync.exceptions import AuthorizationLost, TransientError
from calendar_sync.providers.google import GoogleProvider
from calendar_sync.providers.microsoft import MicrosoftProvider
from tests.helpers import forget_quotas, grant

UTC = dt.UTC
DAY = dt.datetime(2030, 5, 6, tzinfo=UTC)
WEEK = (DAY, DAY + dt.timedelta(days=7))


def at(hour, day=0):
    return DAY + dt.timedelta(days=day, hours=hour)


@pytest.fixture(params=["google", "microsoft"])
def fake(request, fake_google, fake_microsoft):
    return fake_google if request.param == "google" else fake_microsoft


@pytest.fixture
def provider(fake):
    return GoogleProvider() if fake.provider == "google" else MicrosoftProvider()


# --- one vocabulary ---------------------------------------------------------------------------------
def test_a_person_adds_moves_frees_and_deletes_events(fake, provider):
    token = grant(fake, provider).access_token
    meeting = fake.add_event(fake.default_account, at(9), at(10), title="Standup")
    focus = fake.add_event(fake.default_account, at(11), at(12), title="Focus", busy=False)
    assert set(fake.events()) == set(fake.events(fake.default_account)) == {meeting, focus}
    assert [(e["id"], e["title"], e["start"], e["end"], e["busy"]) for e in fake.agenda()] == [
        (meeting, "Standup", at(9), at(10), True),
        (focus, "Focus", at(11), at(12), False),
    ]
    assert [b.remote_id for b in provider.busy(token, "primary", *WEEK)] == [meeting]  # the real client sees the same

    fake.move_event(fake.default_account, meeting, at(14), at(15))
    fake.set_busy(fake.default_account, focus, True)
    assert [(e["id"], e["start"], e["busy"]) for e in fake.agenda()] == [(focus, at(11), True), (meeting, at(14), True)]
    fake.delete_event(fake.default_account, focus)
    assert list(fake.events()) == [meeting] and [b.remote_id for b in provider.busy(token, "primary", *WEEK)] == [
        meeting
    ]


def test_events_of_another_calendar_stay_there(fake, provider):
    team = fake.calendar_id(fake.default_account, "Team")
    assert team != fake.calendar_id(fake.default_account)  # None: the default calendar
    offsite = fake.add_event(fake.default_account, at(9), at(17), title="Offsite", calendar=team)
    assert list(fake.events(calendar=team)) == [offsite] and fake.events() == {}
    assert [e["title"] for e in fake.agenda(calendar=team)] == ["Offsite"]


def test_calls_are_logged_per_account_and_forgotten_on_reset_log(fake, provider):
    token = grant(fake, provider).access_token
    room_token = grant(fake, provider, account=fake.room_account).access_token
    assert fake.calls() == []  # consent and token exchange are not calendar API calls
    provider.busy(token, "primary", *WEEK)
    provider.busy(room_token, "primary", *WEEK)
    assert len(fake.calls(fake.default_account)) == len(fake.calls(fake.room_account)) >= 1
    assert len(fake.calls()) == 2 * len(fake.calls(fake.default_account))
    assert fake.api_requests(fake.room_account) == len(fake.calls(fake.room_account))
    fake.reset_log()
    assert fake.calls() == [] and fake.api_requests() == 0


def test_inject_fails_the_next_calendar_api_calls(fake, provider):
    token = grant(fake, provider).access_token
    fake.inject(503, retry_after=7)
    with pytest.raises(TransientError) as failed:
        provider.busy(token, "primary", *WEEK)
    assert failed.value.retry_after == 7
    calls = len(fake.calls())
    with pytest.raises(TransientError):  # the Retry-After holds: nothing is sent before it passes
        provider.busy(token, "primary", *WEEK)
    assert len(fake.calls()) == calls
    forget_quotas()  # as if the 7 s had passed
    assert provider.busy(token, "primary", *WEEK) == []  # once, then as before
    fake.inject(429, times=2)
    for _ in range(2):
        with pytest.raises(TransientError):
            provider.busy(token, "primary", *WEEK)


def test_expired_cursors_answer_with_a_full_read(fake, provider):
    token = grant(fake, provider).access_token
    kept = fake.add_event(fake.default_account, at(9), at(10))
    cursor = provider.changes(token, "primary", None, *WEEK).cursor
    assert not provider.changes(token, "primary", cursor, *WEEK).full
    fake.expire_cursors()
    again = provider.changes(token, "primary", cursor, *WEEK)
    assert again.full and [b.remote_id for b in again.blocks] == [kept]


def test_expired_access_tokens_and_revoked_grants(fake, provider):
    tokens = grant(fake, provider)
    fake.expire_access_tokens()
    with pytest.raises(AuthorizationLost):
        provider.busy(tokens.access_token, "primary", *WEEK)
    fresh = provider.refresh(tokens.refresh_token)
    assert provider.busy(fresh.access_token, "primary", *WEEK) == []
    fake.revoke_grants(fake.default_account)
    with pytest.raises(AuthorizationLost):
        provider.busy(fresh.access_token, "primary", *WEEK)
    with pytest.raises(AuthorizationLost):
        provider.refresh(fresh.refresh_token or tokens.refresh_token)


def test_reset_forgets_everything_but_the_two_accounts(fake, provider):
    grant(fake, provider)
    fake.add_account("someone@example.org")
    fake.add_event(fake.default_account, at(9), at(10))
    fake.inject(500, times=5)
    fake.reset()
    assert set(fake.accounts) == {fake.default_account, fake.room_account}
    assert fake.events() == {} and fake.calls() == [] and fake.grants == {} and fake.faults == []


def test_settings_and_env_point_at_the_running_fake(fake):
    settings = fake.settings()
    assert settings == fake.env() and all(isinstance(v, str) for v in settings.values())
    assert any(value.startswith(fake.url) for value in settings.values())
    assert f"{fake.provider.upper()}_CLIENT_ID" in settings


# --- the page at / ------------------------------------------------------------------------------------
def test_the_root_page_lists_accounts_calendars_and_events_escaped(fake):
    fake.add_event(fake.room_account, at(9), at(10), title="<script>alert('x')</script> & board")
    fake.add_event(fake.default_account, at(11), at(12), title="Lunch", busy=False)
    page = requests.get(fake.url, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert "<script>" not in text and html.escape("<script>alert('x')</script> & board") in text
    assert html.escape(fake.default_account) in text and html.escape(fake.room_account) in text
    assert "Team" in text and "2030-05-06 09:00" in text and "Lunch" in text and "free" in text
    assert fake.calls() == []  # looking at the page is not an API call


def test_no_injected_fault_hides_the_root_page(fake):
    fake.inject(500, path="/")
    assert requests.get(fake.url, timeout=10).status_code == 200


# --- a second account on the consent page ---------------------------------------------------------------
def test_the_consent_page_offers_the_member_and_a_room(fake, provider):
    url = provider.authorization_url(state="st", code_challenge="x" * 43)
    page = requests.get(url, timeout=10).text
    options = [html.unescape(o) for o in re.findall(r'<option value="([^"]+)"', page)]
    assert options[:2] == [fake.default_account, fake.room_account]
    member = grant(fake, provider)
    room = grant(fake, provider, account=fake.room_account)
    fake.add_event(fake.room_account, at(9), at(10), title="Booked at the desk")
    assert provider.busy(member.access_token, "primary", *WEEK) == []  # the member's calendar is not the room's
    [block] = provider.busy(room.access_token, "primary", *WEEK)
    assert block.summary == "Booked at the desk"


# --- push channels --------------------------------------------------------------------------------------
def test_push_channels_notify_and_drop(fake, provider, live_server):
    """A channel made through the real client is listed the same way on both fakes; a notification
    with a wrong secret reaches the receiver as sent; a dropped channel sends nothing more."""
    token = grant(fake, provider).access_token
    address = f"{live_server.url}/api/calendar-sync/push/{fake.provider}"
    channel_id, _resource, _expires = provider.watch(token, "primary", address, "s" * 64)
    channel = fake.push_channels()[channel_id]
    assert (channel["account"], channel["calendar"], channel["address"], channel["secret"], channel["stopped"]) == (
        fake.default_account,
        fake.calendar_id(fake.default_account),
        address,
        "s" * 64,
        False,
    )
    assert fake.push_channels(fake.room_account) == {}
    assert fake.notify(channel_id, secret="f" * 64).status_code == 403  # delivered over HTTP; our webhook refuses it
    fake.drop_channel(channel_id)
    assert fake.push_channels()[channel_id]["stopped"] and fake.notify(channel_id) is None
