"""Re-encrypt every stored token with the current key (SECRET_KEY + first SALT_KEY).

Run after moving the old key into SECRET_KEY_FALLBACKS (or adding a new first salt).
"""
from django.core.management.base import BaseCommand
from django.db import transaction

from calendar_sync.models import CalendarToken, OAuthState


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        count = 0
        for model, fields in ((CalendarToken, list(CalendarToken.SECRET_FIELDS)), (OAuthState, ["code_verifier"])):
            for pk in model.objects.values_list("pk", flat=True):
                with transaction.atomic():
                    row = model.objects.select_for_update().get(pk=pk)  # decrypts with any configured key
                    row.save(update_fields=fields)  # encrypts with the current one
                count += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} row(s)."))
