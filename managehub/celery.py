"""The host's Celery app: `celery -A managehub worker` and `celery -A managehub beat`."""
import os
import time

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "managehub.settings")

app = Celery("managehub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# A connection that served a task this recently is known good: no health-check query before the next.
HEALTHY_WITHIN = 1.0  # seconds


@task_prerun.connect
def _before_task(task=None, **kwargs):
    """What Django does around each request, around each task: keep the connection (CONN_MAX_AGE),
    drop it when it broke or grew old. A new connection per task cost a sync ~1 ms CPU and 3 ms.
    CONN_HEALTH_CHECKS then checks a connection (a `SELECT 1`) before its next use; after an idle
    spell that catches a database restart, but between back-to-back tasks it cost a tenth of a
    sync's CPU, so a connection used within HEALTHY_WITHIN seconds skips it. Eager tasks run inside
    their caller's connection (and transaction): left alone."""
    if _eager(task):
        return
    from django.db import connections

    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        conn.close_if_unusable_or_obsolete()
        if conn.connection is not None and now - conn.__dict__.get("managehub_task_ended", 0) < HEALTHY_WITHIN:
            conn.health_check_done = True


@task_postrun.connect
def _after_task(task=None, **kwargs):
    if _eager(task):
        return
    from django.db import connections

    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        conn.close_if_unusable_or_obsolete()
        conn.managehub_task_ended = now


def _eager(task):
    return task is not None and getattr(task.request, "is_eager", False)
