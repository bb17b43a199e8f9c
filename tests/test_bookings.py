"""The booking lifecycle and its REST API: rules, bad input, cross-member access."""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from bookings.models import Booking, Workspace
from tests.helpers import IN_CI, client_for

pytestmark = pytest.mark.django_db


def iso(dt):
    return dt.isoformat()


def test_ci_runs_on_postgresql():
    if IN_CI:
        assert connection.vendor == "postgresql", "CI must exercise the real PostgreSQL (set DATABASE_URL)"
    else:
        assert connection.vendor in ("postgresql", "sqlite")


def test_token_auth(member):
    client = client_for(None)
    response = client.post("/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/bookings/").status_code == 200
    assert (
        client_for(None).post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json").status_code
        == 400
    )


def test_unauthenticated_is_refused(db):
    anonymous = client_for(None)
    for path in ("/api/bookings/", "/api/workspaces/", "/api/calendar-sync/status"):
        response = anonymous.get(path)
        assert response.status_code in (401, 403)
        assert "detail" in response.json()


def test_workspace_creation_is_staff_only(api, staff):
    body = {"name": "Garden", "address": "2 Park Lane", "time_zone": "Europe/London"}
    assert api.post("/api/workspaces/", body, format="json").status_code == 403
    response = client_for(staff).post("/api/workspaces/", body, format="json")
    assert response.status_code == 201
    assert api.get("/api/workspaces/").json()["count"] == 1
    bad = client_for(staff).post("/api/workspaces/", {"name": "X", "time_zone": "Mars/Olympus"}, format="json")
    assert bad.status_code == 400 and "time_zone" in bad.json()


