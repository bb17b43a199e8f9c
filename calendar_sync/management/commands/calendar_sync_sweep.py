"""Re-enqueue sync work left pending (broker down at commit, retries now due) and prune old rows.

Beat runs the same task every minute; hosts with CALENDAR_SYNC["SYNC_MODE"] = "inline" and no beat
run this from cron instead (the syncs then run in this process).
"""

from django.core.management.base import BaseCommand

from calendar_sync import tasks


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        self.stdout.write(f"Re-enqueued {tasks.sweep()} sync(s).")
