"""Send a connection's events to another of its writable calendars (what the API's calendar
choice does): the old calendar's events are moved, its push channel replaced, its busy blocks forgotten.
With --wait the move runs in this process, not on the workers, and its progress is printed as it goes."""

from django.core.management.base import BaseCommand, CommandError

from calendar_sync import flows, tasks
from calendar_sync.exceptions import CalendarSyncError
from calendar_sync.management.commands.calendar_sync_resync import WAIT_HELP, member_or_owner, run_here
from calendar_sync.models import AccessLog


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username of the member whose calendar to change")
        who.add_argument("--owner", help="a shared calendar's owner, e.g. workspace:3")
        parser.add_argument("--wait", action="store_true", help=WAIT_HELP)
        parser.add_argument(
            "calendar_id", help='the calendar to use from now on ("primary" or an id the provider lists)'
        )

    def handle(self, *args, calendar_id, user=None, owner=None, wait=False, **options):
        who = member_or_owner(user, owner)
        try:
            work = flows.change_calendar(who, calendar_id, AccessLog.Reason.STAFF_REQUEST)  # type: ignore[arg-type]  # TextChoices member: a str at runtime (no django-stubs)
        except flows.UnknownCalendar:
            raise CommandError(f"{calendar_id!r} is not one of the writable calendars of {who}.") from None
        except CalendarSyncError as exc:
            raise CommandError(f"{who}: {exc.code}: {exc}") from None
        if wait and work:
            run_here(self, work)
            self.stdout.write(self.style.SUCCESS(f"{who}: events moved to {calendar_id}."))
            return
        tasks.schedule(work)
        if work:
            self.stdout.write(self.style.SUCCESS(f"{who}: events go to {calendar_id} now; moving the existing ones."))
        else:
            self.stdout.write(f"{who}: already uses {calendar_id}.")