def test_create_confirm_reschedule_cancel(api, workspace):
    start = timezone.now() + timezone.timedelta(days=2)
    response = api.post(
        "/api/bookings/",
        {
            "workspace": workspace.pk,
            "title": "Standup",
            "start": iso(start),
            "end": iso(start + timezone.timedelta(hours=1)),
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    booking = response.json()
    assert booking["status"] == "pending" and booking["google_calendar_event_id"] is None
    url = f"/api/bookings/{booking['id']}/"

    assert api.post(url + "confirm/").json()["status"] == "confirmed"
    assert api.post(url + "confirm/").status_code == 200  # idempotent

    later = start + timezone.timedelta(hours=3)
    moved = api.patch(
        url, {"start": iso(later), "end": iso(later + timezone.timedelta(hours=2)), "title": "Planning"}, format="json"
    )
    assert moved.status_code == 200, moved.content
    assert moved.json()["title"] == "Planning"
    assert Booking.objects.get(pk=booking["id"]).start == later

    assert api.post(url + "cancel/").json()["status"] == "cancelled"
    refused = api.post(url + "confirm/")
    assert refused.status_code == 409 and refused.json()["code"] == "invalid_transition"
    assert api.patch(url, {"title": "Again"}, format="json").status_code == 409
    assert Booking.objects.get(pk=booking["id"]).title == "Planning"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"title": ""}, "title"),
        ({"start": "not-a-date"}, "start"),
        ({"end": "2020-01-01T00:00:00Z"}, "end"),
        ({"workspace": 999999}, "workspace"),
        ({"title": "x" * 201}, "title"),
    ],
)
def test_bad_booking_input_names_the_field(api, workspace, change, field):
    start = timezone.now() + timezone.timedelta(days=1)
    body = {
        "workspace": workspace.pk,
        "title": "Ok",
        "start": iso(start),
        "end": iso(start + timezone.timedelta(hours=1)),
        **change,
    }
    response = api.post("/api/bookings/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert Booking.objects.count() == 0


def test_malformed_json_is_a_400(api):
    response = api.generic("POST", "/api/bookings/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_overlapping_confirmations_are_refused(api, member, make_booking):
    first = make_booking(member, hours_from_now=24, duration=2)
    second = make_booking(member, hours_from_now=25, duration=2)
    assert api.post(f"/api/bookings/{first.pk}/confirm/").status_code == 200
    response = api.post(f"/api/bookings/{second.pk}/confirm/")
    assert response.status_code == 409 and response.json()["code"] == "overlap"
    assert Booking.objects.get(pk=second.pk).status == "pending"
    # rescheduling a confirmed booking onto another confirmed one is refused too, and nothing is saved
    third = make_booking(member, hours_from_now=30, duration=1)
    api.post(f"/api/bookings/{third.pk}/confirm/")
    moved = api.patch(f"/api/bookings/{third.pk}/", {"start": iso(first.start), "end": iso(first.end)}, format="json")
    assert moved.status_code == 409
    assert Booking.objects.get(pk=third.pk).start != first.start


def test_end_before_start_on_reschedule(api, member, make_booking):
    booking = make_booking(member)
    response = api.patch(
        f"/api/bookings/{booking.pk}/", {"end": iso(booking.start - timezone.timedelta(hours=1))}, format="json"
    )
    assert response.status_code == 400 and "end" in response.json()


def test_members_only_see_and_change_their_own(api, other, staff, member, make_booking):
    mine = make_booking(member)
    theirs = make_booking(other, hours_from_now=48)
    listed = [b["id"] for b in api.get("/api/bookings/").json()["results"]]
    assert listed == [str(mine.pk)]
    for method, suffix in (("get", ""), ("patch", ""), ("post", "confirm/"), ("post", "cancel/")):
        response = getattr(api, method)(f"/api/bookings/{theirs.pk}/{suffix}", {"title": "mine now"}, format="json")
        assert response.status_code == 404, (method, suffix)
    theirs.refresh_from_db()
    assert theirs.status == "pending" and theirs.title == "Deep work"
    assert len(client_for(staff).get("/api/bookings/").json()["results"]) == 2


def test_schema_describes_bookings_and_calendar_sync(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/bookings/",
        "/api/bookings/{id}/confirm/",
        "/api/calendar-sync/status",
        "/api/calendar-sync/disconnect",
    ):
        assert any(p.rstrip("/") == path.rstrip("/") for p in paths), path
    assert "Booking" in schema["components"]["schemas"]


def test_admin_pages_render(staff, member, make_booking, client):
    staff.is_superuser = True
    staff.save()
    make_booking(member)
    client.force_login(staff)
    for url in (
        "/admin/bookings/booking/",
        "/admin/bookings/workspace/",
        "/admin/calendar_sync/calendartoken/",
        "/admin/calendar_sync/syncrecord/",
    ):
        assert client.get(url).status_code == 200, url


def test_workspace_time_zone_validated_on_model(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        Workspace(name="x", time_zone="Nowhere/Land").full_clean()


def test_workspace_of_a_booking_cannot_be_patched(api, member, make_booking, workspace):
    booking = make_booking(member)
    elsewhere = Workspace.objects.create(name="Other", time_zone="UTC")
    response = api.patch(f"/api/bookings/{booking.pk}/", {"workspace": elsewhere.pk, "title": "Renamed"}, format="json")
    assert response.status_code == 200, response.content
    booking.refresh_from_db()
    assert booking.workspace == workspace and booking.title == "Renamed"


@pytest.mark.django_db(transaction=True)
def test_racing_confirms_of_overlapping_bookings_give_one_409(make_user, workspace):
    alice, bob = make_user("alice2"), make_user("bob2")
    start = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
    for round_ in range(5):
        at = start + timezone.timedelta(days=round_)
        a = Booking.objects.create(
            user=alice, workspace=workspace, title="A", start=at, end=at + timezone.timedelta(hours=1)
        )
        b = Booking.objects.create(
            user=bob, workspace=workspace, title="B", start=at, end=at + timezone.timedelta(hours=1)
        )
        results = {}
        barrier = threading.Barrier(2)

        def confirm(user, booking, barrier=barrier, results=results):
            barrier.wait()
            try:
                results[user.username] = client_for(user).post(f"/api/bookings/{booking.pk}/confirm/")
            finally:
                connection.close()

        threads = [threading.Thread(target=confirm, args=pair) for pair in ((alice, a), (bob, b))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        codes = sorted(r.status_code for r in results.values())
        assert codes == [200, 409], [r.content for r in results.values()]
        assert [r.json()["code"] for r in results.values() if r.status_code == 409] == ["overlap"]


def test_dates_no_calendar_can_hold_are_refused(api, workspace):
    for start, end in (("0001-01-01T00:00Z", "0001-01-01T01:00Z"), ("9999-12-31T20:00Z", "9999-12-31T21:00Z")):
        response = api.post(
            "/api/bookings/", {"workspace": workspace.pk, "title": "x", "start": start, "end": end}, format="json"
        )
        assert response.status_code == 400 and "start" in response.json(), response.content
    assert not Booking.objects.exists()
