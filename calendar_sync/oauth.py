"""Connecting: authorization with a signed single-use state and server-side PKCE verifier, and the
code exchange that stores the connection. Access tokens, refresh and revoke are `tokens`."""

import base64
import hashlib
import hmac
import logging
import secrets
import uuid

from django.core import signing
from django.db import transaction

from . import flows
from .conf import get_setting
from .exceptions import CalendarSyncError, ConfigurationError, TransientError
from .models import OAuthState
from .owners import Owner
from .providers import get_provider

logger = logging.getLogger(__name__)
STATE_SALT = "calendar_sync.oauth.state"


class ConnectError(CalendarSyncError):
    """A failed callback; `code` is the reason given to the frontend, `owner` whose connection it was (if known),
    `consumed` whether the flow was used up (its cookie is then of no more use)."""

    owner: Owner | None = None
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


def start_authorization(user, provider_name, owner=None, browser="", add=False):
    """Return the provider's consent URL for `user` to connect `owner`'s calendar (their own by default).

    The state is bound to the user and usable once; whose connection it makes stays server-side,
    and so does the hash of `browser`, the flow cookie of the browser that asked, and `add`: an
    additional connection of a member rather than a replacement of their write connection.
    """
    provider = get_provider(provider_name)
    provider.ready_to_connect()
    owner = owner or Owner.member(user)
    verifier = secrets.token_urlsafe(72)[:96]
    with transaction.atomic():
        pending = OAuthState.objects.create(
            user=user,
            provider=provider_name,
            code_verifier=verifier,
            browser_hash=browser_hash(browser),
            add=bool(add) and owner.is_member,
            **owner.lookup(),
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
    error = ConnectError(
        "Consent was not given.", code="access_denied" if params.get("error") == "access_denied" else "provider_error"
    )
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
        pending = (
            OAuthState.objects.select_for_update()
            .filter(pk=nonce, provider=provider_name)
            .select_related("user")
            .first()
        )
        if pending is None or str(pending.user_id) != user_id:
            raise ConnectError("This authorization was already used or has expired.", code="replayed_state")
        owner = Owner(pending.owner_kind, pending.owner_id or str(pending.user_id))
        if browser is not None and not (
            pending.browser_hash and hmac.compare_digest(pending.browser_hash, browser_hash(browser))
        ):
            error = (
                Unbound("This browser did not start the authorization.", code="unbound")
                if not browser
                else ConnectError("This browser did not start the authorization.", code="browser_mismatch")
            )
            error.owner = owner
            raise error
        verifier, user, add = pending.code_verifier, pending.user, pending.add
        pending.delete()
    try:
        if params.get("error"):
            raise provider_refusal(params)
        if not getattr(user, "is_active", True):  # deactivated since the flow started
            raise ConnectError("This account is no longer active.", code="account_inactive")
        return _connect(provider_name, params, user, verifier, owner, add)
    except ConnectError as exc:
        exc.owner, exc.consumed = owner, True
        raise


def _connect(provider_name, params, user, verifier, owner, add=False):
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
        raise ConnectError(
            f"{provider.label} granted no offline access (no refresh token).", code="missing_refresh_token"
        )
    token = flows.store(owner, user, provider_name, tokens, add=add)
    logger.info("calendar connected: owner=%s by user=%s provider=%s", owner, user.pk, provider_name)
    return token
