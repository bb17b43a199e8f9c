"""Read shared calendars for bookings made outside the app: every connected one, or --owner KIND:ID."""

from django.core.management.base import BaseCommand, CommandError

from calendar_sync import reads
from calendar_sync.exceptions import CalendarSyncError
from calendar_sync.management.commands.calendar_sync_resync import parse_owner


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--owner", help="one shared calendar's owner, e.g. workspace:3")

    def handle(self, *args, owner=None, **options):
        owners = [parse_owner(owner)] if owner else reads.shared_owners()
        failed = 0
        for o in owners:
            try:
                result = reads.pull(o)
            except CalendarSyncError as exc:
                failed += 1
                self.stderr.write(f"{o}: {exc.code}: {exc}")
                continue
            kind = "full read" if result["full"] else "changes"
            self.stdout.write(
                f"{o}: {kind}, {result['blocks']} busy block(s) added or changed, {result['removed']} removed"
            )
        if failed and owner:
            raise CommandError(f"Pull of {owner} failed.")
        self.stdout.write(self.style.SUCCESS(f"Pulled {len(owners) - failed} calendar(s)."))
