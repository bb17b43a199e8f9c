"""A member with several calendars: Google (where bookings go) + Outlook + a second Google account.

Busy times come from every calendar that counts for conflicts (read in parallel, one failing never
hides the others), bookings are written only to the write connection, and making another one the
write connection moves the upcoming events there. Against the fake Google and the fake Microsoft.
"""

import time
import urllib.parse

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from bookings.models import Booking
from calendar_sync.models import AccessLog, CalendarToken
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, client_for, connect, landing

# Busy reads run in threads with their own database connections: they must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)
HOUR = timezone.timedelta(hours=1)
SECOND_GOOGLE = "second@example.com"


def window(start, end):
    return "/api/calendar-sync/busy?" + urllib.parse.urlencode({"start": start.isoformat(), "end": end.isoformat()})


def titles(agenda):
    """Event titles without the workspace the host appends (" — The Loft")."""
    return sorted(e["title"].split(" — ")[0] for e in agenda)


def moment(value):
    return timezone.datetime.fromisoformat(value)


@pytest.fixture
def three(fake_google, fake_microsoft, api, run):
    """The member connected Google (first: the write one), then Outlook and a second Google account with add=1.
    Returns {name: connection id}."""
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    assert landing(run(connect, api, fake_microsoft, add=True))["calendar_sync"] == "connected"
    assert landing(run(connect, api, fake_google, account=SECOND_GOOGLE, add=True))["calendar_sync"] == "connected"
    rows = api.get("/api/calendar-sync/connections/").json()
    by_account = {row["account"]: row for row in rows}
    assert set(by_account) == {GOOGLE_ACCOUNT, MS_ACCOUNT, SECOND_GOOGLE}, rows
    fake_google.reset_log()
    fake_microsoft.reset_log()
    return {
        "google": by_account[GOOGLE_ACCOUNT]["id"],
        "outlook": by_account[MS_ACCOUNT]["id"],
        "second": by_account[SECOND_GOOGLE]["id"],
    }


def confirmed(api, run, make_booking, member, hours, title):
    booking = make_booking(member, hours_from_now=hours, duration=1, title=title)
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    return Booking.objects.get(pk=booking.pk)


def test_connections_list_shows_each_account_and_the_one_write_connection_never_a_secret(three, api):
    rows = api.get("/api/calendar-sync/connections/").json()
    assert [r["write"] for r in rows] == [True, False, False]  # oldest first; the first connected is the write one
    assert all(r["conflicts"] and r["status"] == "active" for r in rows)
    assert {r["provider"] for r in rows} == {"google", "microsoft"}
    assert set(rows[0]) == {
        "id",
        "provider",
        "account",
        "calendar_id",
        "write",
        "conflicts",
        "status",
        "last_error",
        "connected_at",
    }
    secrets = [t.refresh_token for t in CalendarToken.objects.all()] + [
        t.access_token for t in CalendarToken.objects.all()
    ]
    body = (
        api.get("/api/calendar-sync/connections/").content.decode()
        + api.get("/api/calendar-sync/status").content.decode()
    )
    assert not any(secret in body for secret in secrets)
    status = api.get("/api/calendar-sync/status").json()
    assert status["provider"] == "google" and status["connected"] and len(status["connections"]) == 3
    assert api.get(f"/api/calendar-sync/connections/{three['outlook']}/").json()["account"] == MS_ACCOUNT


