"""Access tokens: refresh under the lock, needs_reauth and usage-limit pauses (and the one email each
sends), calls with a token (`with_access`: reads, listing and channel upkeep; the sync's batches use
`access_token` and `mark_needs_reauth` directly), and revoking a grant."""

import logging
from contextlib import ExitStack, contextmanager
from datetime import UTC, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import audit, quotas
from .conf import get_setting
from .exceptions import AuthorizationLost, CalendarSyncError, ConfigurationError, PermanentError, TransientError
from .models import MEMBER, AccessLog, CalendarToken
from .owners import Owner, label
from .providers import get_provider

logger = logging.getLogger(__name__)


def mark_needs_reauth(token, error):
    """The grant is gone. The first transition (not every failed sync) emails the owner once;
    reconnecting makes the connection active again, which re-arms it."""
    if _set_needs_reauth(token, error):
        _notify_reauth(token)


def _set_needs_reauth(token, error):
    """Record the state; True only for the transition from active."""
    changed = CalendarToken.objects.filter(pk=token.pk, status=CalendarToken.Status.ACTIVE).update(
        status=CalendarToken.Status.NEEDS_REAUTH, last_error=str(error)[:1000], updated_at=timezone.now()
    )
    token.status, token.last_error = CalendarToken.Status.NEEDS_REAUTH, str(error)[:1000]
    if changed:
        logger.warning(
            "calendar connection needs reauthorization: owner=%s:%s (%s)",
            token.owner_kind,
            token.owner_id,
            getattr(error, "code", ""),
        )
    return bool(changed)


def _notify_reauth(token):
    _notify(notify_needs_reauth, token.pk)  # at once: callers are outside transactions, and tests see it


def _notify(send, token_pk):
    try:
        send(token_pk)
    except Exception as exc:  # noqa: BLE001 - a mail server problem must not break a sync
        logger.warning("calendar email not sent for connection %s: %s", token_pk, type(exc).__name__)


def access_token(token, force=False, reason=AccessLog.Reason.MEMBER_REQUEST):
    """A usable access token for `token`, refreshed first when it expires within REFRESH_MARGIN.

    The refresh happens under a row lock and re-checks after acquiring it, so concurrent
    workers refresh once and the rest reuse the saved result. `force` refreshes even a
    token that looks fresh (after a 401), unless another worker already replaced it.
    """
    margin = timedelta(seconds=get_setting("REFRESH_MARGIN"))
    if not force and token.expires_at and token.expires_at > timezone.now() + margin:
        return token.access_token
    if not force and token.expires_at is None and not get_provider(token.provider).refreshable:
        return token.access_token  # a password or a secret URL: used until the server refuses it
    error, lost_now = None, False
    with transaction.atomic():
        locked = CalendarToken.objects.select_for_update().get(pk=token.pk)
        if locked.status != CalendarToken.Status.ACTIVE:
            raise AuthorizationLost("The calendar connection needs reauthorization.", code="needs_reauth")
        fresh = locked.expires_at and locked.expires_at > timezone.now() + margin
        if (fresh and not force) or (force and locked.access_token != token.access_token):
            token.access_token, token.expires_at = locked.access_token, locked.expires_at
            return token.access_token
        try:
            new = get_provider(locked.provider).refresh(locked.refresh_token)
        except CalendarSyncError as exc:
            error = exc
            # Still under the lock: a worker queued behind this one sees needs_reauth, not a second refresh.
            lost_now = isinstance(exc, AuthorizationLost) and _set_needs_reauth(token, exc)
        else:
            locked.access_token, locked.expires_at = new.access_token, new.expires_at
            locked.refresh_token = new.refresh_token or locked.refresh_token  # rotated, or the old one kept
            locked.last_error = ""
            locked.save(update_fields=["access_token", "refresh_token", "expires_at", "last_error", "updated_at"])
            token.access_token, token.refresh_token, token.expires_at = (
                locked.access_token,
                locked.refresh_token,
                locked.expires_at,
            )
    audit.log(token, audit.Operation.REFRESH, reason, error)
    if error is None:
        logger.info("calendar token refreshed: owner=%s:%s", token.owner_kind, token.owner_id)
        return token.access_token
    if lost_now:
        _notify_reauth(token)
    raise error


@contextmanager
def counted(token, bulk=False):
    """Provider calls made inside count against `token`'s connection quotas (and its bulk share)."""
    with ExitStack() as stack:
        call = stack.enter_context(quotas.connection(token.provider, token.pk))
        if bulk:
            stack.enter_context(quotas.bulk())
        yield call


def with_access(token, operation, reason, call):
    """`call(access_token)` with a fresh access token and one forced refresh on a 401; a lost grant
    marks the connection needs_reauth. Leaves one access-log row. Every read or watch goes through
    here, counted against the connection's quotas."""
    error: Exception | None = None
    try:
        with counted(token):
            try:
                return call(access_token(token, reason=reason))
            except AuthorizationLost:
                return call(access_token(token, force=True, reason=reason))
    except AuthorizationLost as exc:
        error = exc
        mark_needs_reauth(token, exc)
        raise
    except Exception as exc:
        error = exc
        raise
    finally:
        audit.log(token, operation, reason, error)


