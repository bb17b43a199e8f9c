"""The periodic work the app needs, as one Celery beat schedule the host uses as is.

Importable from settings (it imports nothing of the app's models)::

    from calendar_sync.beat import beat_schedule
    CELERY_BEAT_SCHEDULE = {**beat_schedule(), ...your own entries}

Hosts in `CALENDAR_SYNC["SYNC_MODE"] = "inline"` without beat run the same tasks from cron
(`manage.py calendar_sync_sweep`, `calendar_sync_pull`, `calendar_sync_health`).
"""

from datetime import timedelta


def beat_schedule(
    sweep: float = 60, pull: float = 300, renew_push: float = 3600, health: float = 6 * 3600
) -> dict[str, dict]:
    """{entry name: {"task", "schedule"}} for every periodic task; intervals in seconds.

    - sweep: re-enqueue work left pending (broker down at commit, retries due), prune old rows;
    - pull: read shared calendars for events made there (only does work with SHARED_OWNERS);
    - renew_push: renew push channels before they expire (Google's last a week; only with PUSH_URL);
    - health: refresh idle connections so a dead grant is found before a booking needs it.
    """

    def entry(task, seconds):
        return {"task": f"calendar_sync.tasks.{task}", "schedule": timedelta(seconds=seconds)}

    return {
        "calendar-sync-sweep": entry("sweep", sweep),
        "calendar-sync-pull": entry("pull_all", pull),
        "calendar-sync-renew-push": entry("renew_push", renew_push),
        "calendar-sync-health": entry("health", health),
    }
