"""Key rotation re-encrypts every secret the app stores: calendar tokens, OAuth verifiers, iCal
feed secrets, and any SecretField added later (found from the models, not from a list)."""

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from calendar_sync.exceptions import ConfigurationError
from calendar_sync.fields import SecretField, current_fernet
from calendar_sync.models import CalendarFeed, CalendarToken, OAuthState
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

NEW_KEY = "a-brand-new-secret-key-for-rotation"


def models_with_secrets():
    """{model: [its SecretFields]} for every calendar_sync model, found independently of the command."""
    found = {}
    for model in apps.get_app_config("calendar_sync").get_models():
        fields = [field for field in model._meta.concrete_fields if isinstance(field, SecretField)]
        if fields:
            found[model] = fields
    return found


def raw_secrets():
    """{(model label, pk, field name): the stored column}, read with SQL so nothing is decrypted."""
    quote = connection.ops.quote_name
    raw = {}
    with connection.cursor() as cursor:
        for model, fields in models_with_secrets().items():
            columns = ", ".join(quote(f.column) for f in [model._meta.pk, *fields])
            cursor.execute(f"SELECT {columns} FROM {quote(model._meta.db_table)}")
            for pk, *values in cursor.fetchall():
                for field, value in zip(fields, values, strict=True):
                    raw[(model._meta.label, str(pk), field.name)] = value
    return raw


@pytest.fixture
def stored(member):
    """One row of each model that holds a secret; {(label, field): plaintext}."""
    token = CalendarToken.objects.create(user=member, access_token="access-plain-1", refresh_token="refresh-plain-1")
    state = OAuthState.objects.create(user=member, provider="google", code_verifier="verifier-plain-1")
    feed = CalendarFeed.issue(member)
    return {
        ("calendar_sync.CalendarToken", "access_token"): token.access_token,
        ("calendar_sync.CalendarToken", "refresh_token"): token.refresh_token,
        ("calendar_sync.OAuthState", "code_verifier"): state.code_verifier,
        ("calendar_sync.CalendarFeed", "secret"): feed.secret,
    }


def switch_key(settings):
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = NEW_KEY


def test_every_secret_survives_rotation_and_dropping_the_old_key(api, member, stored, settings):
    secret = stored[("calendar_sync.CalendarFeed", "secret")]
    feed_path = f"/api/calendar-sync/ical/{secret}.ics"
    assert client_for(None).get(feed_path).status_code == 200
    before = raw_secrets()

    switch_key(settings)
    out = StringIO()
    call_command("calendar_sync_rotate_keys", stdout=out)
    settings.SECRET_KEY_FALLBACKS = []  # the old key is gone

    token = CalendarToken.objects.get()
    assert token.access_token == "access-plain-1" and token.refresh_token == "refresh-plain-1"
    assert OAuthState.objects.get().code_verifier == "verifier-plain-1"
    assert CalendarFeed.objects.get().secret == secret
    assert api.get("/api/calendar-sync/ical").json()["url"] == f"http://testserver{feed_path}"  # decrypts the secret
    assert client_for(None).get(feed_path).status_code == 200

    after = raw_secrets()
    assert after.keys() == before.keys() and len(after) == 4
    for (label, _, name), value in after.items():
        plain = stored[(label, name)]
        assert value.startswith("gAAAA") and plain not in value
        assert value != before[(label, _, name)]
    assert "Re-encrypted 3 row(s)" in out.getvalue()


def test_rotate_keys_covers_every_secret_field_of_every_model(stored, member, make_user, settings):
    from calendar_sync.management.commands.calendar_sync_rotate_keys import rotate_keys

    CalendarToken.objects.create(
        user=make_user("carol"), access_token="access-plain-2", refresh_token="refresh-plain-2"
    )
    secret_models = models_with_secrets()
    assert {m._meta.label for m in secret_models} >= {
        "calendar_sync.CalendarToken",
        "calendar_sync.OAuthState",
        "calendar_sync.CalendarFeed",
    }
    before = raw_secrets()

    switch_key(settings)
    counts = rotate_keys()
    assert counts == {model._meta.label: model._base_manager.count() for model in secret_models}
    assert counts["calendar_sync.CalendarToken"] == 2

    settings.SECRET_KEY_FALLBACKS = []
    fernet = current_fernet()  # the new key alone
    after = raw_secrets()
    assert after.keys() == before.keys()
    for key, value in after.items():
        assert value.startswith("gAAAA") and value != before[key], key
        assert fernet.decrypt(value.encode()), key  # raises InvalidToken if this field was missed


def test_dropping_the_old_key_without_rotating_fails_loudly(stored, settings):
    """The control for the tests above: without the rotation, the old ciphertext is unreadable."""
    switch_key(settings)
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(ConfigurationError):
        CalendarFeed.objects.get().secret  # noqa: B018