def test_busy_shows_the_outside_events_of_every_calendar_and_none_of_ours(
    three, api, run, member, make_booking, fake_google, fake_microsoft
):
    at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=2)
    fake_google.add_event(GOOGLE_ACCOUNT, at, at + HOUR, title="Dentist")
    fake_microsoft.add_event(MS_ACCOUNT, at + 2 * HOUR, at + 3 * HOUR, title="Client call")
    fake_google.add_event(SECOND_GOOGLE, at + 4 * HOUR, at + 5 * HOUR, title="School run")
    booking = confirmed(api, run, make_booking, member, 48 + 6, "Deep work")
    # A confirmation writes only to the write connection.
    assert len(fake_google.events(GOOGLE_ACCOUNT)) == 2
    assert [c["method"] for c in fake_google.calls(GOOGLE_ACCOUNT)] == ["POST"]
    assert fake_google.calls(SECOND_GOOGLE) == [] and fake_microsoft.calls() == []
    answer = api.get(window(at - HOUR, booking.end + HOUR)).json()
    spans = [(moment(b["start"]), moment(b["end"]), b["connection"]) for b in answer["busy"]]
    assert spans == [
        (at, at + HOUR, three["google"]),
        (at + 2 * HOUR, at + 3 * HOUR, three["outlook"]),
        (at + 4 * HOUR, at + 5 * HOUR, three["second"]),
    ]  # the member's own booking (in Google) is none of them
    assert answer["errors"] == [] and answer["provider"] == "google" and answer["checked_at"]
    assert "title" not in answer["busy"][0]  # titles only where the operator keeps them
    calls = len(fake_google.calls()) + len(fake_microsoft.calls())
    assert api.get(window(at - HOUR, booking.end + HOUR)).json()["busy"] == answer["busy"]
    assert len(fake_google.calls()) + len(fake_microsoft.calls()) == calls  # cached per connection


def test_a_calendar_that_fails_is_named_and_the_others_still_answer(three, api, fake_google, fake_microsoft):
    at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=3)
    fake_google.add_event(GOOGLE_ACCOUNT, at, at + HOUR)
    fake_microsoft.add_event(MS_ACCOUNT, at + HOUR, at + 2 * HOUR)
    fake_microsoft.inject(503, times=20)
    response = api.get(window(at - HOUR, at + 3 * HOUR))
    assert response.status_code == 200
    answer = response.json()
    assert answer["errors"] == [{"connection": three["outlook"], "code": "provider_unavailable"}]
    assert [(moment(b["start"]), b["connection"]) for b in answer["busy"]] == [(at, three["google"])]
    # A connection whose grant is gone is named too, without a call.
    CalendarToken.objects.filter(pk=three["second"]).update(status=CalendarToken.Status.NEEDS_REAUTH)
    answer = api.get(window(at - HOUR, at + 4 * HOUR)).json()
    assert {"connection": three["second"], "code": "needs_reauth"} in answer["errors"]
    assert [b["connection"] for b in answer["busy"]] == [three["google"]]


def test_the_calendars_are_read_at_the_same_time(three, api, fake_google, fake_microsoft):
    """Each fake answers after LATENCY: one after another the three reads would take 3 × LATENCY."""
    latency = 0.6
    fake_google.latency = fake_microsoft.latency = latency
    try:
        at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=5)
        began = time.monotonic()
        answer = api.get(window(at, at + HOUR)).json()
        took = time.monotonic() - began
    finally:
        fake_google.latency = fake_microsoft.latency = 0.0
    assert answer["errors"] == [] and len(fake_google.calls()) + len(fake_microsoft.calls()) == 3
    print(f"busy over 3 connections, {latency}s each: {took:.2f}s")
    assert took < 2 * latency, took


def test_a_connection_that_does_not_count_for_conflicts_is_not_read(three, api, fake_microsoft):
    at = timezone.now().replace(minute=0, second=0, microsecond=0) + timezone.timedelta(days=4)
    fake_microsoft.add_event(MS_ACCOUNT, at, at + HOUR, title="Client call")
    assert [b["connection"] for b in api.get(window(at, at + HOUR)).json()["busy"]] == [three["outlook"]]
    response = api.patch(f"/api/calendar-sync/connections/{three['outlook']}/", {"conflicts": False}, format="json")
    assert response.status_code == 200 and response.json()["conflicts"] is False
    fake_microsoft.reset_log()
    answer = api.get(window(at, at + HOUR)).json()
    assert answer["busy"] == [] and answer["errors"] == []
    assert fake_microsoft.calls() == []


