"""Push channel upkeep: a watched calendar's change is pulled at once.

A shared (room) connection, and a member's write connection on a provider that reports changes to
our events (`remote.watched`: what the member does to our events comes back), gets a Google push
channel (`events.watch`) or a Microsoft Graph subscription (`POST /subscriptions`) whose
notifications reach `webhooks.webhook` at `/api/calendar-sync/push/<provider>`. A notification
carries no data we trust beyond "this channel changed": it is verified with the channel's secret
(an HMAC of the connection id, so nothing secret is stored). The scheduled pull stays the safety
net: a lost notification, an expired channel or an unreachable webhook only delays a change until
the next pull.

Only with CALENDAR_SYNC["PUSH_URL"] set: the public base URL of this site (https; plain http
only to a loopback host with DEBUG on), e.g. "https://hub.example.com". Channels live a week
(Google) or ~70 hours (Graph); `renew_all` (beat) renews those expiring within a day.
"""

import hmac
import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from . import remote, tokens
from .conf import get_setting
from .exceptions import CalendarSyncError
from .models import MEMBER, AccessLog, CalendarToken
from .providers import get_provider
from .providers.base import insecure_reason

logger = logging.getLogger(__name__)
Reason = AccessLog.Reason

SECRET_SALT = "calendar_sync.push.channel"  # every live channel's secret depends on it: never change it
RENEW_BEFORE = timedelta(days=1)  # renew a channel expiring sooner than this


# --- the channel secret ----------------------------------------------------------------------
def channel_secret(token, key=None):
    """The secret a channel's notifications carry (Google's channel token, Graph's clientState).

    An HMAC-SHA256 of the connection id under SECRET_KEY (or `key`): 64 hex characters, within
    Google's 256 and Graph's 128, and nothing to store.
    """
    return salted_hmac(SECRET_SALT, str(token.pk), secret=key, algorithm="sha256").hexdigest()


def secret_ok(token, given):
    """Whether `given` is the connection's secret under SECRET_KEY or one of SECRET_KEY_FALLBACKS
    (a channel made before a key rotation keeps working until it is renewed)."""
    if not isinstance(given, str) or not given:
        return False
    given_bytes = given.encode("utf-8", "surrogatepass")
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(hmac.compare_digest(given_bytes, channel_secret(token, key).encode()) for key in keys)


# --- where the providers call ----------------------------------------------------------------
def _push_base():
    """PUSH_URL when push is on and it is a URL providers may be given (see insecure_reason), else None."""
    base = str(get_setting("PUSH_URL") or "")
    if not base:
        return None
    reason = insecure_reason(base, strict=True)
    if reason:
        logger.warning('CALENDAR_SYNC["PUSH_URL"] = %s: push notifications are off.', reason)
        return None
    return base


def push_address(provider_name):
    """The webhook URL for `provider_name` under PUSH_URL, or None when push is off."""
    base = _push_base()
    if base is None:
        return None
    path = reverse("calendar_sync:push", kwargs={"provider": provider_name})
    prefix = get_script_prefix()  # PUSH_URL already names the public base, prefix included
    if path.startswith(prefix):
        path = path[len(prefix) :]
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


# --- channels --------------------------------------------------------------------------------
def _unwatch(token, channel_id, resource_id, reason):
    """Stop a channel at the provider, best effort: the error is logged, never raised."""
    provider = get_provider(token.provider)
    try:
        tokens.with_access(
            token, AccessLog.Operation.PULL, reason, lambda access: provider.unwatch(access, channel_id, resource_id)
        )
    except CalendarSyncError as exc:
        logger.warning(
            "push channel of %s:%s not stopped at %s: %s", token.owner_kind, token.owner_id, token.provider, exc.code
        )
        return False
    except Exception:  # noqa: BLE001 - never let stopping a channel break its caller
        logger.exception("push channel of %s:%s not stopped at %s", token.owner_kind, token.owner_id, token.provider)
        return False
    return True


