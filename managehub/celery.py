"""The host's Celery app: `celery -A managehub worker` and `celery -A managehub beat`."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "managehub.settings")

app = Celery("managehub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **kwargs):
    """What Django does around each request, around each task: keep the connection (CONN_MAX_AGE,
    CONN_HEALTH_CHECKS), drop it when it broke or grew old. A new connection per task cost a sync
    ~1 ms of CPU and 3 ms. Eager tasks run inside their caller's connection (and transaction): left alone."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
