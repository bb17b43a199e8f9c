"""Signing in, three ways (`POST /api/auth/token/`, `/accounts/login/`, `/admin/login/`), one rule.

A username is put in one normal form (`normalize_username`) before anything looks at it: the
authentication backend compares that form, and the sign-in throttles count attempts per that form
and per client address (LOGIN_THROTTLE_RATE each). So `" staffer"`, `"staffer\\t"` or a full-width
`"ｓｔａｆｆｅｒ"` are the same account to both, and none of them gets round the limit.
"""

import hashlib
import math
from functools import wraps

from django.contrib.auth import backends, get_user_model
from django.http import HttpResponse
from django.utils.html import format_html
from rest_framework.throttling import SimpleRateThrottle


def normalize_username(value):
    """The form authentication compares: surrounding whitespace stripped (what Django's sign-in
    forms and DRF's serializer do) and the user model's own normalisation (NFKC)."""
    if not isinstance(value, str):
        return value
    return get_user_model().normalize_username(value.strip())


class ModelBackend(backends.ModelBackend):
    """Django's backend, comparing the username in its normal form whichever entry point sent it."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        return super().authenticate(request, normalize_username(username), password, **kwargs)


def _submitted_username(request):
    """The username of a sign-in attempt: from DRF's parsed body, or a Django form's POST."""
    data = getattr(request, "data", None)
    if data is None:
        data = request.POST
    value = data.get("username", "") if hasattr(data, "get") else ""
    return normalize_username(value if isinstance(value, str) else str(value))


class LoginThrottle(SimpleRateThrottle):
    """Sign-in attempts per account name in its normal form (REST_FRAMEWORK rate "login"), from
    any address: a password guessed from many addresses is still limited. Case is folded too
    (some databases compare names without it), which only ever groups more attempts together."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self._key("account", _submitted_username(request).casefold())

    def _key(self, kind, value):
        # Hashed: client input, and a cache key must be short and plain (memcached refuses others).
        digest = hashlib.sha256(f"{kind}:{value}".encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}


class LoginAddressThrottle(LoginThrottle):
    """Sign-in attempts per client address, whatever names are tried (same rate)."""

    def get_cache_key(self, request, view):
        return self._key("address", self.get_ident(request))


#: Every sign-in entry point applies both.
SIGN_IN_THROTTLES = [LoginThrottle, LoginAddressThrottle]


def throttle_sign_in(view):
    """The sign-in throttles on a Django sign-in page: each POST counts, and over the rate the
    answer is a 429 page with Retry-After instead of the form's verdict."""

    @wraps(view)
    def throttled(request, *args, **kwargs):
        if request.method == "POST":
            throttles = [cls() for cls in SIGN_IN_THROTTLES]
            waits = [throttle.wait() for throttle in throttles if not throttle.allow_request(request, None)]
            if waits:
                return _too_many_attempts(max((w for w in waits if w is not None), default=1))
        return view(request, *args, **kwargs)

    return throttled


def _too_many_attempts(wait):
    seconds = max(1, math.ceil(wait))
    response = HttpResponse(
        format_html(
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>Too many sign-in attempts</title>'
            "<h1>Too many sign-in attempts</h1><p>Try again in {} seconds.</p></html>",
            seconds,
        ),
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
