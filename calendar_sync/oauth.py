"""The connection lifecycle: authorization with a signed single-use state and server-side
PKCE verifier, code exchange, locked proactive refresh, revoke."""
import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import timedelta

from django.core import signing
from django.db import transaction
from django.utils import timezone

from . import audit
from .conf import get_setting
from .exceptions import AuthorizationLost, CalendarSyncError, ConfigurationError, PermanentError, TransientError
from .models import AccessLog, CalendarToken, OAuthState
from .owners import Owner
from .providers import get_provider

logger = logging.getLogger(__name__)
STATE_SALT = "calendar_sync.oauth.state"


class ConnectError(CalendarSyncError):
    """A failed callback; `code` is the reason given to the frontend, `owner` whose connection it was (if known),
    `consumed` whether the flow was used up (its cookie is then of no more use)."""

    owner = None
    consumed = False


class Unbound(ConnectError):
    """The callback came without the flow cookie: nothing was consumed; only the member's own
    credentials (POST .../complete) can finish this flow now."""


def code_challenge(verifier):
    """PKCE S256 (RFC 7636): base64url(sha256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def browser_hash(value):
    """What is stored of a flow cookie: its sha256, so the database never holds the cookie itself."""
    return hashlib.sha256(value.encode()).hexdigest() if value else ""


def start_authorization(user, provider_name, owner=None, browser=""):
    """Return the provider's consent URL for `user` to connect `owner`'s calendar (their own by default).

    The state is bound to the user and usable once; whose connection it makes stays server-side,
    and so does the hash of `browser`, the flow cookie of the browser that asked.
    """
    provider = get_provider(provider_name)
    provider.ready_to_connect()
    owner = owner or Owner.member(user)
    verifier = secrets.token_urlsafe(72)[:96]
    with transaction.atomic():
        pending = OAuthState.objects.create(
            user=user, provider=provider_name, code_verifier=verifier, browser_hash=browser_hash(browser), **owner.lookup()
        )
        state = signing.dumps({"n": str(pending.pk), "u": str(user.pk)}, salt=STATE_SALT)
        # Built inside the transaction: a refused endpoint leaves no pending state behind.
        return provider.authorization_url(state=state, code_challenge=code_challenge(verifier))


def flow_id(state):
    """The pending flow a state names (its signed nonce), or None when we did not sign it. No expiry check."""
    try:
        data = signing.loads(state or "", salt=STATE_SALT)
        return str(uuid.UUID(str(data["n"])))
    except (signing.BadSignature, TypeError, KeyError, ValueError, AttributeError):
        return None


def _read_state(state):
    """(nonce, user id) of a state we signed and that has not expired; ConnectError otherwise."""
    if not state:
        raise ConnectError("The callback carried no state.", code="missing_state")
    try:
        data = signing.loads(state, salt=STATE_SALT, max_age=get_setting("STATE_MAX_AGE"))
    except signing.SignatureExpired:
        raise ConnectError("The authorization took too long; start again.", code="expired_state") from None
    except signing.BadSignature:
        raise ConnectError("The state is not one we issued.", code="invalid_state") from None
    try:  # signed by us, but never trust its shape
        return uuid.UUID(str(data["n"])), str(data["u"])
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ConnectError("The state is not one we issued.", code="invalid_state") from None


def provider_refusal(params, owner=None):
    """The ConnectError for a callback carrying the provider's `error` (consent not given)."""
    error = ConnectError("Consent was not given.", code="access_denied" if params.get("error") == "access_denied" else "provider_error")
    error.owner = owner
    return error


def complete_authorization(params, request_user, provider_name, browser=None):
    """Finish a flow: returns the saved CalendarToken, or raises ConnectError.

    Whoever finishes must prove the flow is theirs, or a consent link sent to someone else links
    their calendar to the sender (account-linking CSRF). From the callback, `browser` is the flow
    cookie and must match the one set when the flow started: without it nothing is consumed
    (`Unbound`); with another one, `browser_mismatch`. With `browser=None` (POST .../complete)
    the proof is `request_user`, who must be the member who started it. The state is consumed
    before anything else so a replay cannot race; nothing is stored unless every check passes,
    and an existing connection is only replaced by a good one.
    """
    nonce, user_id = _read_state(params.get("state"))
    signed_in = request_user is not None and request_user.is_authenticated
    if (signed_in and str(request_user.pk) != user_id) or (browser is None and not signed_in):
        raise ConnectError("This authorization was started by another user.", code="state_user_mismatch")
    with transaction.atomic():
        pending = OAuthState.objects.select_for_update().filter(pk=nonce, provider=provider_name).select_related("user").first()
        if pending is None or str(pending.user_id) != user_id:
            raise ConnectError("This authorization was already used or has expired.", code="replayed_state")
        owner = Owner(pending.owner_kind, pending.owner_id or str(pending.user_id))
        if browser is not None and not (pending.browser_hash and hmac.compare_digest(pending.browser_hash, browser_hash(browser))):
            error = (
                Unbound("This browser did not start the authorization.", code="unbound")
                if not browser
                else ConnectError("This browser did not start the authorization.", code="browser_mismatch")
            )
            error.owner = owner
            raise error
        verifier, user = pending.code_verifier, pending.user
        pending.delete()
    try:
        if params.get("error"):
            raise provider_refusal(params)
        if not getattr(user, "is_active", True):  # deactivated since the flow started
            raise ConnectError("This account is no longer active.", code="account_inactive")
        return _connect(provider_name, params, user, verifier, owner)
    except ConnectError as exc:
        exc.owner, exc.consumed = owner, True
        raise