def test_making_outlook_the_write_connection_moves_the_upcoming_events(
    three, api, run, member, make_booking, fake_google, fake_microsoft
):
    fake_google.add_event(GOOGLE_ACCOUNT, timezone.now() + 30 * HOUR, timezone.now() + 31 * HOUR, title="Dentist")
    bookings = [confirmed(api, run, make_booking, member, hours, f"Desk {hours}") for hours in (24, 48)]
    assert titles(fake_google.agenda(GOOGLE_ACCOUNT)) == ["Dentist", "Desk 24", "Desk 48"]
    response = run(api.patch, f"/api/calendar-sync/connections/{three['outlook']}/", {"write": True}, format="json")
    assert response.status_code == 200 and response.json()["write"] is True
    assert titles(fake_google.agenda(GOOGLE_ACCOUNT)) == ["Dentist"]  # none of ours left
    assert titles(fake_microsoft.agenda(MS_ACCOUNT)) == ["Desk 24", "Desk 48"]
    rows = {r["id"]: r for r in api.get("/api/calendar-sync/connections/").json()}
    assert [i for i, r in rows.items() if r["write"]] == [three["outlook"]]
    assert api.get("/api/calendar-sync/status").json()["provider"] == "microsoft"
    # From now on a change goes to Outlook only.
    fake_google.reset_log()
    assert run(api.post, f"/api/bookings/{bookings[0].pk}/cancel/").status_code == 200
    assert titles(fake_microsoft.agenda(MS_ACCOUNT)) == ["Desk 48"]
    assert fake_google.calls() == []


def test_adding_an_account_writes_nothing_anywhere(fake_google, fake_microsoft, api, run, member, make_booking):
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    confirmed(api, run, make_booking, member, 24, "Desk")
    fake_google.reset_log()
    assert landing(run(connect, api, fake_microsoft, add=True))["calendar_sync"] == "connected"
    assert {c["method"] for c in fake_google.calls()} == {"GET"}  # naming the first account: no write again
    assert {c["method"] for c in fake_microsoft.calls()} == {"GET"} and fake_microsoft.agenda(MS_ACCOUNT) == []
    assert [r["write"] for r in api.get("/api/calendar-sync/connections/").json()] == [True, False]


def test_only_true_makes_a_write_connection_and_a_patch_needs_a_field(three, api):
    url = f"/api/calendar-sync/connections/{three['outlook']}/"
    assert api.patch(url, {"write": False}, format="json").status_code == 400
    assert api.patch(url, {}, format="json").status_code == 400
    assert CalendarToken.objects.get(write=True).pk == CalendarToken.objects.get(account=GOOGLE_ACCOUNT).pk


def test_disconnecting_one_leaves_the_others(three, api, run, member, make_booking, fake_google, fake_microsoft):
    response = api.delete(f"/api/calendar-sync/connections/{three['second']}/")
    assert response.status_code in (200, 204)
    assert [r["id"] for r in api.get("/api/calendar-sync/connections/").json()] == [three["google"], three["outlook"]]
    assert api.get("/api/calendar-sync/status").json()["provider"] == "google"
    # Disconnecting the write one: no other becomes it on its own; bookings wait for the member's choice.
    assert api.delete(f"/api/calendar-sync/connections/{three['google']}/").status_code in (200, 204)
    status = api.get("/api/calendar-sync/status").json()
    assert status["connected"] is False and [c["id"] for c in status["connections"]] == [three["outlook"]]
    booking = confirmed(api, run, make_booking, member, 24, "Desk")
    assert fake_microsoft.calls() == [] and api.get(f"/api/bookings/{booking.pk}/").status_code == 200
    run(api.patch, f"/api/calendar-sync/connections/{three['outlook']}/", {"write": True}, format="json")
    assert titles(fake_microsoft.agenda(MS_ACCOUNT)) == ["Desk"]


def test_another_member_gets_404_on_my_connections(three, other):
    theirs = client_for(other)
    url = f"/api/calendar-sync/connections/{three['outlook']}/"
    assert theirs.get(url).status_code == 404
    assert theirs.patch(url, {"write": True}, format="json").status_code == 404
    assert theirs.patch(url, {"conflicts": False}, format="json").status_code == 404
    assert theirs.delete(url).status_code == 404
    assert theirs.get("/api/calendar-sync/connections/").json() == []
    assert CalendarToken.objects.count() == 3 and CalendarToken.objects.get(pk=three["outlook"]).conflicts


def test_connecting_the_same_account_again_keeps_one_connection(three, api, run, fake_microsoft):
    api.patch(f"/api/calendar-sync/connections/{three['outlook']}/", {"conflicts": False}, format="json")
    assert landing(run(connect, api, fake_microsoft, add=True))["calendar_sync"] == "connected"
    rows = api.get("/api/calendar-sync/connections/").json()
    outlook = [r for r in rows if r["account"] == MS_ACCOUNT]
    assert len(rows) == 3 and len(outlook) == 1 and outlook[0]["conflicts"] is False


