"""Re-sync calendars: one member or every connected member; --failed retries only failed syncs.

Without --failed a member's upcoming objects and all their unsynced work are pushed again
(the same backfill that runs on connect).
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from calendar_sync import tasks
from calendar_sync.models import CalendarToken, SyncRecord


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username of the member to resync")
        who.add_argument("--all", action="store_true", help="every connected member")
        parser.add_argument("--failed", action="store_true", help="only syncs that failed")

    def handle(self, *args, user=None, failed=False, **options):
        if user:
            User = get_user_model()
            try:
                user_ids = [User.objects.get(**{User.USERNAME_FIELD: user}).pk]
            except User.DoesNotExist:
                raise CommandError(f"No user {user!r}.") from None
        else:
            user_ids = list(CalendarToken.objects.values_list("user_id", flat=True))
        if failed:
            count = tasks.resync(SyncRecord.objects.filter(user_id__in=user_ids, state=SyncRecord.State.FAILED))
            self.stdout.write(self.style.SUCCESS(f"Queued {count} failed sync(s)."))
            return
        for user_id in user_ids:
            tasks.backfill_task.delay(user_id)
        self.stdout.write(self.style.SUCCESS(f"Queued a full resync for {len(user_ids)} member(s)."))
