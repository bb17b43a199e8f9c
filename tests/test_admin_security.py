"""The admin as a staff user who may only view changes nothing and reaches no credential, on every
registered admin (the host's included); API tokens are stored hashed and expire."""

import hashlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models import F
from django.test import RequestFactory
from django.utils import timezone
from knox.models import AuthToken

from bookings import services
from bookings.models import Booking
from calendar_sync import tasks
from calendar_sync.fields import SecretField
from managehub.admin import AdminSite, is_credential
from tests.helpers import GOOGLE_ACCOUNT, client_for, connect

pytestmark = pytest.mark.django_db
User = get_user_model()


def registered():
    """(model, its ModelAdmin) for every model registered on the admin site."""
    for model in apps.get_models():
        if admin.site.is_registered(model):
            yield model, admin.site.get_model_admin(model)


def changelist(model):
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def as_request(user, data=None):
    request = RequestFactory().post("/", data or {}) if data is not None else RequestFactory().get("/")
    request.user = user
    return request


@pytest.fixture
def viewer(make_user):
    """Staff with every view permission and nothing else."""
    user = make_user("viewer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return User.objects.get(pk=user.pk)  # no cached permissions


@pytest.fixture
def estate(google_connected, member, make_booking, run):
    """A row in every registered model: a connected member with an API token, a synced booking, its
    access log, a group."""
    AuthToken.objects.create(user=member)
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    run(tasks.sync_task.delay, "booking", str(booking.pk))
    later = booking.start + timedelta(days=3)
    services.create_series(
        user=member,
        workspace=booking.workspace,
        title="Weekly",
        start=later,
        end=later + timedelta(hours=1),
        rule="FREQ=WEEKLY;COUNT=2",
    )
    Group.objects.create(name="operators")
    google_connected.reset_log()
    empty = [model for model, _ in registered() if not model._base_manager.exists()]
    assert not empty, empty
    return google_connected


def snapshot():
    """Every row of every table (sessions aside), decrypted where encrypted."""
    return {
        model._meta.label: list(model._base_manager.order_by("pk").values_list())
        for model in apps.get_models()
        if model is not Session
    }


def test_credentials_are_known():
    fields = {
        f"{f.model._meta.label}.{f.name}"
        for model in apps.get_models()
        for f in model._meta.get_fields()
        if is_credential(f)
    }
    assert {
        "auth.User.password",
        "knox.AuthToken.digest",
        "knox.AuthToken.token_key",
        "calendar_sync.CalendarToken.refresh_token",
        "calendar_sync.CalendarToken.access_token",
        "calendar_sync.CalendarFeed.secret",
        "calendar_sync.OAuthState.code_verifier",
    } <= fields


def test_view_only_staff_runs_no_state_changing_action(
    estate, viewer, client, make_user, django_capture_on_commit_callbacks
):
    superuser = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(viewer)
    tried = 0
    for model, model_admin in registered():
        every = model_admin.get_actions(as_request(superuser))
        offered = model_admin.get_actions(as_request(viewer))
        for name, (func, _, _) in offered.items():
            assert set(getattr(func, "allowed_permissions", ())) <= {"view"}, (model, name)
        selected = [str(pk) for pk in model._base_manager.values_list("pk", flat=True)]
        for name in every:
            before = snapshot()
            with django_capture_on_commit_callbacks(execute=True):
                response = client.post(changelist(model), {"action": name, "_selected_action": selected, "index": 0})
            assert response.status_code in (200, 302), (model, name, response.status_code)
            assert snapshot() == before, (model, name)
            assert not estate.http_requests, (model, name, estate.http_requests)
            tried += 1
    assert tried >= 6  # delete_selected on each, refresh and disconnect, both resyncs


def test_change_permission_runs_the_resync_action(estate, make_user, client, django_capture_on_commit_callbacks):
    """The control for the test above: the same POST by staff who may change bookings does run."""
    operator = make_user("operator", is_staff=True)
    operator.user_permissions.set(Permission.objects.filter(codename__in=["view_booking", "change_booking"]))
    client.force_login(operator)
    booking = Booking.objects.get(series=None)
    with estate.lock:
        estate.accounts[GOOGLE_ACCOUNT]["events"].clear()  # the calendar lost the event
    with django_capture_on_commit_callbacks(execute=True):
        client.post(changelist(Booking), {"action": "resync", "_selected_action": [str(booking.pk)], "index": 0})
    assert len(estate.events(GOOGLE_ACCOUNT)) == 1


def credential_paths(model, prefix="", hops=0):
    """(path, probes) for every lookup path from `model` that ends in a credential, through up to two
    relations: a credential field, and `pk` or a relation compared as a whole when its key is one."""
    text = (("__regex", "^a"), ("__startswith", "a"))
    if not prefix and is_credential(model._meta.pk):
        yield "pk", (*text, ("__gt", "a"))
    for field in model._meta.get_fields():
        path = prefix + field.name
        if is_credential(field):
            yield path, text
        if not field.is_relation or field.related_model is None:
            continue
        if is_credential(field.related_model._meta.pk):
            yield path, (("__gt", "a"), ("", "a"))  # a relation compared as a whole compares its key
            yield f"{path}__pk", (*text, ("__gt", "a"))
        if hops < 2:
            yield from credential_paths(field.related_model, f"{path}__", hops + 1)


def test_no_lookup_through_any_relation_reaches_a_credential(estate, viewer, client, settings):
    settings.DEBUG = False  # as served: a refused lookup is a plain 400, not DEBUG's traceback page
    client.force_login(viewer)
    checked = set()
    for model, _ in registered():
        url = changelist(model)
        assert client.get(url).status_code == 200, url
        for path, probes in sorted(set(credential_paths(model))):
            for lookup, value in probes:
                response = client.get(url, {f"{path}{lookup}": value})
                assert response.status_code == 400, (url, path, lookup, response.status_code)
            checked.add((model._meta.label, path))
    assert ("auth.User", "password") in checked
    assert ("auth.User", "auth_token_set__digest") in checked and ("auth.User", "auth_token_set") in checked
    assert ("auth.User", "calendar_tokens__refresh_token") in checked
    assert ("bookings.Booking", "user__auth_token_set__token_key") in checked
    assert ("calendar_sync.CalendarToken", "user__password") in checked


def test_no_admin_searches_filters_orders_or_shows_a_credential(estate, viewer):
    request = as_request(viewer)
    for model, model_admin in registered():
        paths = {path for path, _ in credential_paths(model)}

        def reaches(item, paths=paths):
            item = item.lstrip("-^=@") if isinstance(item, str) else getattr(item, "name", "")
            return any(item == path or item.startswith(f"{path}__") for path in paths)

        for item in (
            *model_admin.get_search_fields(request),
            *model_admin.get_ordering(request),
            *model_admin.get_list_display(request),
        ):
            assert not reaches(item), (model, item)
        for item in model_admin.get_list_filter(request):
            assert not reaches(item[0] if isinstance(item, tuple) else item), (model, item)


def test_the_guard_covers_any_admin_a_project_registers(member, viewer):
    """A careless ModelAdmin on the site still searches, filters, orders and shows no credential."""

    @admin.display(ordering="password")
    def hashed(user):
        return "…"

    class Careless(UserAdmin):
        search_fields = ("username", "password", "=auth_token_set__digest", "^calendar_tokens__refresh_token")
        list_filter = ("is_staff", "password", ("auth_token_set__token_key", admin.AllValuesFieldListFilter))
        ordering = ("-password", F("auth_token_set__digest").asc(), "username")
        list_display = ("username", "password", "auth_token_set__digest", hashed)

    site = AdminSite(name="probe")
    site.register(User, Careless)
    model_admin = site.get_model_admin(User)
    request = as_request(viewer)
    assert list(model_admin.get_search_fields(request)) == ["username"]
    assert list(model_admin.get_list_filter(request)) == ["is_staff"]
    assert list(model_admin.get_ordering(request)) == ["username"]
    assert list(model_admin.get_list_display(request)) == ["username"]
    found, _ = model_admin.get_search_results(request, User.objects.all(), member.password[:25])
    assert not found.exists()
    for lookup in (
        "password__startswith",
        "auth_token_set__pk__regex",
        "auth_token_set",
        "user_permissions__user__password",
    ):
        assert not model_admin.lookup_allowed(lookup, "a", request), lookup
    assert model_admin.lookup_allowed("is_staff__exact", "1", request)


# --- API tokens --------------------------------------------------------------------------------


def sign_in(username="alice"):
    response = client_for(None).post(
        "/api/auth/token/", {"username": username, "password": f"pw-{username}"}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_api_token_is_stored_only_as_a_hash(member):
    token = sign_in()["token"]
    row = AuthToken.objects.get(user=member)
    assert row.digest == hashlib.sha512(token.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        stored = " ".join(str(value) for record in cursor.fetchall() for value in record)
    assert token not in stored
    assert not apps.is_installed("rest_framework.authtoken")  # DRF's clear-text tokens are gone
    assert not admin.site.is_registered(AuthToken)


def test_sign_in_token_authenticates_and_expires_as_configured(member, settings):
    answer = sign_in()
    expiry = timezone.datetime.fromisoformat(answer["expiry"])
    assert abs(expiry - (timezone.now() + settings.REST_KNOX["TOKEN_TTL"])) < timezone.timedelta(minutes=1)
    api = client_for(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {answer['token']}")
    assert api.get("/api/bookings/").status_code == 200
    assert api.get("/api/calendar-sync/status").status_code == 200
    assert not api.cookies.get("sessionid")  # signing in made no session: the token is the credential


def test_expired_token_is_a_401_json(member):
    token = sign_in()["token"]
    AuthToken.objects.filter(user=member).update(expiry=timezone.now() - timezone.timedelta(seconds=1))
    api = client_for(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api.get("/api/bookings/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "authentication_failed"
    assert not AuthToken.objects.filter(user=member).exists()


def test_deactivated_member_token_is_a_401(member):
    token = sign_in()["token"]
    member.is_active = False
    member.save()
    api = client_for(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/bookings/").status_code == 401


@pytest.mark.parametrize("header", ["Token \xff\xfe", "Token abc\x00def", "Token " + "a" * 5000, "Token é"])
def test_hostile_token_headers_are_a_401(member, header):
    sign_in()
    response = client_for(None).get("/api/bookings/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"


def secret_lookups():
    for model, model_admin in admin.site._registry.items():
        for field in model._meta.get_fields():
            if isinstance(field, SecretField):
                yield model_admin, field.name
            elif field.is_relation and field.related_model is not None:
                for far in field.related_model._meta.get_fields():
                    if isinstance(far, SecretField):
                        yield model_admin, f"{field.name}__{far.name}"


def test_no_admin_lookup_reaches_a_secret(staff, client, fake_google, api, settings):
    connect(api, fake_google)
    settings.DEBUG = False  # as served: a refused lookup is a plain 400, not DEBUG's traceback page
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    checked = 0
    for model_admin, path in secret_lookups():
        url = f"/admin/{model_admin.model._meta.app_label}/{model_admin.model._meta.model_name}/"
        for lookup in ("__regex=^gAAAAAB[A-M]", "__startswith=gAAAA", "=x", "__isnull=False"):
            response = client.get(f"{url}?{path}{lookup}")
            assert response.status_code == 400, (url, path, lookup)
            checked += 1
        assert path not in str(model_admin.search_fields) and path not in str(model_admin.list_filter)
    assert checked >= 8  # tokens, OAuth states and feeds, directly and through the user