def test_connecting_without_add_replaces_the_write_connection(three, api, run, fake_microsoft):
    assert landing(run(connect, api, fake_microsoft, account="work@contoso.com"))["calendar_sync"] == "connected"
    rows = api.get("/api/calendar-sync/connections/").json()
    assert len(rows) == 3
    write = [r for r in rows if r["write"]]
    assert len(write) == 1 and write[0]["id"] == three["google"] and write[0]["provider"] == "microsoft"
    assert write[0]["account"] == "work@contoso.com"


def test_existing_connections_become_their_members_write_connection(member, other):
    executor = MigrationExecutor(connection)
    before = [("calendar_sync", "0007_oauth_browser_binding")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("calendar_sync", "CalendarToken")
    for user in (member, other):
        old.objects.create(
            user_id=user.pk,
            owner_kind="user",
            owner_id=str(user.pk),
            provider="google",
            access_token="a",
            refresh_token="r",
        )
    old.objects.create(owner_kind="workspace", owner_id="3", provider="microsoft", access_token="a", refresh_token="r")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("calendar_sync"))
    rows = CalendarToken.objects.order_by("owner_kind", "owner_id")
    assert [(t.owner_kind, t.write, t.conflicts, t.account) for t in rows] == [
        ("user", True, True, ""),
        ("user", True, True, ""),
        ("workspace", True, True, ""),
    ]
    assert {t.user_id for t in rows if t.user_id} == {member.pk, other.pk}


def test_the_schema_documents_connections_and_the_busy_answer(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    listing = next(v for k, v in paths.items() if k.rstrip("/") == "/api/calendar-sync/connections")
    one = next(v for k, v in paths.items() if k.rstrip("/") == "/api/calendar-sync/connections/{id}")
    assert set(listing) - {"parameters"} == {"get"} and {"get", "patch", "delete"} <= set(one)
    for method in ("get", "patch", "delete"):
        assert "404" in one[method]["responses"]
        (pk,) = [p for p in one[method]["parameters"] if p["in"] == "path"]
        assert pk["name"] == "id" and pk["schema"]["format"] == "uuid"
    fields = schema["components"]["schemas"]["Connection"]["properties"]
    assert set(fields) == {
        "id",
        "provider",
        "account",
        "calendar_id",
        "write",
        "conflicts",
        "status",
        "last_error",
        "connected_at",
    }
    busy = schema["components"]["schemas"]["Busy"]
    assert {"busy", "errors", "provider", "calendar_id", "checked_at"} <= set(busy["properties"])
    assert set(schema["components"]["schemas"]["BusySpan"]["required"]) == {"start", "end", "connection"}
    authorize = next(v for k, v in paths.items() if k.rstrip("/") == "/api/calendar-sync/auth/{provider}")
    assert any(p["name"] == "add" and p["in"] == "query" for p in authorize["get"]["parameters"])
    status = schema["components"]["schemas"]["Status"]["properties"]
    assert "connections" in status


def test_the_health_check_reaches_a_connection_the_member_does_not_write_to(three, api, fake_microsoft, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 3600}
    month_ago = timezone.now() - timezone.timedelta(days=30)
    CalendarToken.objects.update(created_at=month_ago, updated_at=month_ago)  # neither made nor refreshed lately
    AccessLog.objects.all().delete()
    assert api.get("/api/calendar-sync/calendars").status_code == 200  # the Google write connection: used
    fake_microsoft.revoke_grants(MS_ACCOUNT)
    call_command("calendar_sync_health")
    statuses = {r["id"]: r["status"] for r in api.get("/api/calendar-sync/connections/").json()}
    assert statuses == {three["google"]: "active", three["outlook"]: "needs_reauth", three["second"]: "active"}


def test_add_takes_only_yes_or_no(api, fake_google):
    for flag in ("AAA", "2", "yes please"):
        response = api.get("/api/calendar-sync/auth/google", {"add": flag})
        assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert api.get("/api/calendar-sync/auth/google", {"add": "0"}).status_code == 200
