"""The health check: refresh connections nobody used lately, so a dead grant is found before a
booking needs it (and its owner is told once, by `tokens`), and Google refresh tokens stay alive."""

import logging
from datetime import timedelta

from django.db.models import CharField, Exists, OuterRef, Value
from django.db.models.functions import Concat
from django.utils import timezone

from . import tokens
from .conf import get_setting
from .exceptions import AuthorizationLost, CalendarSyncError
from .models import AccessLog, CalendarToken

logger = logging.getLogger(__name__)


def idle(since):
    """Active connections neither saved (a refresh saves) nor used (an access-log row) since `since`,
    connected before it. Found off indexes (status, updated_at) and (owner, created_at): a run with
    nothing idle reads no table, however many connections there are."""
    used = (
        AccessLog.objects.filter(  # by owner and provider: a member's Outlook used lately says nothing of their Google
            owner=Concat(OuterRef("owner_kind"), Value(":"), OuterRef("owner_id"), output_field=CharField()),
            provider=OuterRef("provider"),
            created_at__gte=since,
        )
    )
    return CalendarToken.objects.filter(
        status=CalendarToken.Status.ACTIVE, updated_at__lt=since, created_at__lt=since
    ).exclude(Exists(used))


def check(include_recent=False):
    """Refresh connections not used for HEALTH_IDLE_SECONDS (or all): finds dead grants early and
    keeps Google refresh tokens from expiring unused. Returns {"checked", "needs_reauth", "unavailable"}."""
    if include_recent:
        due = CalendarToken.objects.filter(status=CalendarToken.Status.ACTIVE)
    else:
        due = idle(timezone.now() - timedelta(seconds=get_setting("HEALTH_IDLE_SECONDS")))
    counts = {"checked": 0, "needs_reauth": 0, "unavailable": 0}
    for token in due.iterator(chunk_size=100):
        counts["checked"] += 1
        try:
            tokens.access_token(token, force=True, reason=AccessLog.Reason.HEALTH)
        except AuthorizationLost:
            counts["needs_reauth"] += 1
        except CalendarSyncError as exc:
            counts["unavailable"] += 1
            logger.warning("calendar health check of %s:%s: %s", token.owner_kind, token.owner_id, exc.code)
    return counts
