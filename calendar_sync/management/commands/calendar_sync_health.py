"""Check calendar connections: refresh those not used for a while (--all: every one).

A grant that is gone becomes needs_reauth and its owner gets one email with a reconnect link.
"""

from django.core.management.base import BaseCommand

from calendar_sync import health


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="every connection, however recently used")

    def handle(self, *args, all=False, **options):
        counts = health.check(include_recent=all)
        self.stdout.write(
            f"Checked {counts['checked']} connection(s): {counts['needs_reauth']} need reauthorization, "
            f"{counts['unavailable']} could not be checked (provider unavailable)."
        )
