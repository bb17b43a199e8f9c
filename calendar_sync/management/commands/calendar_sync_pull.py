"""Read watched calendars now: shared ones for bookings made outside the app, members' write calendars
for what they changed in our events. Every connected one, or --owner KIND:ID, or --user NAME."""

from django.core.management.base import BaseCommand, CommandError

from calendar_sync import reads
from calendar_sync.exceptions import CalendarSyncError
from calendar_sync.management.commands.calendar_sync_resync import member_or_owner


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--owner", help="one shared calendar's owner, e.g. workspace:3")
        who.add_argument("--user", help="username of a member: their write calendar")

    def handle(self, *args, owner=None, user=None, **options):
        one = owner or user
        owners = [member_or_owner(user, owner)] if one else [*reads.shared_owners(), *reads.member_owners()]
        failed = 0
        for o in owners:
            try:
                result = reads.pull(o)
            except CalendarSyncError as exc:
                failed += 1
                self.stderr.write(f"{o}: {exc.code}: {exc}")
                continue
            kind = "full read" if result["full"] else "changes"
            if o.is_member:
                self.stdout.write(f"{o}: {kind}, {result.get('reported', 0)} change(s) to our events reported")
            else:
                self.stdout.write(
                    f"{o}: {kind}, {result['blocks']} busy block(s) added or changed, {result['removed']} removed"
                )
        if failed and one:
            raise CommandError(f"Pull of {one} failed.")
        self.stdout.write(self.style.SUCCESS(f"Pulled {len(owners) - failed} calendar(s)."))
