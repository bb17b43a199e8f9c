"""The connection lifecycle: authorization with a signed single-use state and server-side
PKCE verifier, code exchange, locked proactive refresh, revoke."""
import logging
import secrets
from datetime import timedelta

from django.core import signing
from django.db import transaction
from django.utils import timezone

from .conf import get_setting
from .exceptions import AuthorizationLost, CalendarSyncError, ConfigurationError, TransientError
from .models import CalendarToken, OAuthState, Provider
from .providers import get_provider

logger = logging.getLogger(__name__)
STATE_SALT = "calendar_sync.oauth.state"


class ConnectError(CalendarSyncError):
    """A failed callback; `code` is the reason given to the frontend."""


def start_authorization(user, provider_name=Provider.GOOGLE):
    """Return the provider's consent URL for `user`. The state is bound to them and usable once."""
    provider = get_provider(provider_name)
    if not get_setting("GOOGLE_CLIENT_ID") or not get_setting("GOOGLE_REDIRECT_URI"):
        raise ConfigurationError("Google OAuth is not configured (GOOGLE_CLIENT_ID, GOOGLE_REDIRECT_URI).", code="not_configured")
    verifier = secrets.token_urlsafe(72)[:96]
    pending = OAuthState.objects.create(user=user, provider=provider_name, code_verifier=verifier)
    state = signing.dumps({"n": str(pending.pk), "u": str(user.pk)}, salt=STATE_SALT)
    return provider.authorization_url(state=state, code_verifier=verifier)


def _consume_state(state, request_user, provider_name):
    if not state:
        raise ConnectError("The callback carried no state.", code="missing_state")
    try:
        data = signing.loads(state, salt=STATE_SALT, max_age=get_setting("STATE_MAX_AGE"))
    except signing.SignatureExpired:
        raise ConnectError("The authorization took too long; start again.", code="expired_state") from None
    except signing.BadSignature:
        raise ConnectError("The state is not one we issued.", code="invalid_state") from None
    if request_user is not None and request_user.is_authenticated and str(request_user.pk) != data["u"]:
        raise ConnectError("This authorization was started by another user.", code="state_user_mismatch")
    with transaction.atomic():
        pending = OAuthState.objects.select_for_update().filter(pk=data["n"], user_id=data["u"], provider=provider_name).first()
        if pending is None:
            raise ConnectError("This authorization was already used or has expired.", code="replayed_state")
        verifier, user = pending.code_verifier, pending.user
        pending.delete()
    return user, verifier


def complete_authorization(params, request_user=None, provider_name=Provider.GOOGLE):
    """Finish the callback: returns the saved CalendarToken, or raises ConnectError.

    The state is consumed before anything else so a replay cannot race; nothing is stored
    unless every check passes, and an existing connection is only replaced by a good one.
    """
    if params.get("error"):
        # Consume the state anyway so it can't be reused, but report the provider's refusal.
        try:
            _consume_state(params.get("state"), request_user, provider_name)
        except ConnectError:
            pass
        code = "access_denied" if params.get("error") == "access_denied" else "provider_error"
        raise ConnectError("Consent was not given.", code=code)
    user, verifier = _consume_state(params.get("state"), request_user, provider_name)
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
    missing = set(provider.required_scopes) - set(tokens.scopes)
    if missing:
        raise ConnectError(f"Missing permissions: {', '.join(sorted(missing))}", code="missing_scopes")
    if not tokens.refresh_token:
        raise ConnectError("Google granted no offline access (no refresh token).", code="missing_refresh_token")
    token, _ = CalendarToken.objects.update_or_create(
        user=user,
        defaults={
            "provider": provider_name,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at,
            "scopes": sorted(tokens.scopes),
            "status": CalendarToken.Status.ACTIVE,
            "last_error": "",
        },
    )
    logger.info("calendar connected: user=%s provider=%s", user.pk, provider_name)
    return token


def mark_needs_reauth(token, error):
    CalendarToken.objects.filter(pk=token.pk).update(
        status=CalendarToken.Status.NEEDS_REAUTH, last_error=str(error)[:1000], updated_at=timezone.now()
    )
    token.status, token.last_error = CalendarToken.Status.NEEDS_REAUTH, str(error)[:1000]
    logger.warning("calendar connection needs reauthorization: user=%s (%s)", token.user_id, getattr(error, "code", ""))


def access_token(token, force=False):
    """A usable access token for `token`, refreshed first when it expires within REFRESH_MARGIN.

    The refresh happens under a row lock and re-checks after acquiring it, so concurrent
    workers refresh once and the rest reuse the saved result. `force` refreshes even a
    token that looks fresh (after a 401), unless another worker already replaced it.
    """
    margin = timedelta(seconds=get_setting("REFRESH_MARGIN"))
    if not force and token.expires_at and token.expires_at > timezone.now() + margin:
        return token.access_token
    lost = None
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
        except AuthorizationLost as exc:
            lost = exc
        else:
            locked.access_token, locked.expires_at = new.access_token, new.expires_at
            locked.refresh_token = new.refresh_token or locked.refresh_token
            locked.last_error = ""
            locked.save(update_fields=["access_token", "refresh_token", "expires_at", "last_error", "updated_at"])
            token.access_token, token.refresh_token, token.expires_at = locked.access_token, locked.refresh_token, locked.expires_at
            logger.info("calendar token refreshed: user=%s", token.user_id)
            return token.access_token
    mark_needs_reauth(token, lost)
    raise lost


def calendars(token):
    """The member's writable calendars, with the same refresh-and-retry-once as syncing."""
    provider = get_provider(token.provider)
    try:
        return provider.list_calendars(access_token(token))
    except AuthorizationLost:
        try:
            return provider.list_calendars(access_token(token, force=True))
        except AuthorizationLost as exc:
            mark_needs_reauth(token, exc)
            raise


def disconnect(token):
    """Revoke at the provider (best effort) and delete the connection. Returns (revoked, reason)."""
    reason = ""
    try:
        get_provider(token.provider).revoke(token.refresh_token or token.access_token)
    except AuthorizationLost:
        reason = "already_invalid"
    except TransientError:
        reason = "provider_unreachable"
    except ConfigurationError:
        reason = "undecryptable"
    CalendarToken.objects.filter(pk=token.pk).delete()
    logger.info("calendar disconnected: user=%s revoked=%s", token.user_id, not reason)
    return not reason, reason
