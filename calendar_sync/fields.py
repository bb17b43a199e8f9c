"""Encrypted token storage that fails loudly on a wrong key.

django-fernet-encrypted-fields silently returns the ciphertext when no key can decrypt
it, which would send `gAAAA...` to Google as a token. `SecretField` raises instead, and
derives its keys from the *current* settings (cached per key set), so a rotation or an
`override_settings` is honoured without a restart.
"""

import base64
import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db.models.constants import LOOKUP_SEP
from encrypted_fields.fields import EncryptedTextField

from .exceptions import ConfigurationError, Undecryptable

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _fernet(secret_keys, salts):
    """Same derivation as django-fernet-encrypted-fields, so either can read the other's data."""
    keys = []
    for secret in secret_keys:
        for salt in salts:
            kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt.encode(), iterations=100_000)
            keys.append(Fernet(base64.urlsafe_b64encode(kdf.derive(secret.encode()))))
    return keys[0] if len(keys) == 1 else MultiFernet(keys)


def current_fernet():
    salts = settings.SALT_KEY if isinstance(settings.SALT_KEY, (list, tuple)) else [settings.SALT_KEY]
    if not salts or not all(salts):
        raise ConfigurationError("SALT_KEY is not set: calendar tokens cannot be encrypted.")
    secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", []))
    return _fernet(tuple(secrets), tuple(salts))


@lru_cache(maxsize=512)
def _decrypt(fernet, ciphertext):
    """Plaintext of `ciphertext` under `fernet` (the keys of the moment, so a key change misses).

    Remembered per process: a worker loads the same connection for task after task, and each
    load would otherwise verify and decrypt both of its tokens again. Only a ciphertext read
    from the database finds its entry; a wrong key still raises (failures are not cached).
    """
    return fernet.decrypt(ciphertext.encode()).decode()


class SecretField(EncryptedTextField):
    """An EncryptedTextField that never hands ciphertext back as if it were the secret."""

    @property
    def f(self):
        return current_fernet()

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        try:
            return _decrypt(self.f, value)
        except InvalidToken:
            # What to do goes to the operator's log; the error itself may reach a member (a sync's last_error).
            logger.error(
                "%s.%s cannot be decrypted with the configured SECRET_KEY/SECRET_KEY_FALLBACKS and SALT_KEY. Restore the "
                "key the tokens were written with (as a fallback) and run `manage.py calendar_sync_rotate_keys`.",
                self.model.__name__,
                self.name,
            )
            raise Undecryptable(
                "The stored calendar credentials cannot be read on this server; an administrator must fix it."
            ) from None

    def to_python(self, value):
        return value


#: Columns that find a secret without holding it encrypted: an iCal feed is looked up by its secret's hash.
SECRET_HASHES = frozenset({"calendar_sync.calendarfeed.secret_hash"})


def is_secret(field):
    """An encrypted column (`SecretField`), or a hash a secret is found by."""
    model = getattr(field, "model", None)
    return isinstance(field, SecretField) or (
        model is not None and f"{model._meta.label_lower}.{field.name}" in SECRET_HASHES
    )


def reaches_secret(model, path, is_secret=is_secret):
    """True when a lookup, filter, search or ordering path compares a column `is_secret` accepts:
    directly (`access_token__startswith`), through relations (`user__calendar_tokens__refresh_token`),
    through the `pk` alias, or by ending on a relation whose key is one (`feed__gt`). The admin
    refuses such paths: each answer would leak a bit of the secret."""
    opts, field = model._meta, None
    for part in path.split(LOOKUP_SEP):
        try:
            field = opts.pk if part == "pk" else opts.get_field(part)
        except FieldDoesNotExist:
            break  # the rest is a lookup or transform on the field reached so far
        if is_secret(field):
            return True
        if not field.is_relation or field.related_model is None:
            return False
        opts = field.related_model._meta
    if field is None or not field.is_relation or field.related_model is None:
        return False
    try:  # a relation compared as a whole compares the key it points to
        return is_secret(field.target_field)
    except (AttributeError, FieldError):
        return False
