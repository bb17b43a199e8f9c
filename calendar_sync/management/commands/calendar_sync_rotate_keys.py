"""Re-encrypt every stored secret with the current key (SECRET_KEY + first SALT_KEY).

Covers every SecretField of every calendar_sync model (calendar tokens, OAuth verifiers, iCal
feed secrets, and any added later). Run after moving the old key into SECRET_KEY_FALLBACKS
(or adding a new first salt), before dropping the old one.
"""

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from calendar_sync.fields import SecretField


def secret_fields(app_label="calendar_sync"):
    """{model: [names of its SecretFields]} for every model of the app that has one."""
    found = {}
    for model in apps.get_app_config(app_label).get_models():
        names = [field.name for field in model._meta.concrete_fields if isinstance(field, SecretField)]
        if names:
            found[model] = names
    return found


def rotate_keys(stdout=None) -> dict[str, int]:
    """Re-encrypt every secret with the current key; {model label: rows re-encrypted}.

    Each row is read (decrypted with whichever configured key works) and written back
    (encrypted with the current one) under a row lock, with a queryset update: no save(),
    so no signal fires and no auto_now date moves.
    """
    counts = {}
    for model, names in secret_fields().items():
        manager = model._base_manager
        count = 0
        for pk in list(manager.values_list("pk", flat=True)):
            with transaction.atomic():
                values = manager.select_for_update().filter(pk=pk).values(*names).first()
                if values is None:
                    continue  # deleted meanwhile
                values = {name: value for name, value in values.items() if value}  # empty: nothing to encrypt
                if values:
                    manager.filter(pk=pk).update(**values)
            count += 1
        counts[model._meta.label] = count
        if stdout is not None:
            stdout.write(f"{model._meta.label}: {', '.join(names)} of {count} row(s).")
    return counts


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        counts = rotate_keys(stdout=self.stdout)
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {sum(counts.values())} row(s)."))
