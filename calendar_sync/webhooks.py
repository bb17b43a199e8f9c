"""The push endpoint: where Google and Microsoft Graph say a watched calendar changed.

Each provider reads its own notifications (`parse_notification`); here they are verified
against the stored channels (`channels.secret_ok`) and answered by enqueueing the same
incremental pull the schedule runs (`tasks.pull_task`).
"""

import logging
import math

from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import tasks
from .channels import secret_ok
from .conf import get_setting
from .exceptions import CalendarSyncError
from .models import MEMBER, AccessLog, CalendarToken
from .providers import PROVIDERS, get_provider

logger = logging.getLogger(__name__)

MAX_CHANNEL_ID = 255  # CalendarToken.push_channel's length: a longer id cannot be ours
MAX_CHANNELS = 100  # distinct channels (Graph subscriptions) looked up per notification request
LOOKUP_FIELDS = ("id", "owner_kind", "owner_id", "provider", "status", "write", "push_channel", "push_resource")


def _json(status, body=None):
    return JsonResponse(body if body is not None else {}, status=status)


def _lookup(provider_name, channel_ids):
    """{push_channel: CalendarToken} of watched connections (shared ones, members' write ones) with these
    channel ids (no secrets loaded)."""
    ids = {c for c in channel_ids if isinstance(c, str) and 0 < len(c) <= MAX_CHANNEL_ID}
    if not ids:
        return {}
    tokens = CalendarToken.objects.only(*LOOKUP_FIELDS).filter(
        ~Q(owner_kind=MEMBER) | Q(write=True), provider=provider_name, push_channel__in=ids
    )
    return {t.push_channel: t for t in tokens}


def _pull(tokens):
    """Enqueue one pull per connection; a broker outage is logged (the scheduled pull catches up).

    A connection pulled for a notification less than PUSH_COALESCE_SECONDS ago is not pulled
    again: that pull, pending or just done, covers the next notification too, so replayed or
    bursting notifications cost one pull. The mark is a `cache.add` (atomic in locmem and Redis)."""
    window = get_setting("PUSH_COALESCE_SECONDS")
    for token in tokens:
        if not token.is_active:
            continue
        if window > 0 and not cache.add(f"calendar_sync:push-pull:{token.pk}", True, timeout=math.ceil(window)):
            continue
        try:
            tasks.pull_task.delay(token.owner_kind, token.owner_id, AccessLog.Reason.PUSH.value)  # type: ignore[attr-defined]  # TextChoices member: a str at runtime (no django-stubs)
        except Exception as exc:  # noqa: BLE001 - any broker failure: the schedule covers it
            logger.warning(
                "pull after a push notification not enqueued for %s:%s (%s)",
                token.owner_kind,
                token.owner_id,
                type(exc).__name__,
            )


def _verified(provider_name, items):
    """{pk: CalendarToken} of the items naming a channel of ours with its secret (and resource, where
    the service sends one); refusals are logged."""
    wanted: list[str] = []
    for channel, _, _ in items:
        if channel not in wanted and len(wanted) < MAX_CHANNELS:
            wanted.append(channel)
    found = _lookup(provider_name, wanted)
    verified, refused = {}, 0
    for channel, secret, resource in items:
        token = found.get(channel)
        if token is not None and secret_ok(token, secret) and (resource is None or resource == token.push_resource):
            verified[token.pk] = token
        else:
            refused += 1
    if refused:
        logger.warning(
            "%s push notification: %s of %s items refused (unknown channel or wrong secret)",
            provider_name,
            refused,
            len(items),
        )
    return verified


@csrf_exempt
@require_POST
def webhook(request, provider):
    """POST /api/calendar-sync/push/<provider>: where Google and Microsoft Graph say a watched
    calendar changed. No session or login: the channel's secret is the credential."""
    if provider not in PROVIDERS or not get_provider(provider).supports_push:
        return _json(404, {"code": "not_found", "detail": "Unknown calendar provider."})
    try:
        notification = get_provider(provider).parse_notification(request.headers, request.GET, lambda: request.body)
    except RequestDataTooBig:
        return _json(413, {"code": "too_large", "detail": "Request body too large."})
    except CalendarSyncError as exc:
        return _json(exc.status or 400, {"code": exc.code, "detail": str(exc)})
    if notification.echo is not None:  # a handshake: the text back, as text
        response = HttpResponse(notification.echo, content_type="text/plain; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
        return response
    if notification.ping:
        return _json(notification.status)
    verified = _verified(provider, notification.items)
    if not verified:
        return _json(403, {"code": "forbidden", "detail": "Unknown channel or wrong channel secret."})
    _pull(verified.values())
    return _json(notification.status)
