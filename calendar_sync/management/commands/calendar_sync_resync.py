"""Re-sync calendars: one member, one shared owner, or every connection; --failed retries only failed syncs.

Without --failed an owner's upcoming objects and all their unsynced work are pushed again
(the same backfill that runs on connect). With --wait the work runs in this process, not on the
workers, and its progress is printed as it goes.
"""

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from calendar_sync import flows, progress, tasks
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


def run_here(command, work, every=1.0):
    """Run a flow's work in this process, printing each job's progress at most every `every` seconds
    (and when it ends)."""
    last = {"at": 0.0}

    def line(job):
        now = time.monotonic()
        if job.total and (job.done == job.total or now - last["at"] >= every):
            last["at"] = now
            command.stdout.write(f"{job.kind}: {job.done} of {job.total} ({job.done * 100 // job.total}%)")

    with progress.reported(line):
        tasks.run_here(work)


WAIT_HELP = "run the work in this process (not on the workers) and print its progress as it goes"


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username of the member to resync")
        who.add_argument("--owner", help="a shared calendar's owner, e.g. workspace:3")
        who.add_argument("--all", action="store_true", help="every connection")
        parser.add_argument("--failed", action="store_true", help="only syncs that failed")
        parser.add_argument("--wait", action="store_true", help=WAIT_HELP)

    def handle(self, *args, user=None, owner=None, failed=False, wait=False, **options):
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
        if wait:
            run_here(self, work)
            self.stdout.write(self.style.SUCCESS(f"Done: {len(owners)} connection(s) resynced."))
            return
        tasks.schedule(work)
        if failed:
            self.stdout.write(self.style.SUCCESS(f"Queued {len(work)} failed sync(s)."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Queued a full resync for {len(owners)} connection(s)."))
