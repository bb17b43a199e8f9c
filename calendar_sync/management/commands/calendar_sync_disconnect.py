"""Disconnect a calendar: stop its push channel, revoke the grant, delete the connection, forget
its busy blocks and mark its unfinished syncs not connected (what the API's disconnect does)."""

from django.core.management.base import BaseCommand, CommandError

from calendar_sync import flows
from calendar_sync.exceptions import NotConnected
from calendar_sync.management.commands.calendar_sync_resync import member_or_owner
from calendar_sync.models import AccessLog


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username of the member whose calendar to disconnect")
        who.add_argument("--owner", help="a shared calendar's owner, e.g. workspace:3")

    def handle(self, *args, user=None, owner=None, **options):
        who = member_or_owner(user, owner)
        try:
            result = flows.disconnect(who, AccessLog.Reason.STAFF_REQUEST)  # type: ignore[arg-type]  # TextChoices member: a str at runtime (no django-stubs)
        except NotConnected:
            raise CommandError(f"{who} has no calendar connected.") from None
        if result.revoked:
            self.stdout.write(self.style.SUCCESS(f"{who}: disconnected and revoked."))
        else:
            self.stdout.write(self.style.WARNING(f"{who}: disconnected, not revoked ({result.reason})."))
