from django.apps import AppConfig


class CalendarSyncConfig(AppConfig):
    name = "calendar_sync"
    verbose_name = "Calendar sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks, receivers  # noqa: F401 - registers the system checks

        receivers.connect()
