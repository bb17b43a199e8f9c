"""The access log: one row per use of a stored token, written with at most one insert per operation."""

from django.utils import timezone

from .conf import get_setting
from .models import AccessLog

Operation = AccessLog.Operation


def _outcome(error):
    return "ok" if error is None else str(getattr(error, "code", "") or type(error).__name__)[:64]


def entry(token, operation, reason, error=None, object_ref="", count=1):
    """The (unsaved) row for one use of `token` (a CalendarToken). `error` is the classified error, if any."""
    return AccessLog(
        user_id=token.user_id,
        owner=f"{token.owner_kind}:{token.owner_id}",
        provider=token.provider,
        operation=operation,
        reason=reason,
        outcome=_outcome(error),
        object_ref=object_ref[:140],
        count=count,
    )


def entry_for(token, operations, outcomes, reason):
    """One row for a single event write; one row for a batch (its first error as the outcome)."""
    if len(operations) == 1:
        op, outcome = operations[0], outcomes[0]
        kind = (
            Operation.DELETE_EVENT
            if op.is_delete
            else Operation.UPDATE_EVENT
            if op.known_to_exist
            else Operation.CREATE_EVENT
        )
        return entry(token, kind, reason, outcome.error, op.object_ref)
    errors = [o.error for o in outcomes if o.error is not None]
    return entry(token, Operation.BATCH, reason, errors[0] if errors else None, count=len(operations))


def log(token, operation, reason, error=None, object_ref="", count=1):
    """Record one use of `token`."""
    entry(token, operation, reason, error, object_ref, count).save(force_insert=True)


def log_operations(token, operations, outcomes, reason):
    entry_for(token, operations, outcomes, reason).save(force_insert=True)


def prune():
    """Delete the oldest rows past ACCESS_LOG_RETENTION_DAYS, at most ACCESS_LOG_PRUNE_BATCH of them
    (one short delete per sweep, whatever the backlog); returns how many."""
    cutoff = timezone.now() - timezone.timedelta(days=get_setting("ACCESS_LOG_RETENTION_DAYS"))
    old = AccessLog.objects.filter(created_at__lt=cutoff).order_by("created_at")
    pks = list(old.values_list("pk", flat=True)[: get_setting("ACCESS_LOG_PRUNE_BATCH")])
    return AccessLog.objects.filter(pk__in=pks).delete()[0] if pks else 0
