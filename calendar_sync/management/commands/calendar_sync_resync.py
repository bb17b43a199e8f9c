"""Re-sync calendars: one member, one shared owner, or every connection; --failed retries only failed syncs.

Without --failed an owner's upcoming objects and all their unsynced work are pushed again
(the same backfill that runs on connect).
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from calendar_sync import flows, tasks
from calendar_sync.exceptions import NotConnected
from calendar_sync.models import CalendarToken
from calendar_sync.owners import Owner, parse


def parse_owner(value):
    try:
        return parse(value)
    except ValueError as exc:
        raise CommandError(f"--owner: {exc}.") from None


def member_or_owner(user=None, owner=None):
    """The Owner named by --user USERNAME (a member) or --owner KIND:ID (a shared calendar)."""
    if owner:
        return parse_owner(owner)
    User = get_user_model()
    try:
        return Owner.member(User.objects.get(**{User.USERNAME_FIELD: user}))
    except User.DoesNotExist:
        raise CommandError(f"No user {user!r}.") from None


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username of the member to resync")
        who.add_argument("--owner", help="a shared calendar's owner, e.g. workspace:3")
        who.add_argument("--all", action="store_true", help="every connection")
        parser.add_argument("--failed", action="store_true", help="only syncs that failed")

    def handle(self, *args, user=None, owner=None, failed=False, **options):
        if user or owner:
            owners = [member_or_owner(user, owner)]
        else:
            owners = [
                Owner(kind, pk)
                for kind, pk in CalendarToken.objects.filter(write=True).values_list("owner_kind", "owner_id")
            ]
        work = []
        for o in owners:
            try:
                work += flows.resync(o, failed_only=failed)
            except NotConnected:
                raise CommandError(f"{o} has no calendar connected.") from None
        tasks.schedule(work)
        if failed:
            self.stdout.write(self.style.SUCCESS(f"Queued {len(work)} failed sync(s)."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Queued a full resync for {len(owners)} connection(s)."))