def _connect(provider_name, params, user, verifier, owner):
    """Exchange the code and store the connection; ConnectError says why not."""
    if not owner.is_member and not user.is_staff:  # staff when they started, but no longer
        raise ConnectError("Only staff connect shared calendars.", code="forbidden")
    if not params.get("code"):
        raise ConnectError("The callback carried no authorization code.", code="missing_code")
    provider = get_provider(provider_name)
    try:
        tokens = provider.exchange_code(code=params["code"], code_verifier=verifier)
    except ConfigurationError:
        raise
    except TransientError as exc:
        raise ConnectError(str(exc), code="provider_unreachable") from None
    except CalendarSyncError as exc:
        raise ConnectError(str(exc), code="exchange_failed") from None
    missing = provider.missing_scopes(tokens.scopes)
    if missing:
        raise ConnectError(f"Missing permissions: {', '.join(sorted(missing))}", code="missing_scopes")
    if not tokens.refresh_token:
        raise ConnectError(f"{provider.label} granted no offline access (no refresh token).", code="missing_refresh_token")
    existing = CalendarToken.objects.filter(**owner.lookup()).first()
    if existing is not None and existing.push_channel:
        from .push import stop_watch  # late: push uses this module

        stop_watch(existing)  # a reconnect or a switch: the old channel belongs to the old grant
    previous = existing if existing is not None and existing.provider != provider_name else None
    if previous is not None:
        # Switching provider: take our events out of the old calendar first, as a calendar change does.
        from .sync import remove_events  # late: sync uses this module

        remove_events(previous, previous.calendar_id)
    token, _ = CalendarToken.objects.update_or_create(
        **owner.lookup(),
        defaults={
            "user": user if owner.is_member else None,
            "connected_by": user,
            "provider": provider_name,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at,
            "scopes": sorted(tokens.scopes),
            "status": CalendarToken.Status.ACTIVE,
            "last_error": "",
            **({"calendar_id": "primary"} if previous is not None else {}),
        },
    )
    logger.info("calendar connected: owner=%s by user=%s provider=%s", owner, user.pk, provider_name)
    return token


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
        logger.warning("calendar connection needs reauthorization: owner=%s:%s (%s)", token.owner_kind, token.owner_id, getattr(error, "code", ""))
    return bool(changed)


def _notify_reauth(token):
    from .awareness import notify_needs_reauth  # late: awareness uses this module

    _notify(notify_needs_reauth, token.pk)  # at once: callers are outside transactions, and tests see it


def _notify(send, token_pk):
    try:
        send(token_pk)
    except Exception as exc:  # noqa: BLE001 - a mail server problem must not break a sync
        logger.warning("reconnect email not sent for connection %s: %s", token_pk, type(exc).__name__)


def access_token(token, force=False, reason=AccessLog.Reason.MEMBER_REQUEST):
    """A usable access token for `token`, refreshed first when it expires within REFRESH_MARGIN.

    The refresh happens under a row lock and re-checks after acquiring it, so concurrent
    workers refresh once and the rest reuse the saved result. `force` refreshes even a
    token that looks fresh (after a 401), unless another worker already replaced it.
    """
    margin = timedelta(seconds=get_setting("REFRESH_MARGIN"))
    if not force and token.expires_at and token.expires_at > timezone.now() + margin:
        return token.access_token
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
            token.access_token, token.refresh_token, token.expires_at = locked.access_token, locked.refresh_token, locked.expires_at
    audit.log(token, audit.Operation.REFRESH, reason, error)
    if error is None:
        logger.info("calendar token refreshed: owner=%s:%s", token.owner_kind, token.owner_id)
        return token.access_token
    if lost_now:
        _notify_reauth(token)
    raise error


def with_access(token, operation, reason, call):
    """`call(access_token)` with a fresh access token and one forced refresh on a 401; a lost grant
    marks the connection needs_reauth. Leaves one access-log row. Every read or watch goes through here."""
    error = None
    try:
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
    """The owner's writable calendars."""
    provider = get_provider(token.provider)
    return with_access(token, audit.Operation.LIST_CALENDARS, reason, provider.list_calendars)


def disconnect(token):
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
        audit.log(token, audit.Operation.REVOKE, AccessLog.Reason.MEMBER_REQUEST, CalendarSyncError(code=reason) if reason else None)
    CalendarToken.objects.filter(pk=token.pk).delete()
    logger.info("calendar disconnected: owner=%s:%s revoked=%s", token.owner_kind, token.owner_id, not reason)
    return not reason, reason