def calendars(token, reason=AccessLog.Reason.MEMBER_REQUEST):
    """The owner's writable calendars; a member's connection whose account is not known yet learns it
    from them (the primary calendar's owner)."""
    provider = get_provider(token.provider)
    found = with_access(token, audit.Operation.LIST_CALENDARS, reason, provider.list_calendars)
    account = next((c.owner for c in found if c.primary and c.owner), "")[:320]
    if account and not token.account and token.owner_kind == MEMBER:
        CalendarToken.objects.filter(pk=token.pk, account="").update(account=account)
        token.account = account
    return found


def pause_writes(token, error):
    """The provider's usage limit for this account: writes to the connection wait USAGE_LIMIT_PAUSE
    seconds (in the database, so every worker sees it). Only the transition into a pause (none, or
    the last one over) emails the owner; a limit met again during the pause changes nothing."""
    now = timezone.now()
    until = now + timedelta(seconds=get_setting("USAGE_LIMIT_PAUSE"))
    changed = (
        CalendarToken.objects.filter(pk=token.pk)
        .filter(Q(paused_until__isnull=True) | Q(paused_until__lte=now))
        .update(paused_until=until, last_error=pause_note(until), updated_at=now)
    )
    if changed:
        token.paused_until, token.last_error = until, pause_note(until)
        logger.warning(
            "calendar usage limit: writes to owner=%s:%s paused until %s (%s)",
            token.owner_kind,
            token.owner_id,
            until.isoformat(),
            getattr(error, "code", ""),
        )
        _notify(notify_paused, token.pk)
    else:
        token.paused_until = CalendarToken.objects.filter(pk=token.pk).values_list("paused_until", flat=True).first()
    return token.paused_until


def resume_writes(token):
    """A write went through after a pause that is over: forget the pause and its note."""
    CalendarToken.objects.filter(pk=token.pk, paused_until__lte=timezone.now()).update(
        paused_until=None, last_error="", updated_at=timezone.now()
    )
    token.paused_until = None


def pause_note(until):
    """What status and the admin say about a pause."""
    return (
        f"The calendar's usage limit was reached: writes paused until {until.isoformat(timespec='seconds')}; "
        "bookings wait and nothing is lost."
    )


def _audience(token):
    """(recipients, link, what) for an email about this connection: the member, or whoever connected
    the shared calendar (else the ADMINS)."""
    owner = Owner(token.owner_kind, token.owner_id)
    if owner.kind == MEMBER:
        recipients = [token.user.email] if token.user and token.user.email else []
        return recipients, get_setting("FRONTEND_URL"), "your calendar"
    by = token.connected_by
    recipients = [by.email] if by and by.email else [email for _, email in settings.ADMINS]
    return (
        recipients,
        get_setting("SHARED_FRONTEND_URL") or get_setting("FRONTEND_URL"),
        f"the calendar of {label(owner)}",
    )


def _for_mail(token_pk):
    return (
        CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS)
        .select_related("user", "connected_by")
        .filter(pk=token_pk)
        .first()
    )


def notify_needs_reauth(token_pk):
    """The one email for a connection that just became needs_reauth, with a reconnect link."""
    token = _for_mail(token_pk)
    if token is None or token.is_active:
        return 0
    recipients, link, what = _audience(token)
    if not recipients:
        logger.warning(
            "calendar connection %s:%s needs reauthorization and nobody can be told", token.owner_kind, token.owner_id
        )
        return 0
    body = (
        f"The connection to {what} stopped working: the calendar provider no longer accepts it.\n"
        f"Bookings wait until it is reconnected; nothing is lost.\n\nReconnect here: {link}\n"
    )
    return send_mail("Reconnect your calendar to keep bookings in sync", body, None, recipients, fail_silently=False)


def notify_paused(token_pk):
    """The one email for a connection whose writes just paused: when they resume, and that nothing is lost."""
    token = _for_mail(token_pk)
    if token is None or not token.writes_paused:
        return 0
    recipients, link, what = _audience(token)
    if not recipients:
        logger.warning("calendar writes to %s:%s paused and nobody can be told", token.owner_kind, token.owner_id)
        return 0
    resume = token.paused_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"The calendar provider says {what} reached its usage limit for new events, so bookings are not "
        f"written to it for now.\nWrites resume at {resume}; bookings made meanwhile wait and are "
        f"added then: nothing is lost. There is nothing you need to do.\n\n{link}\n"
    )
    return send_mail(f"Calendar writes paused until {resume}", body, None, recipients, fail_silently=False)


def revoke(token):
    """Revoke at the provider (best effort) and delete the connection. Returns (revoked, reason)."""
    reason = ""
    provider = get_provider(token.provider)
    try:
        if provider.revocable:
            provider.revoke(token.refresh_token or token.access_token)
        else:
            reason = "not_supported"  # the member removes the app's access in their account
    except AuthorizationLost:
        reason = "already_invalid"
    except TransientError:
        reason = "provider_unreachable"
    except PermanentError:  # an answer other than "already invalid": the grant may still be live
        reason = "revoke_failed"
    except ConfigurationError:
        reason = "undecryptable"
    if provider.revocable:
        audit.log(
            token,
            audit.Operation.REVOKE,
            AccessLog.Reason.MEMBER_REQUEST,
            CalendarSyncError(code=reason) if reason else None,
        )
    CalendarToken.objects.filter(pk=token.pk).delete()
    logger.info("calendar disconnected: owner=%s:%s revoked=%s", token.owner_kind, token.owner_id, not reason)
    return not reason, reason