def ensure_watch(token, reason=Reason.PUSH, force=False):
    """Make sure the watched connection `token` has a live channel; True when it has one afterwards.

    Nothing happens unless PUSH_URL is usable and the connection is watched (shared, or a member's
    write connection `remote.watched`) and active. A channel is made when there is none, when it
    expires within a day, or with `force` (its calendar changed). Renewal makes the new channel first, stores it, then stops the old one, so no change
    falls between the two. Provider errors are logged, never raised: scheduled pulls still run.
    """
    if not (token.is_shared or remote.watched(token)) or not token.is_active:
        return False  # a member's other connections are only read for conflicts, on demand
    if not get_provider(token.provider).supports_push:
        return False  # a provider without push (CalDAV, ICS) is only pulled
    address = push_address(token.provider)
    if address is None:
        return False
    now = timezone.now()
    if not force and token.push_channel and token.push_expires_at and token.push_expires_at > now + RENEW_BEFORE:
        return True
    old_channel, old_resource = token.push_channel, token.push_resource
    provider = get_provider(token.provider)
    try:
        channel, resource, expires = tokens.with_access(
            token,
            AccessLog.Operation.PULL,
            reason,
            lambda access: provider.watch(access, token.calendar_id, address, channel_secret(token)),
        )
    except CalendarSyncError as exc:
        logger.warning(
            "push channel for %s:%s not made at %s: %s", token.owner_kind, token.owner_id, token.provider, exc.code
        )
        return False
    except Exception:  # noqa: BLE001 - pulls still run; a push problem must not break connecting
        logger.exception("push channel for %s:%s not made at %s", token.owner_kind, token.owner_id, token.provider)
        return False
    # Stored only if nobody replaced the channel, changed the calendar or disconnected meanwhile.
    stored = CalendarToken.objects.filter(
        pk=token.pk,
        push_channel=old_channel,
        calendar_id=token.calendar_id,
        provider=token.provider,
        status=CalendarToken.Status.ACTIVE,
    ).update(push_channel=channel, push_resource=resource, push_expires_at=expires, updated_at=timezone.now())
    if not stored:
        _unwatch(token, channel, resource, reason)  # surplus: the connection moved on without it
        return False
    token.push_channel, token.push_resource, token.push_expires_at = channel, resource, expires
    logger.info(
        "push channel for %s:%s at %s until %s", token.owner_kind, token.owner_id, token.provider, expires.isoformat()
    )
    if old_channel:
        _unwatch(token, old_channel, old_resource, reason)
    return True


def stop_watch(token, reason=Reason.PUSH):
    """Forget the connection's channel and stop it at the provider (best effort). Call it before a
    shared connection is disconnected (it needs the grant) and when its calendar changes.
    True when there was a channel."""
    channel, resource = token.push_channel, token.push_resource
    if not channel:
        return False
    CalendarToken.objects.filter(pk=token.pk, push_channel=channel).update(
        push_channel="", push_resource="", push_expires_at=None, updated_at=timezone.now()
    )
    token.push_channel, token.push_resource, token.push_expires_at = "", "", None
    if token.is_active:  # a dead grant cannot stop anything: the channel expires on its own
        _unwatch(token, channel, resource, reason)
    return True


def renew_all(reason=Reason.PUSH, force=False):
    """Beat: `ensure_watch` on every active watched connection (shared, or a member's write one) with no
    channel or one expiring within RENEW_BEFORE (found off a partial index, streamed). Returns how many
    channels were made or renewed.

    `force` remakes every channel (after PUSH_URL changed: the old ones still call the old address)."""
    if _push_base() is None:
        return 0
    members = Q(owner_kind=MEMBER, write=True, provider__in=remote.providers(push=True))
    shared = CalendarToken.objects.filter(~Q(owner_kind=MEMBER) | members, status=CalendarToken.Status.ACTIVE)
    if force:
        due = [shared]
    else:  # two plain range scans of the partial index (an OR of them may read all of it)
        due = [
            shared.filter(push_expires_at__isnull=True),
            shared.filter(push_expires_at__lte=timezone.now() + RENEW_BEFORE),
        ]
    return sum(
        1 for tokens in due for token in tokens.iterator(chunk_size=100) if ensure_watch(token, reason, force=force)
    )
