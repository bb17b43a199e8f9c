"""The host's Celery app: `celery -A managehub worker` and `celery -A managehub beat`."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "managehub.settings")

app = Celery("managehub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
