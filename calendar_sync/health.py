"""The health check: refresh connections nobody used lately, so a dead grant is found before a
booking needs it (and its owner is told once, by `tokens`), and Google refresh tokens stay alive."""

import logging
from datetime import timedelta

from django.utils import timezone

from . import tokens
from .conf import get_setting
from .exceptions import AuthorizationLost, CalendarSyncError
from .models import AccessLog, CalendarToken

logger = logging.getLogger(__name__)


def check(include_recent=False):
    """Refresh connections not used for HEALTH_IDLE_SECONDS (or all): finds dead grants early and
    keeps Google refresh tokens from expiring unused. Returns {"checked", "needs_reauth", "unavailable"}."""
    idle = CalendarToken.objects.filter(status=CalendarToken.Status.ACTIVE)
    if not include_recent:
        since = timezone.now() - timedelta(seconds=get_setting("HEALTH_IDLE_SECONDS"))
        # By owner and provider: a member's Outlook used lately says nothing of their Google.
        used = set(AccessLog.objects.filter(created_at__gte=since).values_list("owner", "provider").distinct())
        idle = [t for t in idle if (f"{t.owner_kind}:{t.owner_id}", t.provider) not in used and t.created_at < since]
    counts = {"checked": 0, "needs_reauth": 0, "unavailable": 0}
    for token in idle:
        counts["checked"] += 1
        try:
            tokens.access_token(token, force=True, reason=AccessLog.Reason.HEALTH)
        except AuthorizationLost:
            counts["needs_reauth"] += 1
        except CalendarSyncError as exc:
            counts["unavailable"] += 1
            logger.warning("calendar health check of %s:%s: %s", token.owner_kind, token.owner_id, exc.code)
    return counts
